/**
 * Gateway benchmark (issue 5, "Performance"): `mtls gateway` as users run it (the built CLI) next to
 * nginx configured the same way (`ssl_verify_client on`, `proxy_pass` to the same upstream over a
 * keep-alive pool, the client certificate passed upstream in a header), in one run, on 127.0.0.1,
 * TLS 1.3 and the same ECDSA P-256 certificates (made at run time by test/fixtures/pki.ts):
 *
 *   - requests per second and p50/p99 latency for a small answer (BENCH_CONCURRENCY keep-alive
 *     connections), and throughput for a 1 MiB answer (BENCH_BIG_CONCURRENCY connections);
 *   - "one core": one gateway process and one nginx worker, each pinned to CPU 0 with taskset, the
 *     load generator and the upstream pinned to CPU 1;
 *   - "two cores": `mtls gateway --workers 2` next to `worker_processes 2`, nothing pinned (proxy,
 *     load generator and upstream then share both cores).
 *
 * The upstream is a separate nginx answering a fixed 64-byte body and a 1 MiB file, so that it is
 * not the bottleneck; the load generator is bench/https-load.mjs in its own process (keep-alive
 * HTTP/1.1 over tls.connect, presenting the client certificate). The proxies take turns, BENCH_ROUNDS
 * times, and the median round of each is reported, so other work on a shared machine does not decide
 * the ratio. Prints a markdown report and rewrites the `bench:gateway` section of docs/benchmarks.md.
 *
 *   npm run bench:gateway           (builds first)
 *   BENCH_SECONDS=2 BENCH_ROUNDS=1 node --import tsx bench/gateway.ts    (a quick look; doc left alone)
 *
 * Knobs: BENCH_SECONDS (each timed run, default 5), BENCH_WARMUP (default 1), BENCH_ROUNDS (default
 * 3), BENCH_CONCURRENCY (connections for the small answer, default 32), BENCH_BIG_CONCURRENCY (for
 * 1 MiB, default 4), BENCH_LAYOUTS (one,two), BENCH_POLICIES (cluster scheduling of the two-core
 * gateway: rr, none or rr,none; default rr, what mtls picks), BENCH_GATEWAY_LOG_LEVEL (default info: one audit line
 * per request, as nginx's access log), BENCH_KEEP=1 (keep the temporary folder), BENCH_MTLS_CLI
 * (another build's dist/cli/main.js). The doc is written only with the defaults for layouts, rounds
 * and seconds.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { makeSan } from "../src/pki/names.js";
import { createTestPki } from "../test/fixtures/pki.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 1);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const BIG_CONCURRENCY = Number(process.env.BENCH_BIG_CONCURRENCY ?? 4);
const LAYOUTS = (process.env.BENCH_LAYOUTS ?? "one,two").split(",").map((s) => s.trim());
const POLICIES = (process.env.BENCH_POLICIES ?? "rr").split(",").map((s) => s.trim());
const LOG_LEVEL = process.env.BENCH_GATEWAY_LOG_LEVEL ?? "info";
const KEEP = process.env.BENCH_KEEP === "1";
const GOALS = { rps: 0.8, p99: 2 };
const HOST = "127.0.0.1";
const SERVER_NAME = "localhost";
const ALLOW = "spiffe://bench.test/user/*";
const SMALL_BODY = "0123456789abcdef".repeat(4);
const BIG_BYTES = 1024 * 1024;

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const docFile = join(root, "docs", "benchmarks.md");
const cli = resolve(process.env.BENCH_MTLS_CLI ?? join(root, "dist", "cli", "main.js"));
const loadScript = join(root, "bench", "https-load.mjs");
const naiveScript = join(root, "bench", "naive-proxy.mjs");
const NAIVE = process.env.BENCH_NAIVE !== "0";
const START = "<!-- bench:gateway:start -->";
const END = "<!-- bench:gateway:end -->";

const log = (msg: string) => process.stderr.write(`bench:gateway: ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (n: number, digits = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
    : "–";
const median = <T>(xs: T[], key: (x: T) => number): T =>
  [...xs].sort((a, b) => key(a) - key(b))[Math.floor(xs.length / 2)] as T;

// ---------------------------------------------------------------------------------------------
// the machine and processes

function tryRun(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ""}${e.stderr ?? ""}`.trim();
  }
}

const cpuPressure = () =>
  existsSync("/proc/pressure/cpu")
    ? (/some avg10=\S+ avg60=(\S+)/.exec(readFileSync("/proc/pressure/cpu", "utf8"))?.[1] ?? "")
    : "";

function machine() {
  const cpuinfo = existsSync("/proc/cpuinfo") ? readFileSync("/proc/cpuinfo", "utf8") : "";
  const head = tryRun("git", ["-C", root, "rev-parse", "--short", "HEAD"]);
  const dirty = tryRun("git", ["-C", root, "status", "--porcelain", "src"])
    .split("\n")
    .filter(Boolean).length;
  return {
    nproc: tryRun("nproc", []) || String(availableParallelism()),
    model: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    kernel: tryRun("uname", ["-r"]),
    node: process.version,
    nodeOpenssl: process.versions.openssl,
    nginx: tryRun("sh", ["-c", "nginx -v 2>&1"]).replace(/^nginx version: nginx\//, ""),
    code: dirty ? `${head} with ${dirty} uncommitted file(s) in src/` : head,
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    load: loadavg()
      .map((l) => l.toFixed(2))
      .join(" "),
    cpuPressure: cpuPressure(),
  };
}

const CLK_TCK = Number(tryRun("getconf", ["CLK_TCK"])) || 100;

function readStat(pid: number): { ppid: number; ticks: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
  } catch {
    return undefined;
  }
}

class Proc {
  readonly exited: Promise<number | null>;
  private code: number | null | undefined;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly logFile: string,
  ) {
    this.exited = new Promise((r) =>
      child.once("exit", (code) => {
        this.code = code;
        r(code);
      }),
    );
  }

  get alive(): boolean {
    return this.code === undefined;
  }

  /** The process and its descendants (nginx's and the gateway's workers). */
  pids(): number[] {
    const byParent = new Map<number, number[]>();
    for (const e of readdirSync("/proc")) {
      if (!/^\d+$/.test(e)) continue;
      const st = readStat(Number(e));
      if (!st) continue;
      byParent.set(st.ppid, [...(byParent.get(st.ppid) ?? []), Number(e)]);
    }
    const out: number[] = [];
    const walk = (pid: number) => {
      out.push(pid);
      for (const c of byParent.get(pid) ?? []) walk(c);
    };
    walk(this.child.pid as number);
    return out;
  }

  cpuSeconds(): number {
    return this.pids().reduce((sum, p) => sum + (readStat(p)?.ticks ?? 0), 0) / CLK_TCK;
  }

  tail(): string {
    try {
      return readFileSync(this.logFile, "utf8").split("\n").slice(-10).join("\n");
    } catch {
      return "";
    }
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

const procs: Proc[] = [];

/** Starts `cmd` (pinned to `cpus` with taskset when given), its output to DIR/NAME.log. */
function start(
  dir: string,
  name: string,
  cpus: string | undefined,
  cmd: string,
  args: string[],
  env = {},
): Proc {
  const logFile = join(dir, `${name}.log`);
  const fd = openSync(logFile, "a");
  const [c, a] = cpus ? ["taskset", ["-c", cpus, cmd, ...args]] : [cmd, args];
  const child = spawn(c, a as string[], {
    stdio: ["ignore", fd, fd],
    cwd: dir,
    env: { ...process.env, ...env },
  });
  closeSync(fd);
  const p = new Proc(name, child, logFile);
  procs.push(p);
  return p;
}

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, async () => {
      const s = net.createServer().listen(0, HOST);
      await once(s, "listening");
      return s;
    }),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Waits until something accepts connections on the port (a plain TCP connect, closed at once). */
