import { connect, type Server, type Socket } from "node:net";
import { MtlsError } from "../errors.js";
import { type Address, connectOptions, formatAddress, listenOptions } from "./address.js";

/** Listens and resolves with the address bound (port 0 replaced by the real port). */
export async function listenOn(server: Server, addr: Address, what: string): Promise<Address> {
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const why =
        err.code === "EADDRINUSE"
          ? "address already in use"
          : err.code === "EACCES"
            ? "permission denied"
            : err.code === "EADDRNOTAVAIL"
              ? "no such local address"
              : err.message;
      reject(
        new MtlsError("E_IO", `cannot listen on ${formatAddress(addr)} (${what}): ${why}`, { cause: err }),
      );
    };
    server.once("error", onError);
    server.listen(listenOptions(addr), () => {
      server.off("error", onError);
      resolve();
    });
  });
  const bound = server.address();
  if (bound && typeof bound === "object") return { kind: "tcp", host: bound.address, port: bound.port };
  return addr;
}

export class ConnectError extends Error {
  constructor(
    readonly reason: "target_timeout" | "target_unreachable",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Opens a TCP or Unix connection with a deadline; half-open allowed, Nagle off. */
export function connectWithTimeout(addr: Address, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ ...connectOptions(addr), allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new ConnectError("target_timeout", `no connection to ${formatAddress(addr)} within ${timeoutMs} ms`),
      );
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.setKeepAlive(true, 60_000);
      socket.off("error", onError);
      resolve(socket);
    });
    const onError = (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      reject(
        new ConnectError(
          "target_unreachable",
          `cannot connect to ${formatAddress(addr)}: ${err.code ?? err.message}`,
          {
            cause: err,
          },
        ),
      );
    };
    socket.once("error", onError);
  });
}

/** Can we open a connection to `addr` right now? For /readyz. */
export async function probe(addr: Address, timeoutMs: number): Promise<{ ok: boolean; detail: string }> {
  try {
    const s = await connectWithTimeout(addr, timeoutMs);
    s.destroy();
    return { ok: true, detail: `${formatAddress(addr)} accepts connections` };
  } catch (err) {
    return { ok: false, detail: (err as Error).message };
  }
}
