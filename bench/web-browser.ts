/**
 * The browser part of the mtls/web benchmark (bench/web.ts, part "browser"; issue 9): the
 * TypeScript TLS 1.3 client running in Chromium through the gateway's WebSocket relay, next to
 * Chromium's own TLS, against the same server and upstream:
 *
 *   - `mtls gateway` "server" (the built CLI, HTTP/1.1 only: `--no-http2`, since mtls/web speaks
 *     HTTP/1.1) with a route `/` (mode require) and `/open` (mode none) to one upstream (node:http
 *     in this process: a 64-byte JSON answer, and N bytes on demand);
 *   - `mtls gateway` "relay": `--relay gw=<the server gateway>`; the page's TLS ends in the very
 *     server the browser's own TLS reaches, so the paths differ only by the client side (TS TLS +
 *     relay hop vs Chromium). The relay is a gateway of its own because Chromium cancels a WebSocket
 *     whose TLS server asks for a client certificate (docs/web.md);
 *   - (a) "TS client": createMtlsClient in the page, key in the key store worker, certificate
 *     issued by the CA for the page's CSR (`mtls sign`), route `/` (mTLS);
 *   - (b) "Chromium, no client certificate": the page's own fetch() to route `/open`: Chromium's
 *     TLS stack end to end, server authentication only (the fastest the browser can do);
 *   - (c) "Chromium + client certificate": fetch() to route `/` in a context with Playwright's
 *     `clientCertificates`. Playwright presents the certificate from a local proxy in Node (the
 *     browser's TLS ends in that proxy, which opens its own mTLS connection to the gateway), so
 *     this path carries two TLS legs: the figure a Playwright test sees, not a browser with an OS
 *     certificate store.
 *
 * Measured in the page (performance.now()): "new connection + first response" (TS: a new client
 * each time, i.e. a new WebSocket to the relay and a full TLS 1.3 handshake with the client
 * certificate; Chromium: a second server gateway, the same but closing idle connections after 1 s,
 * and the page waits 1.6 s between samples, so each fetch opens a new connection, which Chromium may
 * resume; checked with the Resource Timing entry), median and p95; BENCH_WEB_REQUESTS sequential requests on one kept-alive connection
 * (requests per second); and a BENCH_WEB_MB download (MB/s, the median of BENCH_WEB_RUNS).
 *
 * Knobs: BENCH_WEB_HANDSHAKES (default 30), BENCH_WEB_REQUESTS (default 200), BENCH_WEB_MB (default
 * 32), BENCH_WEB_RUNS (downloads per path, default 3), BENCH_KEEP=1 (keep the temporary folder).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { CHROMIUM, startBrowser, trustRootInNss } from "../test/e2e/browser.js";
import { busy, fmt, freePorts, machine, Procs, percentile, waitLog } from "./lib/proc.js";

export const HANDSHAKES = Number(process.env.BENCH_WEB_HANDSHAKES ?? 30);
export const REQUESTS = Number(process.env.BENCH_WEB_REQUESTS ?? 200);
export const MB = Number(process.env.BENCH_WEB_MB ?? 32);
export const RUNS = Number(process.env.BENCH_WEB_RUNS ?? 3);
/** True when every knob of this part is at its default (the doc is written only then). */
export const BROWSER_DEFAULTS = ["HANDSHAKES", "REQUESTS", "MB", "RUNS"].every(
  (k) => process.env[`BENCH_WEB_${k}`] === undefined,
);
const KEEP = process.env.BENCH_KEEP === "1";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const CLI = join(root, "dist", "cli", "main.js");
const BUNDLE = join(root, "dist", "web");