async function waitPort(p: Proc, port: number, ms = 20_000): Promise<Proc> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!p.alive) throw new Error(`${p.name} exited:\n${p.tail()}`);
    const up = await new Promise<boolean>((r) => {
      const s = net.connect(port, HOST);
      s.once("connect", () => {
        s.destroy();
        r(true);
      });
      s.once("error", () => r(false));
    });
    if (up) return p;
    await sleep(50);
  }
  throw new Error(`${p.name} did not listen on ${port} within ${ms} ms:\n${p.tail()}`);
}

// ---------------------------------------------------------------------------------------------
// the peers

interface Files {
  dir: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  ca: string;
}

function nginxConf(dir: string, name: string, workers: number, http: string[]): string {
  const prefix = join(dir, name);
  mkdirSync(prefix, { recursive: true });
  const conf = join(prefix, "nginx.conf");
  writeFileSync(
    conf,
    [
      `worker_processes ${workers};`,
      "worker_rlimit_nofile 10000;",
      `pid ${join(prefix, "nginx.pid")};`,
      `error_log ${join(prefix, "error.log")} error;`,
      "daemon off;",
      "events { worker_connections 4096; }",
      "http {",
      "  default_type application/octet-stream;",
      `  client_body_temp_path ${prefix}/body;`,
      `  proxy_temp_path ${prefix}/proxy;`,
      `  fastcgi_temp_path ${prefix}/fastcgi;`,
      `  uwsgi_temp_path ${prefix}/uwsgi;`,
      `  scgi_temp_path ${prefix}/scgi;`,
      "  keepalive_requests 1000000;",
      ...http.map((l) => `  ${l}`),
      "}",
      "",
    ].join("\n"),
  );
  return conf;
}

