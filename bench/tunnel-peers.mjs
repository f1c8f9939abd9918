// Helper processes for bench/tunnel.ts, plain JavaScript so they start without tsx:
//
//   node bench/tunnel-peers.mjs echo PORT [PORT...]
//       a TCP echo server on each 127.0.0.1:PORT (the target behind every tunnel server).
//   node bench/tunnel-peers.mjs naive-server LISTEN TARGET CERT KEY CA
//   node bench/tunnel-peers.mjs naive-client LISTEN TARGET CERT KEY CA SERVERNAME
//       the smallest mTLS tunnel Node can make: tls.createServer / tls.connect with
//       rejectUnauthorized: true and two stream.pipe() calls, no policy, no logs, no metrics,
//       the client keeping the last TLS 1.3 session ticket. It shows what Node itself costs, so
//       the rest of mtls's numbers can be told apart from it.
//
// Each prints "ready" on stdout once listening.
import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";

const [mode, ...args] = process.argv.slice(2);
const HOST = "127.0.0.1";

function listening() {
  process.stdout.write("ready\n");
}

/** Both sockets go when either ends or fails (the naive pair does not carry half-closes). */
function joinSockets(a, b) {
  const done = () => {
    a.destroy();
    b.destroy();
  };
  a.on("error", done).on("close", done);
  b.on("error", done).on("close", done);
  a.pipe(b);
  b.pipe(a);
}

if (mode === "echo") {
  let pending = args.length;
  for (const port of args) {
    net
      .createServer({ noDelay: true }, (s) => {
        s.on("error", () => s.destroy());
        s.pipe(s);
      })
      .listen(Number(port), HOST, () => {
        if (--pending === 0) listening();
      });
  }
} else if (mode === "naive-server") {
  const [listen, target, cert, key, ca] = args;
  const server = tls.createServer(
    {
      cert: readFileSync(cert),
      key: readFileSync(key),
      ca: readFileSync(ca),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.3",
      noDelay: true,
    },
    (socket) => joinSockets(socket, net.connect({ host: HOST, port: Number(target), noDelay: true })),
  );
  server.on("tlsClientError", () => undefined);
  server.listen(Number(listen), HOST, listening);
} else if (mode === "naive-client") {
  const [listen, target, cert, key, ca, servername] = args;
  const secureContext = tls.createSecureContext({
    cert: readFileSync(cert),
    key: readFileSync(key),
    ca: readFileSync(ca),
  });
  let session;
  net
    .createServer({ noDelay: true }, (plain) => {
      const socket = tls.connect({
        host: HOST,
        port: Number(target),
        secureContext,
        servername,
        minVersion: "TLSv1.3",
        ...(session ? { session } : {}),
      });
      socket.on("session", (t) => {
        session = t;
      });
      socket.setNoDelay(true);
      joinSockets(plain, socket);
    })
    .listen(Number(listen), HOST, listening);
} else {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