/** Runs `mtls ARGS` in `cwd`; returns stdout, throws with stderr when it fails. */
function mtls(cwd: string, args: string[]): string {
  try {
    return execFileSync(process.execPath, [CLI, ...args], {
      cwd,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, MTLS_STATE: undefined, MTLS_PASSPHRASE: undefined, MTLS_STORE: undefined },
    });
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`mtls ${args.join(" ")} failed: ${e.stderr ?? String(err)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// the upstream and the page's server

/** 64 KiB of bytes, sent again and again for /bytes. */
const CHUNK = Buffer.alloc(64 * 1024, 0x61);

function startUpstream(pageOrigin: string): Promise<Server> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    const headers = {
      "cache-control": "no-store",
      "access-control-allow-origin": pageOrigin,
      "access-control-allow-credentials": "true",
      "timing-allow-origin": pageOrigin,
    };
    if (url.pathname.endsWith("/bytes")) {
      let left = Number(url.searchParams.get("n") ?? 0);
      res.writeHead(200, { ...headers, "content-type": "application/octet-stream", "content-length": left });
      const pump = () => {
        while (left > 0) {
          const n = Math.min(left, CHUNK.length);
          left -= n;
          if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
            res.once("drain", pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    const body = `{"ok":true,"service":"bench","padding":"${"x".repeat(22)}"}`; // 64 bytes
    res.writeHead(200, { ...headers, "content-type": "application/json", "content-length": body.length });
    res.end(body);
  });
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r(server)));
}

/**
 * What the page runs (served as /bench.js): window.bench with one function per measurement. Plain
 * JavaScript, so nothing of this file's TypeScript build leaks into the browser.
 */
const BENCH_JS = `
import * as web from "/mtls-web.js";
const now = () => performance.now();
let keyStore, keyId, identity, config;

async function drain(res) {
  const reader = res.body.getReader();
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return n;
    n += value.byteLength;
  }
}