const nginxArgs = (conf: string) => ["-p", dirname(conf), "-c", conf, "-e", join(dirname(conf), "error.log")];

/** The shared upstream: 64 bytes at /small, a 1 MiB file at /big; no access log. */
async function startUpstream(f: Files, port: number, workers: number, cpus: string | undefined) {
  const www = join(f.dir, "www");
  mkdirSync(www, { recursive: true });
  writeFileSync(join(www, "big"), Buffer.alloc(BIG_BYTES, 0x61), { mode: 0o644 });
  // nginx's workers run as nobody: the temporary folder must be theirs to read.
  for (const d of [f.dir, www]) chmodSync(d, 0o755);
  const conf = nginxConf(f.dir, `upstream-${workers}`, workers, [
    "access_log off;",
    "sendfile on;",
    "server {",
    `  listen ${HOST}:${port};`,
    `  root ${www};`,
    `  location = /small { default_type text/plain; return 200 "${SMALL_BODY}"; }`,
    "  location = /big { }",
    "}",
  ]);
  return waitPort(start(f.dir, `upstream-${workers}`, cpus, "nginx", nginxArgs(conf)), port);
}

/**
 * nginx as the reference proxy: mTLS (verify on, depth 3, TLS 1.3), proxy_pass over a keep-alive
 * pool, the client certificate and the forwarding headers upstream as mtls sends them, an access log
 * line per request (mtls logs an audit line per request).
 */
function startNginx(f: Files, port: number, upstream: number, workers: number, cpus: string | undefined) {
  const name = `nginx-${workers}`;
  const conf = nginxConf(f.dir, name, workers, [
    `access_log ${join(f.dir, name, "access.log")};`,
    `upstream backend { server ${HOST}:${upstream}; keepalive 64; }`,
    "server {",
    `  listen ${HOST}:${port} ssl;`,
    `  ssl_certificate ${f.serverCert};`,
    `  ssl_certificate_key ${f.serverKey};`,
    `  ssl_client_certificate ${f.ca};`,
    "  ssl_verify_client on;",
    "  ssl_verify_depth 3;",
    "  ssl_protocols TLSv1.3;",
    "  location / {",
    "    proxy_pass http://backend;",
    "    proxy_http_version 1.1;",
    '    proxy_set_header Connection "";',
    "    proxy_set_header Host $host;",
    "    proxy_set_header Client-Cert $ssl_client_escaped_cert;",
    "    proxy_set_header X-Client-Identity $ssl_client_s_dn;",
    "    proxy_set_header X-Forwarded-For $remote_addr;",
    "    proxy_set_header X-Forwarded-Proto https;",
    "    proxy_set_header X-Forwarded-Host $host;",
    "  }",
    "}",
  ]);
  return waitPort(start(f.dir, name, cpus, "nginx", nginxArgs(conf)), port);
}

