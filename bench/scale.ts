/**
 * Scale-out benchmark (issue 7, "Performance"), `mtls ca serve` and `mtls tunnel server` as users run
 * them (the built CLI), PostgreSQL at 127.0.0.1:5432 (database `test`, one fresh schema per CA,
 * dropped at the end):
 *
 *   a. Enrollments per second over HTTPS: CONCURRENCY keep-alive clients (bench/lib/post-load.mjs, its
 *      own process) POST /v1/enroll {token, csr}, one single-use token and one CSR (its own P-256
 *      key) per enrollment, both made before the timed window, so the window times the service:
 *      request parsing, CSR and token checks, signing, the store transaction (certificate, used
 *      token, audit events) and the answer. Against: `mtls ca serve` on SQLite (one node, the
 *      reference), one node on PostgreSQL, two nodes on PostgreSQL (the clients split between them),
 *      and two nodes pinned to the same core (the same CPU as one node: what splitting costs).
 *   b. Time from revoke to connection dropped: REVOCATIONS client certificates each hold one connection
 *      open through `mtls tunnel server --revocation-feed https://<node B>` to a TCP echo target;
 *      the bench revokes them one at a time on node A (POST /v1/revoke with the admin certificate)
 *      and times from sending the request to the client's socket closing. In the same run: the
 *      same tunnel with `--crl http://<node B's public listener>/crl` only (no feed), bounded
 *      (CRL_REVOCATIONS revocations, CRL_BOUND_S each, started STAGGER_S apart), and a SQLite node
 *      with the feed for reference.
 *
 * Prints a markdown report and rewrites the `bench:scale` section of docs/benchmarks.md (only when
 * both parts ran with the default knobs).
 *
 *   npm run bench:scale              (builds first)
 *   BENCH_ONLY=enroll|revoke node --import tsx bench/scale.ts
 *
 * Knobs: BENCH_SECONDS (5), BENCH_WARMUP (1), BENCH_CONCURRENCY (16), BENCH_ENROLLMENTS (tokens per
 * setup, 5000), BENCH_REVOCATIONS (100), BENCH_CRL_REVOCATIONS (5), BENCH_CRL_BOUND (70 s),
 * BENCH_FEED_BOUND (10 s per revocation), BENCH_REVOKE_GAP_MS (250), BENCH_POSTGRES (postgres://127.0.0.1:5432/test),
 * BENCH_KEEP=1 (keep the temporary folder and the schemas), BENCH_MTLS_CLI (another build's
 * dist/cli/main.js). Needs taskset (util-linux).
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { createToken, initCa, openCa } from "../src/ca/index.js";
import { type StatePaths, statePaths } from "../src/config/state.js";
import { indexCrl } from "../src/pki/crl-index.js";
import { buildCsrPem } from "../src/pki/csr-builder.js";
import { normalizeSerial } from "../src/pki/index.js";
import { generateKeyPair } from "../src/pki/keys.js";
import { keyObjectSigner } from "../src/pki/signer.js";
import { postgresUnavailable, testSchemas } from "../test/fixtures/postgres.js";
import {
  busy,
  cpuPressure,
  cpuSecondsOf,
  fmt,
  freePorts,
  HOST,
  loadAverage,
  type Machine,
  machine,
  machineLine,
  type Proc,
  Procs,
  percentile,
  pidsNamed,
  sleep,
  tryRun,
  waitLog,
  waitPort,
  writeDoc,
} from "./lib/proc.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 1);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const ENROLLMENTS = Number(process.env.BENCH_ENROLLMENTS ?? 5000);
const REVOCATIONS = Number(process.env.BENCH_REVOCATIONS ?? 100);
const CRL_REVOCATIONS = Number(process.env.BENCH_CRL_REVOCATIONS ?? 5);
const CRL_BOUND_S = Number(process.env.BENCH_CRL_BOUND ?? 70);
const FEED_BOUND_S = Number(process.env.BENCH_FEED_BOUND ?? 10);
/** The no-feed revocations start this far apart, so they meet the tunnel's refetch timer at different phases. */
const STAGGER_S = 5;
/**
 * Pause between two revocations with the feed: each is then measured on its own. A tunnel's checker
 * re-checks open connections at most once per 100 ms for the feed (FEED_UPDATE_GAP_MS in
 * src/tls/revocation.ts), so revocations back to back would each wait out the previous one's gap.
 */
const REVOKE_GAP_MS = Number(process.env.BENCH_REVOKE_GAP_MS ?? 250);
/** Issue 7: open connections of a revoked peer dropped within 2 s. */
const GOAL_DROP_MS = 2000;
const PG_URL = process.env.BENCH_POSTGRES ?? "postgres://127.0.0.1:5432/test";
const ONLY = process.env.BENCH_ONLY;
const KEEP = process.env.BENCH_KEEP === "1";
const PASSPHRASE = "bench-passphrase-not-secret";
const ORG = "Bench Corp";
const ACTOR = "bench";
const LOAD_CPU = "1";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const docFile = join(root, "docs", "benchmarks.md");
const cli = resolve(process.env.BENCH_MTLS_CLI ?? join(root, "dist", "cli", "main.js"));
const loadScript = join(root, "bench", "lib", "post-load.mjs");