window.bench = {
  async makeKey() {
    keyStore = web.KeyStoreClient.connect(new Worker("/keystore-worker.js", { type: "module" }));
    const key = await keyStore.generate("bench");
    keyId = key.keyId;
    const csr = await web.buildCsr({ commonName: "bench-ts", spki: key.spki, sign: (d) => keyStore.sign(keyId, d) });
    return csr.pem;
  },
  async setCertificate(pem, cfg) {
    config = cfg;
    await keyStore.setCertificate(keyId, web.certificatesFromPem(pem));
    identity = await keyStore.identity(keyId);
  },
  client() {
    return web.createMtlsClient({ relay: config.relay, trustAnchors: config.root, identity });
  },
  async tsHandshakes(n) {
    const out = [];
    for (let i = 0; i < n; i++) {
      const t0 = now();
      const client = this.client();
      const res = await client.fetch(config.tsUrl + "/small");
      const got = await drain(res);
      out.push(now() - t0);
      if (res.status !== 200 || got !== 64) throw new Error("TS: HTTP " + res.status + ", " + got + " bytes");
      await client.close();
    }
    return out;
  },
  async tsSequential(n) {
    const client = this.client();
    await drain(await client.fetch(config.tsUrl + "/small"));
    const t0 = now();
    for (let i = 0; i < n; i++) {
      const res = await client.fetch(config.tsUrl + "/small");
      if ((await drain(res)) !== 64) throw new Error("TS: short answer");
    }
    const ms = now() - t0;
    await client.close();
    return ms;
  },
  async tsDownload(bytes) {
    const client = this.client();
    await drain(await client.fetch(config.tsUrl + "/small"));
    const t0 = now();
    const got = await drain(await client.fetch(config.tsUrl + "/bytes?n=" + bytes));
    const ms = now() - t0;
    await client.close();
    if (got !== bytes) throw new Error("TS: got " + got + " of " + bytes + " bytes");
    return ms;
  },
  async nativeHandshakes(url, n, pauseMs) {
    const out = [];
    let reused = 0;
    const protocols = new Set();
    for (let i = 0; i < n; i++) {
      // The server closes idle connections after 1 s: after the pause, the fetch needs a new one.
      await new Promise((r) => setTimeout(r, pauseMs));
      performance.clearResourceTimings();
      const t0 = now();
      const res = await fetch(url + "/small?i=" + i, { credentials: "include", cache: "no-store" });
      const got = await drain(res);
      const ms = now() - t0;
      if (res.status !== 200 || got !== 64) throw new Error("native: HTTP " + res.status + ", " + got + " bytes");
      const entry = performance.getEntriesByType("resource").find((e) => e.name.startsWith(url));
      // A sample that found a connection still open measures no handshake: left out, counted.
      if (entry && !(entry.connectEnd > entry.connectStart)) reused++;
      else out.push(ms);
      if (entry?.nextHopProtocol) protocols.add(entry.nextHopProtocol);
    }
    return { ms: out, reused, protocols: [...protocols] };
  },
  async nativeSequential(url, n) {
    await drain(await fetch(url + "/small", { credentials: "include", cache: "no-store" }));
    const t0 = now();
    for (let i = 0; i < n; i++) {
      const res = await fetch(url + "/small", { credentials: "include", cache: "no-store" });
      if ((await drain(res)) !== 64) throw new Error("native: short answer");
    }
    return now() - t0;
  },
  async nativeDownload(url, bytes) {
    await drain(await fetch(url + "/small", { credentials: "include", cache: "no-store" }));
    const t0 = now();
    const got = await drain(await fetch(url + "/bytes?n=" + bytes, { credentials: "include", cache: "no-store" }));
    const ms = now() - t0;
    if (got !== bytes) throw new Error("native: got " + got + " of " + bytes + " bytes");
    return ms;
  },
};
window.benchReady = true;
`;

function startPageServer(port: number): Promise<Server> {
  const files: Record<string, string> = {
    "/mtls-web.js": join(BUNDLE, "mtls-web.js"),
    "/keystore-worker.js": join(BUNDLE, "keystore-worker.js"),
  };
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const send = (type: string, body: string | Buffer) =>
      res.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(body);
    const file = files[path];
    if (path === "/") {
      send(
        "text/html",
        '<!doctype html><title>mtls/web bench</title><link rel="icon" href="data:,"><script type="module" src="/bench.js"></script>',
      );
    } else if (path === "/bench.js") send("text/javascript", BENCH_JS);
    else if (file) send("text/javascript", readFileSync(file));
    else res.writeHead(404).end();
  });
  return new Promise((r) => server.listen(port, "127.0.0.1", () => r(server)));
}

// ---------------------------------------------------------------------------------------------
// the run

interface PathResult {
  handshakes: number[];
  /** Requests per second, sequential on one connection. */
  rps: number;
  /** MB/s (10^6 bytes), median of the runs. */
  mbps: number;
  notes: string[];
}

const median = (xs: number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    0.5,
  );
const p95 = (xs: number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    0.95,
  );

async function openPage(context: BrowserContext, origin: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`${origin}/`, { timeout: 15_000 });
  await page.waitForFunction(
    () => (window as unknown as { benchReady?: boolean }).benchReady === true,
    undefined,
    { timeout: 15_000 },
  );
  return page;
}

type BenchWindow = { bench: Record<string, (...args: unknown[]) => Promise<unknown>> };
const call = <T>(page: Page, fn: string, ...args: unknown[]): Promise<T> =>
  page.evaluate(([f, a]) => (window as unknown as BenchWindow).bench[f as string]?.(...(a as unknown[])), [
    fn,
    args,
  ] as const) as Promise<T>;

async function nativePath(
  browser: Browser,
  origin: string,
  url: string,
  handshakeUrl: string,
  contextOptions: Parameters<Browser["newContext"]>[0],
): Promise<PathResult> {
  const context = await browser.newContext(contextOptions);
  try {
    const page = await openPage(context, origin);
    // One request first, so the page, its CORS state and the certificate checks are warm.
    await call<number>(page, "nativeSequential", handshakeUrl, 1);
    const hs = await call<{ ms: number[]; reused: number; protocols: string[] }>(
      page,
      "nativeHandshakes",
      handshakeUrl,
      HANDSHAKES,
      1_600,
    );
    const seqMs = await call<number>(page, "nativeSequential", url, REQUESTS);
    const downloads: number[] = [];
    for (let i = 0; i < RUNS; i++)
      downloads.push(await call<number>(page, "nativeDownload", url, MB * 1_000_000));
    return {
      handshakes: hs.ms,
      rps: REQUESTS / (seqMs / 1000),
      mbps: median(downloads.map((ms) => MB / (ms / 1000))),
      notes: [
        `${hs.protocols.join(", ") || "protocol not reported"}, ${hs.ms.length} samples on a new connection${hs.reused ? ` (${hs.reused} more found the old one still open and were left out)` : ""}`,
      ],
    };
  } finally {
    await context.close();
  }
}

/** Runs the browser part and returns its markdown (a `###` section). */
export async function browserPart(): Promise<string> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is needed (Debian's chromium)`);
  for (const f of ["mtls-web.js", "keystore-worker.js"])
    if (!existsSync(join(BUNDLE, f))) throw new Error(`dist/web/${f} is missing: npm run build`);
  const dir = mkdtempSync(join(tmpdir(), "mtls-bench-web-"));
  const procs = new Procs(dir);
  const closers: Array<() => Promise<unknown>> = [];
  try {
    mtls(dir, ["init", "--name", "Acme Web Bench"]);
    const rootPem = join(dir, ".mtls", "ca", "root.crt");
    mtls(dir, ["issue", "server", "gateway", "--dns", "localhost", "--ip", "127.0.0.1", "--out", "certs"]);
    const issued = JSON.parse(
      mtls(dir, [
        "issue",
        "client",
        "native",
        "--uri",
        "spiffe://acme.test/bench/native",
        "--out",
        "certs",
        "--p12",
        "--json",
      ]),
    ) as { p12Password: string };

    const [gwPort, hsPort, relayPort, pagePort] = (await freePorts(4)) as [number, number, number, number];
    const pageOrigin = `http://127.0.0.1:${pagePort}`;
    const upstream = await startUpstream(pageOrigin);
    closers.push(() => new Promise((r) => upstream.close(r)));
    const up = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const pageServer = await startPageServer(pagePort);
    closers.push(() => new Promise((r) => pageServer.close(r)));

    const gatewayArgs = (port: number) => [
      "gateway",
      "--listen",
      `127.0.0.1:${port}`,
      "--cert",
      join(dir, "certs", "gateway.crt"),
      "--key",
      join(dir, "certs", "gateway.key"),
      "--ca",
      rootPem,
      "--no-http2",
      "--log-level",
      "warn",
    ];
    // The mTLS server all paths end in: client certificates required on /, none on /open.
    const serverRoutes = [
      "--route",
      `/=${up};mode=require`,
      "--route",
      `/open=${up}/open;mode=none`,
      "--allow-all",
    ];
    const gw = procs.start("gateway", process.execPath, [CLI, ...gatewayArgs(gwPort), ...serverRoutes]);
    // The same server for Chromium's handshake samples only: idle connections closed after 1 s, so a
    // fetch after a longer pause needs a new connection. (Not for the TS client: it keeps a connection
    // only while the server's Keep-Alive timeout leaves it a second of margin, so with 1 s it would
    // never reuse one.)
    const hs = procs.start("gateway-1s", process.execPath, [
      CLI,
      ...gatewayArgs(hsPort),
      ...serverRoutes,
      "--keepalive-timeout",
      "1s",
    ]);
    // The relay, a gateway of its own (no route that asks for a client certificate).
    const relay = procs.start("relay", process.execPath, [
      CLI,
      ...gatewayArgs(relayPort),
      "--route",
      `/=${up};mode=none`,
      "--relay",
      `gw=127.0.0.1:${gwPort}`,
      "--relay-origin",
      pageOrigin,
    ]);
    await waitLog(gw, /gateway listening on/);
    await waitLog(hs, /gateway listening on/);
    await waitLog(relay, /gateway listening on/);

    const home = join(dir, "home");
    await trustRootInNss(home, rootPem, "Acme Web Bench Root");
    const started = await startBrowser(home, rootPem);
    closers.push(() => started.stop());
    const browser = started.browser;
    closers.push(() => browser.close().catch(() => undefined));
    const m = machine(root);

    // (a) the TS client: a key in the worker, a certificate for its CSR, then the measurements.
    const tsContext = await browser.newContext();
    const page = await openPage(tsContext, pageOrigin);
    writeFileSync(join(dir, "ts.csr"), await call<string>(page, "makeKey"));
    mtls(dir, [
      "sign",
      "ts.csr",
      "--profile",
      "client",
      "--name",
      "bench-ts",
      "--uri",
      "spiffe://acme.test/bench/ts",
      "--out",
      "certs",
    ]);
    await call(page, "setCertificate", readFileSync(join(dir, "certs", "bench-ts.crt"), "utf8"), {
      relay: `wss://127.0.0.1:${relayPort}/.mtls/relay/gw`,
      root: readFileSync(rootPem, "utf8"),
      tsUrl: `https://localhost:${gwPort}`,
    });
    process.stderr.write("bench: web browser: TS client via the relay\n");
    const tsHandshakes = await call<number[]>(page, "tsHandshakes", HANDSHAKES);
    const tsSeq = await call<number>(page, "tsSequential", REQUESTS);
    const tsDownloads: number[] = [];
    for (let i = 0; i < RUNS; i++) tsDownloads.push(await call<number>(page, "tsDownload", MB * 1_000_000));
    await tsContext.close();
    const ts: PathResult = {
      handshakes: tsHandshakes,
      rps: REQUESTS / (tsSeq / 1000),
      mbps: median(tsDownloads.map((ms) => MB / (ms / 1000))),
      notes: [],
    };

    const gwOrigin = `https://127.0.0.1:${gwPort}`;
    const hsOrigin = `https://127.0.0.1:${hsPort}`;
    process.stderr.write("bench: web browser: Chromium, no client certificate\n");
    const open = await nativePath(browser, pageOrigin, `${gwOrigin}/open`, `${hsOrigin}/open`, {});
    process.stderr.write("bench: web browser: Chromium + client certificate (Playwright)\n");
    const pfx = { pfxPath: join(dir, "certs", "native.p12"), passphrase: issued.p12Password };
    const withCert = await nativePath(browser, pageOrigin, gwOrigin, hsOrigin, {
      clientCertificates: [
        { origin: gwOrigin, ...pfx },
        { origin: hsOrigin, ...pfx },
      ],
    });
    return report(m, machine(root), ts, open, withCert, browserVersion());
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    await procs.stopAll();
    if (!KEEP) rmSync(dir, { recursive: true, force: true });
    else process.stderr.write(`kept ${dir}\n`);
  }
}