/** `mtls gateway` from the built CLI, with its defaults (HTTP/2 offered, audit line per request). */
async function startMtls(
  f: Files,
  port: number,
  upstream: number,
  workers: number,
  cpus: string | undefined,
  policy: string,
) {
  const [status] = await freePorts(1);
  const name = `mtls-${workers}${workers > 1 ? `-${policy}` : ""}`;
  const p = start(
    f.dir,
    name,
    cpus,
    process.execPath,
    [
      cli,
      "gateway",
      "--listen",
      `${HOST}:${port}`,
      "--cert",
      f.serverCert,
      "--key",
      f.serverKey,
      "--ca",
      f.ca,
      "--route",
      `/=http://${HOST}:${upstream}`,
      "--allow-uri",
      ALLOW,
      "--status",
      `${HOST}:${status}`,
      "--log-level",
      LOG_LEVEL,
      "--shutdown-timeout",
      "1s",
      ...(workers > 1 ? ["--workers", String(workers)] : []),
    ],
    workers > 1 ? { NODE_CLUSTER_SCHED_POLICY: policy } : {},
  );
  await waitPort(p, port);
  // With workers, the port is open once the first one listens: wait for the start-up line.
  const end = Date.now() + 20_000;
  while (!/mtls: gateway listening/.test(readFileSync(p.logFile, "utf8"))) {
    if (!p.alive || Date.now() > end) throw new Error(`${name} did not start:\n${p.tail()}`);
    await sleep(50);
  }
  return p;
}

/** bench/naive-proxy.mjs: what Node's own TLS and HTTP stack costs per proxied request. */
function startNaive(f: Files, port: number, upstream: number, workers: number, cpus: string | undefined) {
  return waitPort(
    start(f.dir, `naive-${workers}`, cpus, process.execPath, [
      naiveScript,
      String(port),
      String(upstream),
      f.serverCert,
      f.serverKey,
      f.ca,
      String(workers),
    ]),
    port,
  );
}

// ---------------------------------------------------------------------------------------------
// load

interface LoadResult {
  ok: number;
  bad: number;
  errors: number;
  seconds: number;
  perSec: number;
  bytesPerSec: number;
  p50: number;
  p99: number;
  connects: number;
  loadCpu: number;
  all: number;
  firstError?: string;
}

async function runLoad(
  url: string,
  concurrency: number,
  specFile: string,
  cpus: string | undefined,
): Promise<LoadResult> {
  const args = [loadScript, url, String(concurrency), String(SECONDS), String(WARMUP), specFile];
  const [cmd, a] = cpus ? ["taskset", ["-c", cpus, process.execPath, ...args]] : [process.execPath, args];
  const child = spawn(cmd, a as string[], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (c: Buffer) => {
    out += c.toString();
  });
  const [code] = (await once(child, "exit")) as [number | null];
  if (code !== 0) throw new Error(`the load generator exited ${code}`);
  return JSON.parse(out) as LoadResult;
}

interface Measured {
  layout: "one" | "two";
  proxy: string;
  kind: "small" | "big";
  load: LoadResult;
  /** Proxy CPU (all its processes) per 1,000 answers, ms. */
  cpuPer1000: number;
  /** Proxy cores busy during the run. */
  proxyCores: number;
  range: [number, number];
}

// ---------------------------------------------------------------------------------------------
// report

/** More runnable work than cores, or CPU pressure above 10%, when the run started. */
const busy = (m: ReturnType<typeof machine>): boolean =>
  Number(m.load.split(" ")[0]) > Number(m.nproc) || Number(m.cpuPressure || 0) > 10;

