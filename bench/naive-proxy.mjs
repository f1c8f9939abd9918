#!/usr/bin/env node
// The smallest mTLS reverse proxy Node makes, for bench/gateway.ts: https.createServer with
// requestCert and rejectUnauthorized, http.request to the upstream over a keep-alive Agent, the
// client certificate in a Client-Cert header, two pipe() calls; no routing, policy, header
// filtering, logs or metrics. It shows what Node's own HTTP and TLS stack costs per request, so the
// rest of the gateway's cost can be told apart from it. With WORKERS > 1, node:cluster workers
// share the socket (round-robin, as mtls gateway --workers does).
//
//   node bench/naive-proxy.mjs PORT UPSTREAM_PORT CERT KEY CA [WORKERS]
import cluster from "node:cluster";
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";

const [port, upstream, cert, key, ca, workersArg] = process.argv.slice(2);
const workers = Number(workersArg ?? 1);

if (workers > 1 && cluster.isPrimary) {
  cluster.schedulingPolicy = cluster.SCHED_RR;
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on("SIGTERM", () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.kill();
    process.exit(0);
  });
} else {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  const server = https.createServer(
    {
      cert: readFileSync(cert),
      key: readFileSync(key),
      ca: readFileSync(ca),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.3",
    },
    (req, res) => {
      const headers = { ...req.headers };
      delete headers.connection;
      headers["client-cert"] = `:${req.socket.getPeerCertificate().raw.toString("base64")}:`;
      const up = http.request(
        { host: "127.0.0.1", port: Number(upstream), path: req.url, method: req.method, headers, agent },
        (upRes) => {
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          upRes.pipe(res);
        },
      );
      up.on("error", () => res.destroy());
      req.pipe(up);
    },
  );
  server.keepAliveTimeout = 60_000;
  server.listen(Number(port), "127.0.0.1");
}