const began = performance.now();
const log = (msg: string) =>
  process.stderr.write(`bench:scale: [${((performance.now() - began) / 1000).toFixed(0)} s] ${msg}\n`);

// ---------------------------------------------------------------------------------------------
// CA nodes

interface CaDir {
  paths: StatePaths;
  /** The admin certificate (leaf + intermediate) and key that init issued, PEM. */
  admin: { cert: string; key: string };
  rootPem: string;
}

/** A new CA (`mtls init`, through the library) in `dir`, its records in SQLite or at `storeUrl`. */
async function newCa(dir: string, storeUrl: string | undefined): Promise<CaDir> {
  const paths = statePaths(dir, storeUrl);
  const res = await initCa({ paths, name: ORG, passphrase: PASSPHRASE, actor: ACTOR });
  const files = res.admin?.files;
  if (!files) throw new Error("initCa issued no admin certificate");
  return {
    paths,
    admin: { cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8") },
    rootPem: readFileSync(paths.rootCert, "utf8"),
  };
}

/** Another node of the same CA: a copy of the state directory's ca/ folder, the same store. */
function copyNode(from: CaDir, dir: string): CaDir {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  cpSync(join(from.paths.dir, "ca"), join(dir, "ca"), { recursive: true });
  return { ...from, paths: statePaths(dir, from.paths.storeUrl) };
}

interface Node {
  name: string;
  proc: Proc;
  apiUrl: string;
  publicUrl: string;
}

/** `mtls ca serve` from the built CLI, default logging (to its log file), rate limit off. */
async function startNode(procs: Procs, name: string, ca: CaDir, cpus: string | undefined): Promise<Node> {
  const [api, pub] = (await freePorts(2)) as [number, number];
  const proc = procs.start(
    name,
    process.execPath,
    [
      cli,
      "ca",
      "serve",
      "--state",
      ca.paths.dir,
      ...(ca.paths.storeUrl ? ["--store", ca.paths.storeUrl] : []),
      "--listen",
      `${HOST}:${api}`,
      "--public-listen",
      `${HOST}:${pub}`,
      "--rate-limit",
      "0",
    ],
    { cpus, env: { MTLS_PASSPHRASE: PASSPHRASE, MTLS_STORE: undefined } },
  );
  await waitLog(proc, /CA service listening/, 30_000);
  await waitPort(proc, api);
  return { name, proc, apiUrl: `https://${HOST}:${api}`, publicUrl: `http://${HOST}:${pub}` };
}

/** The CPU seconds of every PostgreSQL server process on this machine (backends of other users included). */
const postgresCpu = (): number => cpuSecondsOf(pidsNamed("postgres"));

// ---------------------------------------------------------------------------------------------
// a. enrollments per second

interface EnrollSetup {
  label: string;
  store: "sqlite" | "postgres";
  /** One entry per node: the CPUs it is pinned to. */
  nodes: string[];
  /** The load generator's CPUs (undefined: not pinned). */
  load: string | undefined;
}

const ENROLL_SETUPS: EnrollSetup[] = [
  { label: "SQLite, 1 node", store: "sqlite", nodes: ["0"], load: LOAD_CPU },
  { label: "PostgreSQL, 1 node", store: "postgres", nodes: ["0"], load: LOAD_CPU },
  { label: "PostgreSQL, 2 nodes", store: "postgres", nodes: ["0", "1"], load: undefined },
  { label: "PostgreSQL, 2 nodes on one core", store: "postgres", nodes: ["0", "0"], load: LOAD_CPU },
];

interface EnrollResult {
  setup: EnrollSetup;
  ok: number;
  bad: number;
  errors: number;
  perSec: number;
  p50: number;
  p99: number;
  /** Node CPU (all nodes) per enrollment in the window, ms. */
  nodeCpuMs: number;
  /** Each node's share of the CPU in the window (cores). */
  nodeCores: number[];
  /** PostgreSQL server CPU per enrollment in the window, ms (undefined for SQLite). */
  pgCpuMs: number | undefined;
  loadCores: number;
  perNode: number[];
  exhausted: boolean;
  firstError: string | undefined;
}

interface LoadEvent {
  event: "start" | "stop" | "result";
  ok: number;
  bad: number;
  errors: number;
  seconds: number;
  perSec: number;
  perUrl: number[];
  latencies: number[];
  loadCores: number;
  exhausted: boolean;
  firstError?: string;
}

/** One P-256 key and CSR per enrollment, shared by every setup (CN enroll-i, as the token's name). */
async function makeCsrs(n: number): Promise<string[]> {
  log(`making ${n} keys and CSRs`);
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    out.push(
      await buildCsrPem(
        { subject: { commonName: `enroll-${i}` } },
        keyObjectSigner(generateKeyPair("ec-p256").privateKey),
      ),
    );
  }
  return out;
}