function report(
  m: ReturnType<typeof machine>,
  mEnd: ReturnType<typeof machine>,
  ts: PathResult,
  open: PathResult,
  withCert: PathResult,
  chromium: string,
): string {
  const ratio = (a: number, b: number) => `${fmt(a / b, 2)}x`;
  const row = (what: string, f: (p: PathResult) => number, digits: number) => {
    const [a, b, c] = [f(ts), f(open), f(withCert)];
    return `| ${what} | ${fmt(a, digits)} | ${fmt(b, digits)} | ${fmt(c, digits)} | ${ratio(a, b)} | ${ratio(a, c)} |`;
  };
  return [
    "### In Chromium: the TS client through the relay vs the browser's own TLS",
    "",
    `${chromium}, headless; load average ${m.load} when this part started (CPU pressure ${m.cpuPressure || "n/a"}%), ${mEnd.load} at its end (${mEnd.cpuPressure || "n/a"}%).${busy(m) || busy(mEnd) ? " **Provisional**: the machine was busy; rerun on an idle one." : ""}`,
    "Both ends of every path run in `mtls gateway` (built CLI, HTTP/1.1); the TS client reaches it through a",
    "second gateway's relay (see bench/web-browser.ts).",
    "",
    "| | TS client via relay (mTLS) | Chromium TLS, no client certificate | Chromium + client certificate (Playwright proxy) | TS / Chromium | TS / Chromium + cert |",
    "|---|---:|---:|---:|---:|---:|",
    row("new connection + first response, median (ms)", (p) => median(p.handshakes), 1),
    row("new connection + first response, p95 (ms)", (p) => p95(p.handshakes), 1),
    row(`${REQUESTS} sequential requests on one connection (req/s)`, (p) => p.rps, 0),
    row(`${MB} MB download (MB/s, median of ${RUNS})`, (p) => p.mbps, 1),
    "",
    `- ${HANDSHAKES} handshakes per path. Chromium without a certificate: ${open.notes.join("; ")}; with one: ${withCert.notes.join("; ")}.`,
    "- TS: each handshake opens a new WebSocket to the relay (Chromium's TLS to the relay gateway, which it may",
    "  resume) and then a full TLS 1.3 handshake with the client certificate (the TS client has no session",
    "  resumption); the key store worker signs the CertificateVerify. Chromium: the same page after a pause",
    "  longer than the server's keep-alive timeout, so a new connection, with the TLS session resumption",
    "  Chromium does by itself.",
    "- Everything on one machine: Chromium, both gateways, the upstream and this script share the cores.",
  ].join("\n");
}

function browserVersion(): string {
  try {
    return execFileSync(CHROMIUM, ["--version"], { encoding: "utf8" }).trim();
  } catch {
    return "Chromium (version unknown)";
  }
}
