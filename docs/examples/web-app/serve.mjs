#!/usr/bin/env node
// The example app's own little web server (docs/web.md). It serves a fixed list of files and
// nothing else: the page (index.html, app.js), the mtls/web bundle (mtls-web.js and
// keystore-worker.js, from --bundle, default dist/web of this repository) and config.json, which it
// builds from its flags (or takes from --config FILE). Plain HTTP is fine on 127.0.0.1 and
// localhost, which browsers treat as secure contexts; anywhere else, put it behind HTTPS.
//
//   node docs/examples/web-app/serve.mjs --listen 127.0.0.1:8000 \
//     --ca-url https://localhost:8443 --ca-relay wss://127.0.0.1:9443/.mtls/relay/ca \
//     --api-url https://localhost:9000/hello --api-relay wss://127.0.0.1:9443/.mtls/relay/api \
//     --trust-anchor .mtls/ca/root.crt
//
// Prints "example app on http://HOST:PORT/" once it listens (port 0: any free port).
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const { values: flags } = parseArgs({
  options: {
    listen: { type: "string", default: "127.0.0.1:8000" },
    bundle: { type: "string", default: resolve(here, "../../../dist/web") },
    config: { type: "string" },
    "ca-url": { type: "string" },
    "ca-relay": { type: "string" },
    "api-url": { type: "string" },
    "api-relay": { type: "string" },
    "trust-anchor": { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});

if (flags.help) {
  console.log(
    "usage: serve.mjs [--listen HOST:PORT] [--bundle DIR] (--config FILE | --ca-url URL --ca-relay WSS " +
      "--api-url URL --api-relay WSS --trust-anchor ROOT.pem)",
  );
  process.exit(0);
}

function fail(message) {
  console.error(`serve.mjs: ${message}`);
  process.exit(2);
}

/** config.json: what app.js needs to find the CA and the API (see docs/web.md). */
function buildConfig() {
  if (flags.config) return JSON.parse(readFileSync(flags.config, "utf8"));
  const missing = ["ca-url", "ca-relay", "api-url", "api-relay", "trust-anchor"].filter((f) => !flags[f]);
  if (missing.length) fail(`missing ${missing.map((m) => `--${m}`).join(", ")} (or give --config FILE)`);
  return {
    caUrl: flags["ca-url"],
    caRelay: flags["ca-relay"],
    apiUrl: flags["api-url"],
    apiRelay: flags["api-relay"],
    trustAnchors: readFileSync(flags["trust-anchor"], "utf8"),
  };
}

const config = buildConfig();
for (const key of ["caUrl", "caRelay", "apiUrl", "apiRelay", "trustAnchors"]) {
  if (typeof config[key] !== "string" || config[key] === "") fail(`config.json needs "${key}"`);
}

const bundle = resolve(flags.bundle);
for (const f of ["mtls-web.js", "keystore-worker.js"]) {
  if (!existsSync(join(bundle, f))) fail(`${join(bundle, f)} is missing: build it with node scripts/build-web.mjs`);
}

const JS = "text/javascript; charset=utf-8";
/** Every path this server answers, and where it comes from. */
const files = {
  "/": [join(here, "index.html"), "text/html; charset=utf-8"],
  "/index.html": [join(here, "index.html"), "text/html; charset=utf-8"],
  "/app.js": [join(here, "app.js"), JS],
  "/mtls-web.js": [join(bundle, "mtls-web.js"), JS],
  "/keystore-worker.js": [join(bundle, "keystore-worker.js"), JS],
  "/mtls-web.js.map": [join(bundle, "mtls-web.js.map"), "application/json"],
  "/keystore-worker.js.map": [join(bundle, "keystore-worker.js.map"), "application/json"],
};

// The page may open WebSockets only to the relays, and run only its own scripts.
const relayOrigins = [...new Set([config.caRelay, config.apiRelay].map((u) => new URL(u).origin))];
const csp = [
  "default-src 'none'",
  "script-src 'self'",
  "worker-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  `connect-src 'self' ${relayOrigins.join(" ")}`,
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const server = createServer((req, res) => {
  const path = new URL(req.url ?? "/", "http://x").pathname;
  const headers = {
    "cache-control": "no-store",
    "content-security-policy": csp,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
  };
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { ...headers, allow: "GET, HEAD" }).end();
    return;
  }
  if (path === "/config.json") {
    res.writeHead(200, { ...headers, "content-type": "application/json" }).end(JSON.stringify(config));
    return;
  }
  const entry = files[path];
  if (!entry || !existsSync(entry[0])) {
    res.writeHead(404, { ...headers, "content-type": "text/plain" }).end("not found\n");
    return;
  }
  res.writeHead(200, { ...headers, "content-type": entry[1] }).end(readFileSync(entry[0]));
});

const m = /^(.*):(\d+)$/.exec(flags.listen);
if (!m) fail(`--listen ${flags.listen}: expected HOST:PORT`);
server.listen(Number(m[2]), m[1].replace(/^\[|\]$/g, ""), () => {
  const { address, port } = server.address();
  const host = address.includes(":") ? `[${address}]` : address;
  console.log(`example app on http://${host}:${port}/`);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.once(sig, () => server.close(() => process.exit(0)));
