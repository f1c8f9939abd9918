import type { Socket } from "node:net";
import { MtlsError } from "../errors.js";
import { type Address, formatAddress } from "./address.js";
import { ConnectError, connectWithTimeout } from "./net-util.js";

/** The most a proxy may send before the end of its response head. */
const MAX_HEAD_BYTES = 16 * 1024;

/** Checks an HTTP proxy URL ("http://[user:pass@]host:port") and returns its address. */
export function parseProxyUrl(text: string): { url: URL; address: Address } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new MtlsError("E_USAGE", `invalid --proxy "${text}" (expected http://host:port)`);
  }
  if (url.protocol !== "http:") {
    throw new MtlsError("E_USAGE", `--proxy ${text}: only http:// proxies (HTTP CONNECT) are supported`);
  }
  if (!url.hostname) throw new MtlsError("E_USAGE", `--proxy ${text}: no host`);
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  return { url, address: { kind: "tcp", host, port: Number(url.port || 80) } };
}

/**
 * Opens a tunnel through an HTTP proxy: TCP to the proxy, `CONNECT host:port`, and a 200 answer.
 * Resolves with the socket positioned at the first byte from the target (bytes the proxy sent
 * after its response head are pushed back into the socket).
 */
export async function connectViaHttpProxy(proxy: URL, target: Address, timeoutMs: number): Promise<Socket> {
  if (target.kind !== "tcp") throw new MtlsError("E_USAGE", "an HTTP proxy can only reach a TCP target");
  const { address } = parseProxyUrl(proxy.href);
  const started = Date.now();
  const socket = await connectWithTimeout(address, timeoutMs);
  const authority = formatAddress(target);
  const auth =
    proxy.username || proxy.password
      ? `Proxy-Authorization: Basic ${Buffer.from(
          `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`,
        ).toString("base64")}\r\n`
      : "";
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`);
  return new Promise<Socket>((resolve, reject) => {
    let head = Buffer.alloc(0);
    const fail = (reason: "target_timeout" | "target_unreachable", why: string) => {
      cleanup();
      socket.destroy();
      reject(
        new ConnectError(reason, `proxy ${address.kind === "tcp" ? formatAddress(address) : ""}: ${why}`),
      );
    };
    const timer = setTimeout(
      () => fail("target_timeout", `no answer to CONNECT ${authority} within ${timeoutMs} ms`),
      Math.max(1, timeoutMs - (Date.now() - started)),
    );
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > MAX_HEAD_BYTES) fail("target_unreachable", "response head too long");
        return;
      }
      const statusLine = head.subarray(0, head.indexOf("\r\n")).toString("latin1");
      const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
      if (!m)
        return fail("target_unreachable", `not an HTTP answer: ${JSON.stringify(statusLine.slice(0, 80))}`);
      if (m[1] !== "200")
        return fail("target_unreachable", `CONNECT ${authority} answered ${m[1]} ${m[2] ?? ""}`.trim());
      cleanup();
      socket.pause();
      const rest = head.subarray(end + 4);
      if (rest.length) socket.unshift(rest);
      resolve(socket);
    };
    const onEnd = () =>
      fail("target_unreachable", `closed the connection before answering CONNECT ${authority}`);
    const onError = (err: NodeJS.ErrnoException) => fail("target_unreachable", err.code ?? err.message);
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("error", onError);
    };
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("error", onError);
  });
}