/**
 * Single-use tokens for enroll-0..n-1, created through the library on the node's store: 32 at a time
 * on SQLite (group commit shares the fsyncs), one at a time on PostgreSQL (every transaction takes
 * the writer lock; queued callers only add lock waits: store.md measured 1 client faster than 16).
 */
async function makeTokens(ca: CaDir, n: number): Promise<string[]> {
  const opened = await openCa(ca.paths, { env: { MTLS_PASSPHRASE: PASSPHRASE } });
  const batch = ca.paths.storeUrl ? 1 : 32;
  try {
    const tokens: string[] = new Array(n);
    for (let i = 0; i < n; i += batch) {
      await Promise.all(
        Array.from({ length: Math.min(batch, n - i) }, async (_, j) => {
          const { token } = await createToken(
            opened,
            { name: `enroll-${i + j}`, profile: "client", sans: [] },
            { actor: ACTOR, validForMs: 3_600_000 },
          );
          tokens[i + j] = token;
        }),
      );
    }
    return tokens;
  } finally {
    await opened.store.close();
  }
}

async function runLoad(
  procs: Procs,
  dir: string,
  name: string,
  spec: object,
  cpus: string | undefined,
  onEvent: (e: LoadEvent) => void,
): Promise<LoadEvent> {
  const specFile = join(dir, `${name}.json`);
  writeFileSync(specFile, JSON.stringify(spec));
  const p = procs.start(name, process.execPath, [loadScript, specFile], { cpus });
  let seen = 0;
  let result: LoadEvent | undefined;
  // Its events as they come: the server CPU is read at "start" and "stop", not after the process ends.
  while (p.alive || seen < p.log().length) {
    const text = p.log();
    const lines = text.slice(seen).split("\n");
    const complete = lines.slice(0, -1);
    seen += complete.reduce((n, l) => n + l.length + 1, 0);
    for (const line of complete) {
      if (!line.startsWith("{")) continue;
      const e = JSON.parse(line) as LoadEvent;
      onEvent(e);
      if (e.event === "result") result = e;
    }
    if (!p.alive && complete.length === 0) break;
    await sleep(5);
  }
  const code = await p.exited;
  if (code !== 0 || !result) throw new Error(`the load generator exited ${code}:\n${p.tail()}`);
  return result;
}