function report(m: ReturnType<typeof machine>, results: Measured[], end: string): string {
  const get = (layout: string, proxy: string, kind: string) =>
    results.find((r) => r.layout === layout && r.proxy === proxy && r.kind === kind);
  const lines = [
    `Measured ${m.date} (code: ${m.code}, built to dist/) on ${m.nproc} CPU cores (${m.model}), Linux ${m.kernel}; Node ${m.node} (OpenSSL ${m.nodeOpenssl}); nginx ${m.nginx}.`,
    `Load average ${m.load} at the start${m.cpuPressure ? `, CPU pressure (PSI some avg60) ${m.cpuPressure}%` : ""}; at the end ${end}.`,
    ...(busy(m)
      ? [
          "**Provisional**: other work was running on the machine (see the load and CPU pressure), which takes CPU from",
          "whichever process is pinned next to it; rerun `npm run bench:gateway` on an idle machine.",
        ]
      : []),
    "",
    `Keep-alive HTTP/1.1 GETs over TLS 1.3 with a client certificate (ECDSA P-256), from bench/https-load.mjs in its own`,
    `process: ${CONCURRENCY} connections for the 64-byte answer, ${BIG_CONCURRENCY} for the 1 MiB one; ${ROUNDS} round(s) of ${SECONDS} s after`,
    `a ${WARMUP} s warm-up, the proxies taking turns, median round shown (slowest – fastest next to it). Both proxies`,
    "verify the client certificate against the same CA, pass it upstream in a header with the forwarding headers,",
    "reuse upstream connections and write a log line per request (mtls: its JSON audit line to a file; nginx: its",
    `access log). mtls also checks an \`--allow-uri\` rule and sends X-Client-Identity (JSON) and Client-Cert-Chain.`,
    "The upstream is one more nginx (a fixed 64-byte body, a 1 MiB file with sendfile).",
    ...(NAIVE
      ? [
          "**naive Node**: bench/naive-proxy.mjs, the smallest mTLS proxy Node makes (https.createServer, http.request over a",
          "keep-alive Agent, pipe(); no policy, header filtering, logs or metrics): what Node's own stack costs.",
        ]
      : []),
    "",
    "| Cores | Answer | Proxy | Requests / s | slowest – fastest | ÷ nginx | p50 / p99 latency | p99 ÷ nginx | MB/s | proxy CPU per 1,000 | proxy cores busy |",
    "|---|---|---|---:|---|---:|---|---:|---:|---:|---:|",
  ];
  const proxies = [...new Set(results.map((r) => r.proxy))];
  for (const layout of ["one", "two"]) {
    for (const kind of ["small", "big"] as const) {
      const base = get(layout, "nginx", kind);
      for (const proxy of proxies) {
        const x = get(layout, proxy, kind);
        if (!x) continue;
        const isBase = proxy === "nginx";
        const rps = base ? x.load.perSec / base.load.perSec : Number.NaN;
        const p99 = base ? x.load.p99 / base.load.p99 : Number.NaN;
        lines.push(
          `| ${layout === "one" ? "1" : "2"} | ${kind === "small" ? "64 B" : "1 MiB"} | ${isBase ? proxy : `**${proxy}**`} | ${fmt(x.load.perSec)} | ${fmt(x.range[0])} – ${fmt(x.range[1])} | ${isBase ? "1" : `**${fmt(rps, 2)}×**`} | ${fmt(x.load.p50, 2)} / ${fmt(x.load.p99, 2)} ms | ${isBase ? "1" : `${fmt(p99, 2)}×`} | ${fmt(x.load.bytesPerSec / 1e6, 0)} | ${fmt(x.cpuPer1000 * 1000)} ms | ${fmt(x.proxyCores, 2)} |`,
        );
      }
    }
  }
  lines.push(
    "",
    "1 core: the proxy (one gateway process; one nginx worker) pinned to CPU 0 with taskset, the load generator and",
    "the upstream pinned to CPU 1. 2 cores: `mtls gateway --workers 2` (node:cluster; the primary hands each new",
    "connection to the next worker) next to `worker_processes 2`, nothing pinned: proxy, load generator and upstream share",
    "both cores, so the proxy gets less than two of them and the load generator's own cost weighs on both sides.",
    "Proxy CPU per 1,000 answers: utime+stime of all the proxy's processes over the run (warm-up included) ÷ answers.",
    "",
  );
  const errs = results.filter((r) => r.load.bad || r.load.errors);
  lines.push(
    errs.length
      ? `Errors: ${errs.map((x) => `${x.layout} core(s) ${x.proxy} ${x.kind}: ${x.load.bad} bad, ${x.load.errors} failed (${x.load.firstError ?? ""})`).join("; ")}.`
      : "Every answer of every run was a 200 with the whole body.",
    "",
    "| Goal (issue 5) | 1 core | 2 cores | Met |",
    "|---|---|---|---|",
  );
  const goal = (what: string, value: (l: string) => number, ok: (v: number) => boolean, unit: string) => {
    const v = ["one", "two"].map(value);
    const shown = v.map((x) => (Number.isFinite(x) ? `${fmt(x, 2)}${unit}` : "–"));
    const met = v.filter(Number.isFinite);
    lines.push(`| ${what} | ${shown[0]} | ${shown[1]} | ${met.length && met.every(ok) ? "yes" : "**no**"} |`);
  };
  const mtlsName = (l: string) =>
    l === "one" ? "mtls" : (proxies.find((p) => p.startsWith("mtls") && get(l, p, "small")) ?? "mtls");
  goal(
    `requests/s ≥ ${GOALS.rps}× nginx's (64 B)`,
    (l) =>
      (get(l, mtlsName(l), "small")?.load.perSec ?? Number.NaN) /
      (get(l, "nginx", "small")?.load.perSec ?? Number.NaN),
    (v) => v >= GOALS.rps,
    "×",
  );
  goal(
    `p99 within ${GOALS.p99}× nginx's (64 B)`,
    (l) =>
      (get(l, mtlsName(l), "small")?.load.p99 ?? Number.NaN) /
      (get(l, "nginx", "small")?.load.p99 ?? Number.NaN),
    (v) => v <= GOALS.p99,
    "×",
  );
  lines.push(
    "",
    `1 MiB throughput, mtls ÷ nginx: ${["one", "two"]
      .map(
        (l) =>
          `${l === "one" ? "1 core" : "2 cores"} ${fmt((get(l, mtlsName(l), "big")?.load.bytesPerSec ?? Number.NaN) / (get(l, "nginx", "big")?.load.bytesPerSec ?? Number.NaN), 2)}×`,
      )
      .join(", ")} (no goal set).`,
  );
  return lines.join("\n");
}

