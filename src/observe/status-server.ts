import { createServer, type Server } from "node:http";
import type { AddressInfo, ListenOptions } from "node:net";
import type { Registry } from "prom-client";
import { MtlsError } from "../errors.js";

export interface Readiness {
  ok: boolean;
  detail: string;
}

export interface StatusServerOptions {
  /** Where to listen: `{ host, port }` or `{ path }` (a Unix socket). */
  listen: ListenOptions;
  registry: Registry;
  /** Called for every /readyz; a rejection counts as not ready. */
  ready: () => Promise<Readiness>;
  /** How long /readyz may take before it answers 503 (default 5 s). */
  readyTimeoutMs?: number;
}

export interface StatusServer {
  /** The bound address (`{ address, port }`, or the socket path). */
  readonly address: AddressInfo | string;
  close(): Promise<void>;
}

/**
 * The status endpoint of a long-running process:
 *   GET /healthz → 200 "ok" while the process runs;
 *   GET /readyz  → 200 or 503 with the readiness detail;
 *   GET /metrics → Prometheus text from the registry;
 *   anything else → 404.
 */
export async function startStatusServer(opts: StatusServerOptions): Promise<StatusServer> {
  const readyTimeout = opts.readyTimeoutMs ?? 5000;
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (status: number, body: string, type = "text/plain; charset=utf-8") => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(404, "not found\n");
    if (path === "/healthz") return send(200, "ok\n");
    if (path === "/readyz") {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<Readiness>((resolve) => {
        timer = setTimeout(() => resolve({ ok: false, detail: "readiness check timed out" }), readyTimeout);
      });
      Promise.race([opts.ready(), timeout])
        .catch((err: unknown) => ({ ok: false, detail: (err as Error)?.message ?? String(err) }))
        .then((r) => {
          clearTimeout(timer);
          send(r.ok ? 200 : 503, `${r.detail}\n`);
        });
      return;
    }
    if (path === "/metrics") {
      opts.registry
        .metrics()
        .then((text) => send(200, text, opts.registry.contentType))
        .catch((err: unknown) => send(500, `metrics failed: ${(err as Error).message}\n`));
      return;
    }
    send(404, "not found\n");
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(
        new MtlsError(
          "E_IO",
          `cannot listen for --status on ${describe(opts.listen)}: ${err.code === "EADDRINUSE" ? "address already in use" : err.message}`,
          { cause: err },
        ),
      );
    };
    server.once("error", onError);
    server.listen(opts.listen, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const address = server.address() as AddressInfo | string;
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function describe(l: ListenOptions): string {
  if (l.path) return `unix:${l.path}`;
  const host = l.host ?? "";
  return `${host.includes(":") ? `[${host}]` : host}:${l.port ?? 0}`;
}