async function enrollBench(procs: Procs, dir: string, pgUrl: () => Promise<string>): Promise<EnrollResult[]> {
  const csrs = await makeCsrs(ENROLLMENTS);
  const results: EnrollResult[] = [];
  for (const [k, setup] of ENROLL_SETUPS.entries()) {
    const base = join(dir, `enroll-${k}`);
    log(`${setup.label}: creating the CA and ${ENROLLMENTS} tokens`);
    const ca = await newCa(join(base, "a"), setup.store === "postgres" ? await pgUrl() : undefined);
    const tokens = await makeTokens(ca, ENROLLMENTS);
    const cas = [ca, ...setup.nodes.slice(1).map((_, i) => copyNode(ca, join(base, `n${i + 1}`)))];
    const nodes = await Promise.all(
      setup.nodes.map((cpus, i) => startNode(procs, `enroll-${k}-node${i}`, cas[i] as CaDir, cpus)),
    );
    try {
      await sleep(500);
      log(`${setup.label}: ${CONCURRENCY} clients for ${SECONDS} s after ${WARMUP} s`);
      const bodies = tokens.map((token, i) =>
        Buffer.from(JSON.stringify({ token, csr: csrs[i] })).toString("base64"),
      );
      let cpu0: number[] = [];
      let pg0 = 0;
      let t0 = 0;
      let cpu1: number[] = [];
      let pg1 = 0;
      let wall = 0;
      const load = await runLoad(
        procs,
        base,
        `enroll-${k}-load`,
        {
          urls: nodes.map((n) => `${n.apiUrl}/v1/enroll`),
          concurrency: CONCURRENCY,
          seconds: SECONDS,
          warmup: WARMUP,
          contentType: "application/json",
          bodies,
          once: true,
          expectStatus: 201,
          caPem: ca.rootPem,
        },
        setup.load,
        (e) => {
          if (e.event === "start") {
            cpu0 = nodes.map((n) => n.proc.cpuSeconds());
            pg0 = postgresCpu();
            t0 = performance.now();
          } else if (e.event === "stop") {
            cpu1 = nodes.map((n) => n.proc.cpuSeconds());
            pg1 = postgresCpu();
            wall = (performance.now() - t0) / 1000;
          }
        },
      );
      const nodeCpu = cpu1.map((c, i) => c - (cpu0[i] ?? 0));
      const total = nodeCpu.reduce((a, b) => a + b, 0);
      const r: EnrollResult = {
        setup,
        ok: load.ok,
        bad: load.bad,
        errors: load.errors,
        perSec: load.perSec,
        p50: percentile(load.latencies, 0.5),
        p99: percentile(load.latencies, 0.99),
        // Per enrollment: undefined (NaN, shown as "–") when none completed in the window.
        nodeCpuMs: (total / load.ok) * 1000,
        nodeCores: nodeCpu.map((c) => c / Math.max(wall, 1e-9)),
        pgCpuMs: setup.store === "postgres" ? ((pg1 - pg0) / load.ok) * 1000 : undefined,
        loadCores: load.loadCores,
        perNode: load.perUrl,
        exhausted: load.exhausted,
        firstError: load.firstError,
      };
      if (r.bad || r.errors) log(`${setup.label}: ${r.bad} bad, ${r.errors} failed (${r.firstError ?? ""})`);
      if (r.exhausted) log(`${setup.label}: the tokens ran out before the window ended (BENCH_ENROLLMENTS)`);
      log(
        `${setup.label}: ${fmt(r.perSec)}/s, p50 ${fmt(r.p50, 1)} ms, p99 ${fmt(r.p99, 1)} ms, ${fmt(r.nodeCpuMs, 2)} ms node CPU each`,
      );
      results.push(r);
    } finally {
      await Promise.all(nodes.map((n) => n.proc.stop()));
    }
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// b. revoke to connection dropped

interface Client {
  serial: string;
  socket: tls.TLSSocket;
  /** performance.now() when the socket closed. */
  closedAt: number | undefined;
  closed: Promise<number>;
}

/** A TCP echo server in this process: the tunnels' target. */
async function echoServer(): Promise<net.Server> {
  const s = net.createServer((c) => {
    c.on("error", () => {});
    c.pipe(c);
  });
  s.listen(0, HOST);
  await new Promise((r) => s.once("listening", r));
  return s;
}

interface TunnelFiles {
  cert: string;
  key: string;
  ca: string;
}

interface Issued {
  serial: string;
  certPem: string;
  keyPem: string;
}

/** Client certificates (and the tunnel's server certificate) issued through the library on the node's store. */
async function issueCerts(
  ca: CaDir,
  dir: string,
  clients: number,
): Promise<{ tunnel: TunnelFiles; clients: Issued[] }> {
  const opened = await openCa(ca.paths, { env: { MTLS_PASSPHRASE: PASSPHRASE } });
  try {
    const server = await opened.issue({
      profile: "server",
      name: "tunnel",
      sans: [
        { type: "dns", value: "localhost" },
        { type: "ip", value: HOST },
      ],
      actor: ACTOR,
    });
    mkdirSync(dir, { recursive: true });
    const tunnel = { cert: join(dir, "tunnel.crt"), key: join(dir, "tunnel.key"), ca: join(dir, "root.crt") };
    writeFileSync(tunnel.cert, server.chainPem);
    writeFileSync(tunnel.key, server.privateKey?.export({ type: "pkcs8", format: "pem" }) as string, {
      mode: 0o600,
    });
    writeFileSync(tunnel.ca, ca.rootPem);
    const out: Issued[] = [];
    for (let i = 0; i < clients; i++) {
      const c = await opened.issue({ profile: "client", name: `peer-${i}`, sans: [], actor: ACTOR });
      out.push({
        serial: c.record.serial,
        certPem: c.chainPem,
        keyPem: c.privateKey?.export({ type: "pkcs8", format: "pem" }) as string,
      });
    }
    return { tunnel, clients: out };
  } finally {
    await opened.store.close();
  }
}

/** `mtls tunnel server` in front of the echo target, with the given revocation flags. */
async function startTunnel(
  procs: Procs,
  name: string,
  files: TunnelFiles,
  target: number,
  revocation: string[],
): Promise<{ proc: Proc; port: number }> {
  const [port, status] = (await freePorts(2)) as [number, number];
  const proc = procs.start(name, process.execPath, [
    cli,
    "tunnel",
    "server",
    "--listen",
    `${HOST}:${port}`,
    "--target",
    `${HOST}:${target}`,
    "--cert",
    files.cert,
    "--key",
    files.key,
    "--ca",
    files.ca,
    "--allow-all",
    "--status",
    `${HOST}:${status}`,
    ...revocation,
  ]);
  await waitPort(proc, port, 30_000);
  return { proc, port };
}

/** One client connection through the tunnel, proven to reach the echo target before it counts. */
async function connectClient(port: number, ca: string, c: Issued): Promise<Client> {
  const socket = tls.connect({
    host: HOST,
    port,
    servername: "localhost",
    cert: c.certPem,
    key: c.keyPem,
    ca,
  });
  socket.setNoDelay(true);
  socket.on("error", () => {});
  const client: Client = {
    serial: c.serial,
    socket,
    closedAt: undefined,
    closed: new Promise((r) =>
      socket.once("close", () => {
        client.closedAt = performance.now();
        r(client.closedAt);
      }),
    ),
  };
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(
      () => rej(new Error(`peer ${c.serial}: no echo through the tunnel in 10 s`)),
      10_000,
    );
    socket.once("secureConnect", () => socket.write("ping\n"));
    socket.once("data", () => {
      clearTimeout(timer);
      res();
    });
    socket.once("close", () => {
      clearTimeout(timer);
      rej(new Error(`peer ${c.serial}: the tunnel closed the connection before the echo`));
    });
  });
  return client;
}