function writeDoc(section: string): void {
  const block = `${START}\n${section}\n${END}`;
  const old = existsSync(docFile) ? readFileSync(docFile, "utf8") : "# Benchmarks\n";
  const a = old.indexOf(START);
  const b = old.indexOf(END);
  const intro = [
    "## Gateway",
    "",
    "`npm run bench:gateway` (bench/gateway.ts): `mtls gateway` next to nginx configured the same way",
    "(`ssl_verify_client on`, `proxy_pass` to the same upstream), in one run: requests per second and p99 latency",
    "for a small answer, and throughput for a 1 MiB answer, with one core each and with two (`--workers 2` next to",
    "`worker_processes 2`). Goals (issue 5): at least 0.8x nginx's requests per second at the same core count, p99",
    "within 2x of nginx's.",
    "",
  ].join("\n");
  const text =
    a >= 0 && b > a
      ? old.slice(0, a) + block + old.slice(b + END.length)
      : `${old.replace(/\n*$/, "\n\n")}${intro}\n${block}\n`;
  writeFileSync(docFile, text);
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  for (const cmd of ["nginx", "taskset"]) {
    if (!tryRun("sh", ["-c", `command -v ${cmd}`])) throw new Error(`${cmd} is not installed`);
  }
  if (!existsSync(cli)) throw new Error("dist/cli/main.js is missing: run `npm run build` first");
  const m = machine();
  const dir = mkdtempSync(join(tmpdir(), "mtls-bench-gateway-"));
  const results: Measured[] = [];
  try {
    log("certificates (ECDSA P-256, root + intermediate)");
    const pki = await createTestPki("mtls-bench-gw-pki-");
    let f: Files;
    try {
      const out = join(dir, "certs");
      const s = await pki.issue("server", "bench-server", {
        sans: [makeSan("dns", SERVER_NAME), makeSan("ip", HOST)],
        outDir: out,
      });
      const c = await pki.issue("client", "bench-client", {
        sans: [makeSan("uri", "spiffe://bench.test/user/alice")],
        outDir: out,
      });
      f = { dir, serverCert: s.cert, serverKey: s.key, clientCert: c.cert, clientKey: c.key, ca: s.ca };
    } finally {
      await pki.close();
    }
    const spec = (kind: "small" | "big") => {
      const file = join(dir, `load-${kind}.json`);
      writeFileSync(
        file,
        JSON.stringify({
          cert: f.clientCert,
          key: f.clientKey,
          ca: f.ca,
          servername: SERVER_NAME,
          expectStatus: 200,
          expectBytes: kind === "small" ? SMALL_BODY.length : BIG_BYTES,
        }),
      );
      return file;
    };
    const specs = { small: spec("small"), big: spec("big") };

    for (const layout of LAYOUTS as ("one" | "two")[]) {
      const workers = layout === "one" ? 1 : 2;
      const proxyCpus = layout === "one" ? "0" : undefined;
      const sideCpus = layout === "one" ? "1" : undefined;
      const [upPort, nginxPort, naivePort, ...mtlsPorts] = await freePorts(3 + POLICIES.length);
      const upstream = await startUpstream(f, upPort as number, 1, sideCpus);
      const running: { name: string; port: number; proc: Proc }[] = [];
      try {
        running.push({
          name: "nginx",
          port: nginxPort as number,
          proc: await startNginx(f, nginxPort as number, upPort as number, workers, proxyCpus),
        });
        const policies = workers > 1 ? POLICIES : ["none"];
        for (const [i, policy] of policies.entries()) {
          const port = mtlsPorts[i] as number;
          const name = workers > 1 && POLICIES.length > 1 ? `mtls (${policy})` : "mtls";
          running.push({
            name,
            port,
            proc: await startMtls(f, port, upPort as number, workers, proxyCpus, policy),
          });
        }
        if (NAIVE) {
          running.push({
            name: "naive Node",
            port: naivePort as number,
            proc: await startNaive(f, naivePort as number, upPort as number, workers, proxyCpus),
          });
        }
        for (const kind of ["small", "big"] as const) {
          const rounds = new Map<string, Measured[]>();
          for (let round = 1; round <= ROUNDS; round++) {
            for (const r of running) {
              const conc = kind === "small" ? CONCURRENCY : BIG_CONCURRENCY;
              log(
                `${workers} core(s), ${kind}, ${r.name}, round ${round}/${ROUNDS}: ${conc} connections for ${SECONDS}s`,
              );
              const path = kind === "small" ? "/small" : "/big";
              const cpu0 = r.proc.cpuSeconds();
              const t0 = performance.now();
              const load = await runLoad(`https://${HOST}:${r.port}${path}`, conc, specs[kind], sideCpus);
              const wall = (performance.now() - t0) / 1000;
              const cpu = r.proc.cpuSeconds() - cpu0;
              if (load.bad || load.errors)
                log(`${r.name}: ${load.bad} bad, ${load.errors} errors (${load.firstError ?? ""})`);
              const list = rounds.get(r.name) ?? [];
              list.push({
                layout,
                proxy: r.name,
                kind,
                load,
                cpuPer1000: (cpu / Math.max(1, load.all)) * 1000,
                proxyCores: cpu / wall,
                range: [0, 0],
              });
              rounds.set(r.name, list);
            }
          }
          for (const list of rounds.values()) {
            const mid = median(list, (x) => x.load.perSec);
            const sorted = list.map((x) => x.load.perSec).sort((a, b) => a - b);
            mid.range = [sorted[0] ?? 0, sorted.at(-1) ?? 0];
            results.push(mid);
          }
        }
      } finally {
        await Promise.all(running.map((r) => r.proc.stop()));
        await upstream.stop();
      }
    }
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    if (KEEP) log(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
  const end = `${loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")}${cpuPressure() ? `, CPU pressure ${cpuPressure()}%` : ""}`;
  const section = report(m, results, end);
  process.stdout.write(`${section}\n`);
  const defaults =
    !process.env.BENCH_LAYOUTS &&
    !process.env.BENCH_ROUNDS &&
    !process.env.BENCH_SECONDS &&
    !process.env.BENCH_MTLS_CLI;
  if (defaults) {
    writeDoc(section);
    log(`wrote ${docFile}`);
  }
}

// Every child goes with us, whatever happens.
const killAll = () => {
  for (const p of procs) {
    if (!p.alive) continue;
    // nginx's workers outlive a killed master: every descendant goes.
    for (const pid of p.pids().reverse()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
  }
};
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

await main();