async function connectAll(port: number, ca: string, certs: Issued[]): Promise<Client[]> {
  const out: Client[] = [];
  // A few at a time: a burst of 100 handshakes is not what is measured here.
  for (let i = 0; i < certs.length; i += 10) {
    out.push(...(await Promise.all(certs.slice(i, i + 10).map((c) => connectClient(port, ca, c)))));
  }
  return out;
}

/** POST /v1/revoke over one kept-alive HTTPS connection with the admin certificate. */
function revoker(node: Node, ca: CaDir) {
  const agent = new https.Agent({
    keepAlive: true,
    maxSockets: 1,
    cert: ca.admin.cert,
    key: ca.admin.key,
    ca: ca.rootPem,
  });
  const call = (method: string, path: string, body?: object) =>
    new Promise<{ status: number; text: string }>((res, rej) => {
      const data = body ? Buffer.from(JSON.stringify(body)) : undefined;
      const req = https.request(
        `${node.apiUrl}${path}`,
        {
          method,
          agent,
          headers: data ? { "content-type": "application/json", "content-length": data.length } : {},
        },
        (r) => {
          const chunks: Buffer[] = [];
          r.on("data", (c: Buffer) => chunks.push(c));
          r.on("end", () => res({ status: r.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
        },
      );
      req.setTimeout(10_000, () => req.destroy(new Error(`${path}: no answer in 10 s`)));
      req.on("error", rej);
      req.end(data);
    });
  return {
    /** A first request, so the handshake is not in the first revocation's time. */
    warm: async () => {
      const r = await call("GET", "/v1/ca");
      if (r.status !== 200) throw new Error(`GET /v1/ca as admin: HTTP ${r.status} ${r.text.slice(0, 200)}`);
    },
    revoke: async (serial: string) => {
      const r = await call("POST", "/v1/revoke", { serial, reason: "keyCompromise" });
      if (r.status !== 200) throw new Error(`revoke ${serial}: HTTP ${r.status} ${r.text.slice(0, 200)}`);
    },
    close: () => agent.destroy(),
  };
}

interface RevokeResult {
  label: string;
  feed: boolean;
  revocations: number;
  boundS: number;
  /** ms from sending the revoke to the socket closing, for those that closed within the bound. */
  drops: number[];
  /** ms of the revoke request itself. */
  requests: number[];
  /** Connections of certificates not revoked (yet) that closed during the run. */
  collateral: number;
  /** A new connection with a revoked certificate: refused? */
  refusedAfter: boolean | undefined;
  /** No-feed only: how many of the revoked serials node B's /crl listed when the bound ended. */
  listedByB?: number;
  note?: string;
}

/** Does a new connection with this certificate get through to the echo target? */
async function getsThrough(port: number, ca: string, c: Issued): Promise<boolean> {
  try {
    const client = await connectClient(port, ca, c);
    client.socket.destroy();
    return true;
  } catch {
    return false;
  }
}

/** Revokes on `on` one certificate at a time, timing each until its connection closes (or the bound). */
async function feedRun(
  label: string,
  on: Node,
  ca: CaDir,
  port: number,
  certs: Issued[],
  files: TunnelFiles,
): Promise<RevokeResult> {
  const caPem = ca.rootPem;
  const clients = await connectAll(port, caPem, certs);
  const r = revoker(on, ca);
  await r.warm();
  const drops: number[] = [];
  const requests: number[] = [];
  const done = new Set<string>();
  let collateral = 0;
  try {
    log(`${label}: ${clients.length} connections open; revoking one at a time`);
    for (const c of clients) {
      const t0 = performance.now();
      const req = r.revoke(c.serial).then(() => requests.push(performance.now() - t0));
      const closed = await Promise.race([c.closed, sleep(FEED_BOUND_S * 1000).then(() => undefined)]);
      await req;
      if (closed !== undefined) drops.push(closed - t0);
      done.add(c.serial);
      // Nothing else may have gone with it.
      collateral = clients.filter((x) => !done.has(x.serial) && x.closedAt !== undefined).length;
      await sleep(REVOKE_GAP_MS);
    }
    const refusedAfter = !(await getsThrough(port, files.ca, certs[0] as Issued));
    return {
      label,
      feed: true,
      revocations: clients.length,
      boundS: FEED_BOUND_S,
      drops,
      requests,
      collateral,
      refusedAfter,
    };
  } finally {
    for (const c of clients) c.socket.destroy();
    r.close();
  }
}

/**
 * Without the feed: CRL_REVOCATIONS revocations started STAGGER_S apart, each waited for up to
 * CRL_BOUND_S; then whether node B's /crl lists them at all by then.
 */
async function crlRun(
  label: string,
  on: Node,
  b: Node,
  ca: CaDir,
  port: number,
  certs: Issued[],
): Promise<RevokeResult> {
  const clients = await connectAll(port, ca.rootPem, certs);
  const r = revoker(on, ca);
  await r.warm();
  const requests: number[] = [];
  try {
    log(
      `${label}: ${clients.length} revocations ${STAGGER_S} s apart, waiting up to ${CRL_BOUND_S} s each (about ${(clients.length - 1) * STAGGER_S + CRL_BOUND_S} s)`,
    );
    const drops = await Promise.all(
      clients.map(async (c, i) => {
        await sleep(i * STAGGER_S * 1000);
        const t0 = performance.now();
        await r.revoke(c.serial);
        requests.push(performance.now() - t0);
        const closed = await Promise.race([c.closed, sleep(CRL_BOUND_S * 1000).then(() => undefined)]);
        return closed === undefined ? undefined : closed - t0;
      }),
    );
    const crl = await fetch(`${b.publicUrl}/crl`);
    const listed = indexCrl(new Uint8Array(await crl.arrayBuffer())).entries;
    const listedByB = clients.filter((c) => listed.has(normalizeSerial(c.serial))).length;
    return {
      label,
      feed: false,
      revocations: clients.length,
      boundS: CRL_BOUND_S,
      drops: drops.filter((d): d is number => d !== undefined),
      requests,
      collateral: 0,
      refusedAfter: undefined,
      listedByB,
    };
  } finally {
    for (const c of clients) c.socket.destroy();
    r.close();
  }
}

async function revokeBench(procs: Procs, dir: string, pgUrl: () => Promise<string>): Promise<RevokeResult[]> {
  const echo = await echoServer();
  const target = (echo.address() as net.AddressInfo).port;
  const results: RevokeResult[] = [];
  try {
    // Two PostgreSQL nodes: revoke on A, the tunnels listen to B.
    const base = join(dir, "revoke-pg");
    const a = await newCa(join(base, "a"), await pgUrl());
    const bDir = copyNode(a, join(base, "b"));
    const { tunnel, clients } = await issueCerts(a, join(base, "files"), REVOCATIONS + CRL_REVOCATIONS);
    const [nodeA, nodeB] = await Promise.all([
      startNode(procs, "revoke-pg-a", a, "0"),
      startNode(procs, "revoke-pg-b", bDir, "1"),
    ]);
    // Both tunnels start now, so the one without the feed has run for a while (its CRL timer at some
    // phase, as in a fleet) when its revocations come.
    const feedTunnel = await startTunnel(procs, "tunnel-feed-pg", tunnel, target, [
      "--revocation-feed",
      nodeB.apiUrl,
    ]);
    const crlTunnel = await startTunnel(procs, "tunnel-crl-pg", tunnel, target, [
      "--crl",
      `${nodeB.publicUrl}/crl`,
    ]);
    results.push(
      await feedRun(
        "PostgreSQL, 2 nodes: revoke on A, tunnel fed by B",
        nodeA,
        a,
        feedTunnel.port,
        clients.slice(0, REVOCATIONS),
        tunnel,
      ),
    );
    await feedTunnel.proc.stop();
    results.push(
      await crlRun(
        "PostgreSQL, 2 nodes: revoke on A, tunnel with B's CRL only",
        nodeA,
        nodeB,
        a,
        crlTunnel.port,
        clients.slice(REVOCATIONS),
      ),
    );
    await Promise.all([crlTunnel.proc.stop(), nodeA.proc.stop(), nodeB.proc.stop()]);

    // The reference: one SQLite node, the tunnel fed by it.
    const sBase = join(dir, "revoke-sqlite");
    const s = await newCa(join(sBase, "a"), undefined);
    const sCerts = await issueCerts(s, join(sBase, "files"), REVOCATIONS);
    const sNode = await startNode(procs, "revoke-sqlite", s, "0");
    const sTunnel = await startTunnel(procs, "tunnel-feed-sqlite", sCerts.tunnel, target, [
      "--revocation-feed",
      sNode.apiUrl,
    ]);
    results.push(
      await feedRun(
        "SQLite, 1 node: tunnel fed by it",
        sNode,
        s,
        sTunnel.port,
        sCerts.clients,
        sCerts.tunnel,
      ),
    );
    await Promise.all([sTunnel.proc.stop(), sNode.proc.stop()]);
  } finally {
    echo.close();
  }
  return results;
}

// ---------------------------------------------------------------------------------------------
// report

function report(
  m: Machine,
  end: string,
  enroll: EnrollResult[] | undefined,
  revoke: RevokeResult[] | undefined,
) {
  const pgVersion = tryRun("psql", ["-XAtc", "show server_version", PG_URL]).split("\n")[0] || "?";
  const lines = [
    machineLine(m, `; PostgreSQL ${pgVersion} on the same machine (127.0.0.1:5432, not pinned)`),
    `Load average ${m.load} at the start${m.cpuPressure ? `, CPU pressure (PSI some avg60) ${m.cpuPressure}%` : ""}; at the end ${end}.`,
    ...(busy(m)
      ? [
          "**Provisional**: other work was running on the machine (see the load and CPU pressure); rerun",
          "`npm run bench:scale` on an idle machine.",
        ]
      : []),
    "",
  ];
  if (enroll?.length) {
    const ref = enroll.find((r) => r.setup.store === "sqlite");
    const x = (v: number, r: number | undefined) => (r ? `${fmt(v / r, 2)}×` : "–");
    lines.push(
      `**Enrollments per second over HTTPS**: ${CONCURRENCY} concurrent keep-alive clients (bench/lib/post-load.mjs, one`,
      "process) POST `/v1/enroll {token, csr}`, each with its own single-use token and P-256 CSR made before the",
      `timed window (so the window times the service, not the clients' key generation): ${SECONDS} s after a ${WARMUP} s`,
      "warm-up, one run per setup. Each enrollment checks the CSR and the token, signs, and commits the certificate,",
      "the used token and the audit events in one transaction. With two nodes the clients are split evenly between",
      "them (no load balancer in between).",
      "",
      "| Setup | nodes pinned to | Enrollments / s | ÷ SQLite | p50 / p99 latency | node CPU per enrollment | ÷ SQLite | PostgreSQL CPU per enrollment | node cores busy | not 201 |",
      "|---|---|---:|---:|---|---:|---:|---:|---|---:|",
    );
    for (const r of enroll) {
      lines.push(
        `| ${r.setup.label} | ${r.setup.nodes.map((c) => `CPU ${c}`).join(", ")} | ${fmt(r.perSec)} | ${r === ref ? "1" : `**${x(r.perSec, ref?.perSec)}**`} | ${fmt(r.p50, 1)} / ${fmt(r.p99, 1)} ms | ${fmt(r.nodeCpuMs, 2)} ms | ${r === ref ? "1" : x(r.nodeCpuMs, ref?.nodeCpuMs)} | ${r.pgCpuMs === undefined ? "–" : `${fmt(r.pgCpuMs, 2)} ms`} | ${r.nodeCores.map((c) => c.toFixed(2)).join(" + ")} | ${r.bad + r.errors}${r.firstError && r.bad + r.errors ? ` (${r.firstError.slice(0, 60)})` : ""} |`,
      );
    }
    const two = enroll.find((r) => r.setup.nodes.length === 2 && new Set(r.setup.nodes).size === 2);
    lines.push(
      "",
      "Pinning (2 shared cores): a node pinned with `taskset -c`; the load generator on CPU 1 when the nodes are on",
      "CPU 0, unpinned when two nodes take one core each; PostgreSQL is the system's service and is never pinned, so",
      "it takes its CPU wherever the scheduler puts it (its column: utime+stime of every `postgres` process over the",
      "window, other users' backends included). Node CPU: utime+stime of the node processes over the timed window ÷",
      'enrollments in it. "2 nodes on one core" gives the two nodes the CPU one node had: what splitting costs.',
      ...(two
        ? [
            `With two nodes on two cores the clients of each node got ${two.perNode.map((n) => fmt(n)).join(" / ")} enrollments in the window.`,
          ]
        : []),
      ...(enroll.some((r) => r.exhausted)
        ? [
            "Some setup used every token before its window ended (the rate is over the shorter window): raise BENCH_ENROLLMENTS.",
          ]
        : []),
      "",
    );
  }
  if (revoke?.length) {
    lines.push(
      `**Revoke to connection dropped**: client certificates each hold one TLS connection open through`,
      "`mtls tunnel server` (the built CLI, `--allow-all`) to a TCP echo target (each connection proven by an echo",
      "before it counts); the bench revokes them one at a time with `POST /v1/revoke` (admin certificate, one",
      "kept-alive HTTPS connection) and times from sending the request to the client seeing its socket close.",
      `With the feed, each revocation waits for its drop (bound ${FEED_BOUND_S} s) and ${REVOKE_GAP_MS} ms more before the next (a tunnel`,
      "re-checks its connections at most every 100 ms for the feed, so back-to-back revocations measured ~100 ms each:",
      "that is the coalescing of a burst, not the path of one revocation). Without the feed, the",
      `revocations start ${STAGGER_S} s apart and each is waited for up to ${CRL_BOUND_S} s. Nodes: A on CPU 0, B on CPU 1;`,
      "tunnels and clients not pinned.",
      "",
      "| Setup | revocations | dropped within the bound | p50 | p99 | slowest | revoke request p50 | other connections dropped | new connection with a revoked certificate |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    );
    for (const r of revoke) {
      const d = [...r.drops].sort((p, q) => p - q);
      const q = [...r.requests].sort((p, q2) => p - q2);
      const ms = (v: number) => (Number.isFinite(v) ? `${fmt(v, v < 100 ? 1 : 0)} ms` : "–");
      lines.push(
        `| ${r.label} | ${r.revocations} | ${d.length} of ${r.revocations} (bound ${r.boundS} s) | ${ms(percentile(d, 0.5))} | ${ms(percentile(d, 0.99))} | ${ms(d.at(-1) ?? Number.NaN)} | ${ms(percentile(q, 0.5))} | ${r.feed ? r.collateral : "–"} | ${r.refusedAfter === undefined ? "–" : r.refusedAfter ? "refused" : "**let through**"} |`,
      );
    }
    const fed = revoke.filter((r) => r.feed);
    const within = (r: RevokeResult) =>
      r.drops.length === r.revocations &&
      percentile(
        [...r.drops].sort((p, q) => p - q),
        0.99,
      ) <= GOAL_DROP_MS;
    lines.push(
      "",
      `Goal (issue 7): a revoked peer's open connections dropped within ${GOAL_DROP_MS / 1000} s of the revocation, p99 over ${REVOCATIONS} revocations: ${fed.map((r) => `${r.label.split(":")[0]}: ${within(r) ? "**met**" : "**not met**"}`).join("; ")}.`,
      "The revoke request's own time (the node's transaction, and the CRL it re-signs) is part of every figure.",
    );
    const crl = revoke.find((r) => !r.feed);
    if (crl) {
      lines.push(
        "",
        `Without the feed: ${crl.drops.length} of ${crl.revocations} connections dropped within ${crl.boundS} s; when the bound ended, node B's`,
        `\`/crl\` listed ${crl.listedByB} of the ${crl.revocations} revoked serials${crl.listedByB === crl.revocations ? " (so the CRL was ready; what held the drop back was the tunnel's schedule)" : ""}. A tunnel refetches a CRL URL at`,
        "the CRL's nextUpdate (7 days for mtls's CRLs) but at least every 5 minutes (src/tls/revocation.ts `crlMaxAgeMs`),",
        "and not more often than every 30 s (`refreshFloorMs`): without the feed a revocation reaches open connections",
        "up to about 5 minutes later, depending on where the tunnel's refetch timer stands.",
      );
    }
    lines.push("");
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: npm run build`);
  if (!tryRun("sh", ["-c", "command -v taskset"])) throw new Error("taskset (util-linux) is needed");
  const why = await postgresUnavailable(PG_URL);
  if (why) throw new Error(`PostgreSQL at ${PG_URL} is unreachable (${why})`);
  const m = machine(root);
  const dir = mkdtempSync(join(tmpdir(), "mtls-bench-scale-"));
  const procs = new Procs(dir);
  const schemas = testSchemas("mtls_bench_scale", PG_URL);
  const pgUrl = () => schemas.create();
  let section = "";
  try {
    const enroll = ONLY === "revoke" ? undefined : await enrollBench(procs, dir, pgUrl);
    const revoke = ONLY === "enroll" ? undefined : await revokeBench(procs, dir, pgUrl);
    const psi = cpuPressure();
    const end = `${loadAverage()}${psi ? `, CPU pressure ${psi}%` : ""}`;
    section = report(m, end, enroll, revoke);
  } finally {
    await procs.stopAll();
    if (KEEP) log(`kept ${dir} and the schemas`);
    else {
      await schemas.dropAll();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  process.stdout.write(`${section}\n`);
  const defaults =
    !ONLY &&
    ![
      "BENCH_SECONDS",
      "BENCH_WARMUP",
      "BENCH_CONCURRENCY",
      "BENCH_REVOCATIONS",
      "BENCH_CRL_BOUND",
      "BENCH_REVOKE_GAP_MS",
    ].some((k) => process.env[k]);
  if (defaults) {
    writeDoc({
      file: docFile,
      name: "scale",
      intro: [
        "## Several CA nodes on PostgreSQL, and revocation pushed to tunnels",
        "",
        "`npm run bench:scale` (bench/scale.ts): enrollments per second over HTTPS against `mtls ca serve` on SQLite",
        "(one node), on PostgreSQL (one node, two nodes), and the time from a revocation on one node to the revoked",
        "peer's open connection being dropped by a tunnel that follows another node's revocation feed, next to the",
        "same tunnel with the CRL only (issue 7). See docs/scale-out.md for the deployment this models.",
        "",
      ].join("\n"),
      body: section,
    });
    log(`wrote ${docFile}`);
  }
}

await main();
