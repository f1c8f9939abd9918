/**
 * Tunnel benchmark (issue 3, "Performance"): the mtls tunnel, run as users run it (the built CLI,
 * `node dist/cli/main.js tunnel server|client`), side by side with stunnel (Debian stunnel4) and
 * nginx `stream` (ssl_verify_client; proxy_ssl for its client end), and a naive Node pipe pair
 * (bench/tunnel-peers.mjs) that shows what Node alone costs. All on 127.0.0.1, TLS 1.3, the same
 * ECDSA P-256 certificates (made at run time by test/fixtures/pki.ts), in one run:
 *
 *   1. bulk throughput through a client+server pair (iperf3, one stream);
 *   2. full mTLS handshakes straight to each server end, from this process: server CPU µs per
 *      handshake (utime+stime from /proc/PID/stat) and handshakes per second; then the same with
 *      TLS 1.3 session resumption;
 *   3. new connections through each client end (which resumes its session with the server end);
 *   4. round-trip latency of a 64-byte request/response on an open connection (p50, p99);
 *   5. memory (PSS) with 10,000 idle connections open through an mtls pair (as many as the descriptor
 *      limit allows, then projected), and per connection through the others.
 *
 * Prints a markdown report and rewrites the `bench:tunnel` section of docs/benchmarks.md (the hand-written
 * notes after its end marker stay). About 3.5 minutes on 2 cores; every child is killed at the end.
 *
 *   npm run build && node --import tsx bench/tunnel.ts
 *   BENCH_ONLY=handshake node --import tsx bench/tunnel.ts   (some phases only; the doc is left alone)
 *
 * Knobs: BENCH_SECONDS (each rate run, default 4), BENCH_IPERF_SECONDS (each of 3 rounds, default 3),
 * BENCH_SETTLE_MS (pause before each iperf3 run, default 1000), BENCH_IDLE
 * (idle connections, default 10000), BENCH_CONCURRENCY (handshakes in flight, default 4),
 * BENCH_PINGS (round trips per latency run, default 5000), BENCH_ONLY (comma list of throughput,
 * handshake, client, latency, idle), BENCH_KEEP=1 (keep the temporary folder with configs and logs),
 * BENCH_IDLE_OTHERS (idle connections through stunnel, nginx and the naive pair, default 3000),
 * BENCH_MTLS_CLI (another build's dist/cli/main.js to measure instead; the doc is then left alone),
 * BENCH_IMPLS (which of mtls,stunnel,nginx,naive to run, in that order; the doc is written only with all four).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { makeSan } from "../src/pki/names.js";
import { createTestPki } from "../test/fixtures/pki.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const WARMUP_SECONDS = 0.5;
const IPERF_SECONDS = Number(process.env.BENCH_IPERF_SECONDS ?? 3);
const THROUGHPUT_ROUNDS = 3;
const SETTLE_MS = Number(process.env.BENCH_SETTLE_MS ?? 1000);
const IDLE = Number(process.env.BENCH_IDLE ?? 10_000);
/** Idle connections through the other tunnels (their cost per connection, in less time). */
const IDLE_OTHERS = Number(process.env.BENCH_IDLE_OTHERS ?? 3_000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4);
const PINGS = Number(process.env.BENCH_PINGS ?? 5000);
const ONLY = new Set(
  (process.env.BENCH_ONLY ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean),
);
const KEEP = process.env.BENCH_KEEP === "1";
const PHASES = ["throughput", "handshake", "client", "latency", "idle"] as const;
type Phase = (typeof PHASES)[number];
const runs = (p: Phase) => ONLY.size === 0 || ONLY.has(p);

const GOALS = { throughput: 1.2, resumedCheaper: 3, idleMb: 300 };
const HOST = "127.0.0.1";
const SERVER_NAME = "localhost";
const ALLOW = "spiffe://bench.test/user/*";
const PING = Buffer.alloc(32, 0x61);

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const docFile = join(root, "docs", "benchmarks.md");
/** The CLI measured; BENCH_MTLS_CLI points at another build (a scratch copy with a change to try). */
const cli = resolve(process.env.BENCH_MTLS_CLI ?? join(root, "dist", "cli", "main.js"));
const peersScript = join(root, "bench", "tunnel-peers.mjs");
const START = "<!-- bench:tunnel:start -->";
const END = "<!-- bench:tunnel:end -->";

const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();

// ---------------------------------------------------------------------------------------------
// the machine

function tryRun(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ""}${e.stderr ?? ""}`.trim();
  }
}

function cpuPressure(): string {
  return existsSync("/proc/pressure/cpu")
    ? (/some avg10=\S+ avg60=(\S+)/.exec(readFileSync("/proc/pressure/cpu", "utf8"))?.[1] ?? "")
    : "";
}

function machine() {
  const cpuinfo = existsSync("/proc/cpuinfo") ? readFileSync("/proc/cpuinfo", "utf8") : "";
  const firstLine = (text: string) => text.split("\n")[0]?.trim() ?? "";
  return {
    nproc: tryRun("nproc", []) || String(availableParallelism()),
    model: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    kernel: tryRun("uname", ["-r"]),
    node: process.version,
    nodeOpenssl: process.versions.openssl,
    openssl: tryRun("openssl", ["version"]),
    stunnel: (() => {
      const v = tryRun("sh", ["-c", "stunnel4 -version 2>&1"]);
      const ver = /stunnel (\S+)/.exec(v)?.[1] ?? "?";
      const running = /Running\s+with (OpenSSL \S+)/.exec(v)?.[1] ?? "?";
      return `stunnel ${ver} (${running})`;
    })(),
    nginx: firstLine(tryRun("sh", ["-c", "nginx -v 2>&1"])).replace(/^nginx version: nginx\//, ""),
    iperf3: firstLine(tryRun("iperf3", ["--version"])),
    code: (() => {
      if (process.env.BENCH_MTLS_CLI) return `BENCH_MTLS_CLI=${cli}`;
      const head = tryRun("git", ["-C", root, "rev-parse", "--short", "HEAD"]);
      const dirty = tryRun("git", ["-C", root, "status", "--porcelain", "src"])
        .split("\n")
        .filter(Boolean).length;
      return dirty ? `${head} with ${dirty} uncommitted file(s) in src/` : head;
    })(),
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    load: loadavg()
      .map((l) => l.toFixed(2))
      .join(" "),
    cpuPressure: cpuPressure(),
  };
}

/** 10,000 connections through a pair hold ~20,000 descriptors in one process: lift the limit (root only). */
function raiseFdLimit(want: number): number {
  try {
    execFileSync("prlimit", [`--pid=${process.pid}`, `--nofile=${want}:${want}`], { stdio: "ignore" });
  } catch {}
  const limit = Number(/Max open files\s+(\d+)/.exec(readFileSync("/proc/self/limits", "utf8"))?.[1] ?? 1024);
  return limit;
}

// ---------------------------------------------------------------------------------------------
// processes

const CLK_TCK = Number(tryRun("getconf", ["CLK_TCK"])) || 100;

function readStat(pid: number): { ppid: number; ticks: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name may hold spaces and parentheses: fields start after the last ")".
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
  } catch {
    return undefined;
  }
}

/** Proportional set size (shared pages split among their users, so nginx's workers add up), else RSS. */
function pssKb(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0);
  } catch {
    try {
      return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
    } catch {
      return 0;
    }
  }
}

class Proc {
  readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly logFile: string,
  ) {
    this.exited = new Promise((resolveExit) => {
      child.once("exit", (code) => {
        this.exitCode = code;
        resolveExit(code);
      });
    });
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get alive(): boolean {
    return this.exitCode === undefined;
  }

  /** The process and its descendants (nginx's workers), found through /proc. */
  pids(): number[] {
    const byParent = new Map<number, number[]>();
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const st = readStat(Number(entry));
      if (!st) continue;
      const list = byParent.get(st.ppid) ?? [];
      list.push(Number(entry));
      byParent.set(st.ppid, list);
    }
    const out: number[] = [];
    const walk = (pid: number) => {
      out.push(pid);
      for (const c of byParent.get(pid) ?? []) walk(c);
    };
    walk(this.pid);
    return out;
  }

  /** CPU seconds used so far (user + system, all threads, live descendants included). */
  cpuSeconds(): number {
    return this.pids().reduce((sum, p) => sum + (readStat(p)?.ticks ?? 0), 0) / CLK_TCK;
  }

  memoryMb(): number {
    return this.pids().reduce((sum, p) => sum + pssKb(p), 0) / 1024;
  }

  tail(): string {
    try {
      return readFileSync(this.logFile, "utf8").split("\n").slice(-15).join("\n");
    } catch {
      return "";
    }
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 3000);
    await this.exited;
    clearTimeout(timer);
  }
}

const procs: Proc[] = [];

function start(name: string, cmd: string, args: string[], dir: string): Proc {
  const logFile = join(dir, `${name}.log`);
  const fd = openSync(logFile, "a");
  const child = spawn(cmd, args, { stdio: ["ignore", fd, fd], cwd: dir });
  closeSync(fd);
  const p = new Proc(name, child, logFile);
  procs.push(p);
  return p;
}

/** True when something listens on 127.0.0.1:`port` (read from /proc/net/tcp, so no connection is made). */
function listeningOn(port: number): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")} `;
  try {
    return readFileSync("/proc/net/tcp", "utf8")
      .split("\n")
      .some((line) => {
        const f = line.trim().split(/\s+/);
        return f[3] === "0A" && `${f[1]} `.endsWith(hex);
      });
  } catch {
    return false;
  }
}

/**
 * Waits until the process listens on `port`, or fails with its log. It looks rather than connects: a
 * probe connection to a client end would travel through the tunnel to the target (and a single-test
 * iperf3 server would take it for its next test).
 */
async function waitPort(p: Proc, port: number, timeoutMs = 15_000): Promise<Proc> {
  const deadline = now() + timeoutMs;
  while (now() < deadline) {
    if (!p.alive) throw new Error(`${p.name} exited:\n${p.tail()}`);
    if (listeningOn(port)) return p;
    await sleep(25);
  }
  throw new Error(`${p.name} did not listen on ${port} within ${timeoutMs} ms:\n${p.tail()}`);
}

async function stopAll(list: Proc[]): Promise<void> {
  await Promise.all(list.map((p) => p.stop()));
}

/** Free TCP ports on 127.0.0.1, chosen by the kernel. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<net.Server>((res) => {
          const s = net.createServer();
          s.listen(0, HOST, () => res(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((res) => s.close(res))));
  return ports;
}

// ---------------------------------------------------------------------------------------------
// the four implementations

interface Files {
  dir: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  ca: string;
}

type ImplKey = "mtls" | "stunnel" | "nginx" | "naive";

interface Impl {
  key: ImplKey;
  label: string;
  /** Starts the server end: mTLS on `listen`, plain TCP to `target`. */
  server(name: string, listen: number, target: number): Promise<Proc>;
  /** Starts the client end: plain on `listen`, mTLS to the server end on `target`. */
  client(name: string, listen: number, target: number): Promise<Proc>;
}

function impls(f: Files): Impl[] {
  const tlsFiles = (cert: string, key: string) => ["--cert", cert, "--key", key, "--ca", f.ca];
  const mtls: Impl = {
    key: "mtls",
    label: "mtls",
    async server(name, listen, target) {
      const [status] = await freePorts(1);
      const p = start(
        name,
        process.execPath,
        [
          cli,
          "tunnel",
          "server",
          "--listen",
          `${HOST}:${listen}`,
          "--target",
          `${HOST}:${target}`,
          ...tlsFiles(f.serverCert, f.serverKey),
          "--allow-uri",
          ALLOW,
          "--status",
          `${HOST}:${status}`,
          "--shutdown-timeout",
          "1s",
        ],
        f.dir,
      );
      (p as Proc & { statusPort?: number }).statusPort = status;
      return waitPort(p, listen);
    },
    client(name, listen, target) {
      const p = start(
        name,
        process.execPath,
        [
          cli,
          "tunnel",
          "client",
          "--listen",
          `${HOST}:${listen}`,
          "--target",
          `${HOST}:${target}`,
          "--server-name",
          SERVER_NAME,
          ...tlsFiles(f.clientCert, f.clientKey),
          "--shutdown-timeout",
          "1s",
        ],
        f.dir,
      );
      return waitPort(p, listen);
    },
  };

  const stunnelConf = (name: string, body: string[]) => {
    const file = join(f.dir, `${name}.conf`);
    writeFileSync(file, ["foreground = yes", "pid =", "", ...body, ""].join("\n"));
    return file;
  };
  const stunnel: Impl = {
    key: "stunnel",
    label: "stunnel",
    server(name, listen, target) {
      const conf = stunnelConf(name, [
        "[server]",
        `accept = ${HOST}:${listen}`,
        `connect = ${HOST}:${target}`,
        `cert = ${f.serverCert}`,
        `key = ${f.serverKey}`,
        `CAfile = ${f.ca}`,
        "verifyChain = yes",
        "requireCert = yes",
        "sslVersionMin = TLSv1.3",
      ]);
      return waitPort(start(name, "stunnel4", [conf], f.dir), listen);
    },
    client(name, listen, target) {
      const conf = stunnelConf(name, [
        "[client]",
        "client = yes",
        `accept = ${HOST}:${listen}`,
        `connect = ${HOST}:${target}`,
        `cert = ${f.clientCert}`,
        `key = ${f.clientKey}`,
        `CAfile = ${f.ca}`,
        "verifyChain = yes",
        `checkHost = ${SERVER_NAME}`,
        `sni = ${SERVER_NAME}`,
        "sslVersionMin = TLSv1.3",
      ]);
      return waitPort(start(name, "stunnel4", [conf], f.dir), listen);
    },
  };

  const nginxStart = (name: string, server: string[], listen: number) => {
    const prefix = join(f.dir, name);
    mkdirSync(prefix, { recursive: true });
    const conf = join(prefix, "nginx.conf");
    writeFileSync(
      conf,
      [
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;",
        "worker_processes auto;",
        "worker_rlimit_nofile 100000;",
        `pid ${join(prefix, "nginx.pid")};`,
        `error_log ${join(prefix, "error.log")} error;`,
        "daemon off;",
        "events { worker_connections 40000; }",
        "stream {",
        "  server {",
        ...server.map((l) => `    ${l}`),
        "  }",
        "}",
        "",
      ].join("\n"),
    );
    return waitPort(
      start(name, "nginx", ["-p", prefix, "-c", conf, "-e", join(prefix, "error.log")], f.dir),
      listen,
    );
  };
  const nginx: Impl = {
    key: "nginx",
    label: "nginx stream",
    server(name, listen, target) {
      return nginxStart(
        name,
        [
          `listen ${HOST}:${listen} ssl;`,
          `ssl_certificate ${f.serverCert};`,
          `ssl_certificate_key ${f.serverKey};`,
          `ssl_client_certificate ${f.ca};`,
          "ssl_verify_client on;",
          "ssl_verify_depth 3;",
          "ssl_protocols TLSv1.3;",
          `proxy_pass ${HOST}:${target};`,
        ],
        listen,
      );
    },
    client(name, listen, target) {
      return nginxStart(
        name,
        [
          `listen ${HOST}:${listen};`,
          `proxy_pass ${HOST}:${target};`,
          "proxy_ssl on;",
          `proxy_ssl_certificate ${f.clientCert};`,
          `proxy_ssl_certificate_key ${f.clientKey};`,
          `proxy_ssl_trusted_certificate ${f.ca};`,
          "proxy_ssl_verify on;",
          "proxy_ssl_verify_depth 3;",
          `proxy_ssl_name ${SERVER_NAME};`,
          "proxy_ssl_server_name on;",
          "proxy_ssl_protocols TLSv1.3;",
          "proxy_ssl_session_reuse on;",
        ],
        listen,
      );
    },
  };

  const naive: Impl = {
    key: "naive",
    label: "naive Node pipe",
    server(name, listen, target) {
      return waitPort(
        start(
          name,
          process.execPath,
          [peersScript, "naive-server", String(listen), String(target), f.serverCert, f.serverKey, f.ca],
          f.dir,
        ),
        listen,
      );
    },
    client(name, listen, target) {
      return waitPort(
        start(
          name,
          process.execPath,
          [
            peersScript,
            "naive-client",
            String(listen),
            String(target),
            f.clientCert,
            f.clientKey,
            f.ca,
            SERVER_NAME,
          ],
          f.dir,
        ),
        listen,
      );
    },
  };
  return [mtls, stunnel, nginx, naive];
}

// ---------------------------------------------------------------------------------------------
// the driver (this process): TLS and plain connections, one request/response each

let driverContext: tls.SecureContext;

interface Outcome {
  resumed?: boolean;
  /** Time from connect() to the echoed request, ms. */
  ms: number;
}

/** Sends PING on `socket` once it is ready, waits for the echo, ends, and resolves at 'close'. */
function exchange(socket: net.Socket, readyEvent: "connect" | "secureConnect"): Promise<number> {
  const t0 = now();
  return new Promise((res, rej) => {
    let got = 0;
    let answeredAt = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      rej(new Error("no answer within 10 s"));
    }, 10_000);
    socket.once(readyEvent, () => socket.write(PING));
    socket.on("data", (d: Buffer) => {
      got += d.length;
      if (got >= PING.length && !answeredAt) {
        answeredAt = now();
        socket.end();
      }
    });
    socket.on("error", (err) => {
      clearTimeout(timer);
      rej(err);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      if (answeredAt) res(answeredAt - t0);
      else rej(new Error("closed before the answer"));
    });
  });
}

/** The last session ticket per server port, as a TLS client keeps it. */
const tickets = new Map<number, Buffer>();

function tlsConnect(port: number, resume: boolean): tls.TLSSocket {
  const session = resume ? tickets.get(port) : undefined;
  const socket = tls.connect({
    host: HOST,
    port,
    secureContext: driverContext,
    servername: SERVER_NAME,
    minVersion: "TLSv1.3",
    ...(session ? { session } : {}),
  });
  socket.setNoDelay(true);
  socket.on("session", (t: Buffer) => tickets.set(port, t));
  return socket;
}

async function tlsRequest(port: number, resume: boolean): Promise<Outcome> {
  const socket = tlsConnect(port, resume);
  // Asked at secureConnect: once the socket is closed it has no TLS state left to ask.
  let resumed = false;
  socket.once("secureConnect", () => {
    resumed = socket.isSessionReused();
  });
  const ms = await exchange(socket, "secureConnect");
  return { ms, resumed };
}

async function plainRequest(port: number): Promise<Outcome> {
  const socket = net.connect({ host: HOST, port, noDelay: true });
  return { ms: await exchange(socket, "connect") };
}

/** What one TLS connection to a server end negotiated. */
async function negotiated(port: number): Promise<string> {
  const socket = tlsConnect(port, false);
  await new Promise<void>((res, rej) => {
    socket.once("secureConnect", () => res());
    socket.once("error", rej);
  });
  const cipher = socket.getCipher();
  const kx = socket.getEphemeralKeyInfo() as { name?: string } | null;
  const text = `${socket.getProtocol()} ${cipher.standardName ?? cipher.name}, ${kx?.name ?? "?"}`;
  socket.destroy();
  return text;
}

interface RateResult {
  ops: number;
  errors: number;
  seconds: number;
  perSec: number;
  /** CPU µs per operation of each watched process. */
  cpuUs: Record<string, number>;
  /** This process's CPU µs per operation (the same TLS client work whatever the server). */
  driverUs: number;
  resumed: number;
  p50: number;
  p99: number;
  firstError?: string;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] as number;
}

/**
 * Runs `op` with `concurrency` in flight: a warm-up, then a timed run; counts completed operations
 * and the CPU each watched process used over the timed run (its closes included).
 */
async function rateRun(
  op: () => Promise<Outcome>,
  watch: Record<string, Proc>,
  seconds = SECONDS,
  concurrency = CONCURRENCY,
): Promise<RateResult> {
  let errors = 0;
  let firstError: string | undefined;
  const loop = async (until: number, sink?: Outcome[]) => {
    const worker = async () => {
      while (now() < until) {
        try {
          const o = await op();
          sink?.push(o);
        } catch (err) {
          errors++;
          firstError ??= (err as Error).message;
          await sleep(10);
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  };
  await loop(now() + WARMUP_SECONDS * 1000);
  errors = 0;
  await sleep(150);
  const cpu0 = Object.fromEntries(Object.entries(watch).map(([k, p]) => [k, p.cpuSeconds()]));
  const drv0 = process.cpuUsage();
  const t0 = now();
  const outcomes: Outcome[] = [];
  await loop(t0 + seconds * 1000, outcomes);
  const elapsed = (now() - t0) / 1000;
  await sleep(150);
  const drv = process.cpuUsage(drv0);
  const ops = outcomes.length;
  const cpuUs = Object.fromEntries(
    Object.entries(watch).map(([k, p]) => [k, ((p.cpuSeconds() - (cpu0[k] as number)) * 1e6) / ops]),
  );
  const lat = outcomes.map((o) => o.ms).sort((a, b) => a - b);
  return {
    ops,
    errors,
    seconds: elapsed,
    perSec: ops / elapsed,
    cpuUs,
    driverUs: (drv.user + drv.system) / ops,
    resumed: outcomes.filter((o) => o.resumed).length,
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    ...(firstError ? { firstError } : {}),
  };
}

/** Round trips of a 64-byte request on one open connection through `port`; µs each, sorted. */
async function pingPong(port: number, n: number): Promise<number[]> {
  const socket = net.connect({ host: HOST, port, noDelay: true });
  await new Promise<void>((res, rej) => {
    socket.once("connect", () => res());
    socket.once("error", rej);
  });
  const msg = Buffer.alloc(64, 0x62);
  let want = 0;
  let got = 0;
  let wake: (() => void) | undefined;
  socket.on("data", (d: Buffer) => {
    got += d.length;
    if (got >= want) wake?.();
  });
  const one = async () => {
    want += msg.length;
    const t0 = process.hrtime.bigint();
    const done = new Promise<void>((res) => {
      wake = res;
    });
    socket.write(msg);
    await done;
    return Number(process.hrtime.bigint() - t0) / 1000;
  };
  for (let i = 0; i < Math.min(500, n / 5); i++) await one();
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await one());
  socket.destroy();
  return out.sort((a, b) => a - b);
}

/** Opens `n` connections, each proven end to end by one echo, and keeps them open. */
async function openIdle(n: number, open: () => net.Socket, parallel = 64): Promise<net.Socket[]> {
  const held: net.Socket[] = [];
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      const socket = open();
      await new Promise<void>((res, rej) => {
        const timer = setTimeout(() => rej(new Error("idle connection: no echo within 20 s")), 20_000);
        const ready = socket instanceof tls.TLSSocket ? "secureConnect" : "connect";
        socket.once(ready, () => socket.write(PING));
        let got = 0;
        const onData = (d: Buffer) => {
          got += d.length;
          if (got >= PING.length) {
            clearTimeout(timer);
            socket.off("data", onData);
            res();
          }
        };
        socket.on("data", onData);
        socket.once("error", (err) => {
          clearTimeout(timer);
          rej(err);
        });
      });
      socket.on("error", () => undefined);
      held.push(socket);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return held;
}

// ---------------------------------------------------------------------------------------------
// phases

interface Run {
  gbits: number;
  bytes: number;
  /** CPU seconds of each end over the run. */
  client: number;
  server: number;
  wall: number;
}

interface Throughput {
  key: ImplKey | "direct";
  label: string;
  /** The median round's rate, and the slowest and fastest rounds'. */
  gbits: number;
  range: [number, number];
  bytes: number;
  /** CPU seconds per GB moved, per process (client end, server end). */
  cpuPerGb: Record<string, number>;
  /** Share of one core, per process, over the run. */
  cores: Record<string, number>;
}

function iperf(port: number, seconds: number): { bitsPerSecond: number; bytes: number; seconds: number } {
  const raw = execFileSync("iperf3", ["-c", HOST, "-p", String(port), "-t", String(seconds), "-J"], {
    encoding: "utf8",
    maxBuffer: 16 * 1024 * 1024,
  });
  const j = JSON.parse(raw) as {
    error?: string;
    end?: { sum_received?: { bits_per_second: number; bytes: number; seconds: number } };
  };
  if (j.error || !j.end?.sum_received) throw new Error(`iperf3: ${j.error ?? "no result"}`);
  const r = j.end.sum_received;
  return { bitsPerSecond: r.bits_per_second, bytes: r.bytes, seconds: r.seconds };
}

async function throughputPhase(all: Impl[], dir: string): Promise<Throughput[]> {
  const [iperfPort] = (await freePorts(1)) as [number];
  const server = await waitPort(
    start("iperf3-server", "iperf3", ["-s", "-B", HOST, "-p", String(iperfPort)], dir),
    iperfPort,
  );
  const pairs: { impl: Impl; s: Proc; c: Proc; port: number }[] = [];
  try {
    for (const impl of all) {
      const [sPort, cPort] = (await freePorts(2)) as [number, number];
      const s = await impl.server(`tp-${impl.key}-server`, sPort, iperfPort);
      const c = await impl.client(`tp-${impl.key}-client`, cPort, sPort);
      pairs.push({ impl, s, c, port: cPort });
    }
    // Rounds, the pairs taking turns, so that a burst of other work on the machine does not land on one
    // of them only; the report gives each pair's median round (and the spread).
    const runs = new Map<string, Run[]>();
    const add = (key: string, run: Run) => runs.set(key, [...(runs.get(key) ?? []), run]);
    for (let round = 1; round <= THROUGHPUT_ROUNDS; round++) {
      log(`throughput round ${round}: iperf3 direct, ${IPERF_SECONDS} s`);
      const d = iperf(iperfPort, IPERF_SECONDS);
      add("direct", { gbits: d.bitsPerSecond / 1e9, bytes: d.bytes, client: 0, server: 0, wall: d.seconds });
      for (const { impl, s, c, port } of pairs) {
        log(`throughput round ${round}: ${impl.label} pair, ${IPERF_SECONDS} s`);
        await sleep(SETTLE_MS);
        const cpu0 = { client: c.cpuSeconds(), server: s.cpuSeconds() };
        const t0 = now();
        const r = iperf(port, IPERF_SECONDS);
        const wall = (now() - t0) / 1000;
        add(impl.key, {
          gbits: r.bitsPerSecond / 1e9,
          bytes: r.bytes,
          client: c.cpuSeconds() - cpu0.client,
          server: s.cpuSeconds() - cpu0.server,
          wall,
        });
      }
    }
    const row = (key: ImplKey | "direct", label: string): Throughput => {
      const list = [...(runs.get(key) ?? [])].sort((a, b) => a.gbits - b.gbits);
      const m = list[Math.floor(list.length / 2)] as Run;
      const gb = m.bytes / 1e9;
      return {
        key,
        label,
        gbits: m.gbits,
        range: [list[0]?.gbits ?? m.gbits, list.at(-1)?.gbits ?? m.gbits],
        bytes: m.bytes,
        cpuPerGb: key === "direct" ? {} : { client: m.client / gb, server: m.server / gb },
        cores: key === "direct" ? {} : { client: m.client / m.wall, server: m.server / m.wall },
      };
    };
    return [
      row("direct", "no tunnel (iperf3 straight to iperf3)"),
      ...pairs.map(({ impl }) => row(impl.key, `${impl.label} client + server`)),
    ];
  } finally {
    await stopAll(pairs.flatMap((p) => [p.c, p.s]));
    await server.stop();
  }
}

interface Running {
  impl: Impl;
  server: Proc;
  client: Proc;
  serverPort: number;
  clientPort: number;
}

interface HandshakeRow {
  impl: Impl;
  negotiated: string;
  full: RateResult;
  resumed: RateResult;
}

async function handshakePhase(running: Running[]): Promise<HandshakeRow[]> {
  const out: HandshakeRow[] = [];
  for (const r of running) {
    const neg = await negotiated(r.serverPort);
    log(`handshakes: ${r.impl.label} server, full, ${CONCURRENCY} in flight, ${SECONDS} s`);
    const full = await rateRun(() => tlsRequest(r.serverPort, false), { server: r.server });
    log(`handshakes: ${r.impl.label} server, resumed`);
    await tlsRequest(r.serverPort, false); // a fresh ticket
    const resumed = await rateRun(() => tlsRequest(r.serverPort, true), { server: r.server });
    out.push({ impl: r.impl, negotiated: neg, full, resumed });
  }
  return out;
}

interface ClientRow {
  impl: Impl;
  rate: RateResult;
  /** The share of the server end's connections that resumed a session, when it tells (mtls /metrics). */
  serverResumed?: number;
}

/** The mtls server end's own counters (its /metrics): connections accepted and sessions resumed. */
async function mtlsCounters(p: Proc): Promise<{ total: number; resumed: number } | undefined> {
  const port = (p as Proc & { statusPort?: number }).statusPort;
  if (!port) return undefined;
  try {
    const text = await (await fetch(`http://${HOST}:${port}/metrics`)).text();
    const read = (name: string) =>
      Number(new RegExp(`^${name}\\{[^}]*\\}\\s+(\\d+)`, "m").exec(text)?.[1] ?? Number.NaN);
    return {
      total: read("mtls_tunnel_connections_total"),
      resumed: read("mtls_tunnel_sessions_resumed_total"),
    };
  } catch {
    return undefined;
  }
}

async function clientPhase(running: Running[]): Promise<ClientRow[]> {
  const out: ClientRow[] = [];
  for (const r of running) {
    log(`through the client end: ${r.impl.label}, new connection per request, ${CONCURRENCY} in flight`);
    const before = await mtlsCounters(r.server);
    const rate = await rateRun(() => plainRequest(r.clientPort), { client: r.client, server: r.server });
    const after = await mtlsCounters(r.server);
    const share =
      before && after ? (after.resumed - before.resumed) / (after.total - before.total) : undefined;
    out.push({
      impl: r.impl,
      rate,
      ...(share !== undefined && Number.isFinite(share) ? { serverResumed: share } : {}),
    });
  }
  return out;
}

interface LatencyRow {
  label: string;
  key: ImplKey | "direct";
  p50: number;
  p99: number;
}

async function latencyPhase(running: Running[], echoPort: number): Promise<LatencyRow[]> {
  const out: LatencyRow[] = [];
  log(`latency: direct, ${PINGS} round trips`);
  const d = await pingPong(echoPort, PINGS);
  out.push({
    key: "direct",
    label: "no tunnel (straight to the echo server)",
    p50: percentile(d, 50),
    p99: percentile(d, 99),
  });
  for (const r of running) {
    log(`latency: ${r.impl.label} pair`);
    const l = await pingPong(r.clientPort, PINGS);
    out.push({
      key: r.impl.key,
      label: `${r.impl.label} client + server`,
      p50: percentile(l, 50),
      p99: percentile(l, 99),
    });
  }
  return out;
}

interface IdleRow {
  label: string;
  key: ImplKey;
  n: number;
  openSeconds: number;
  /** RSS before and with the connections open, MB, per process. */
  before: Record<string, number>;
  after: Record<string, number>;
}

async function idleFor(
  label: string,
  key: ImplKey,
  watch: Record<string, Proc>,
  open: () => net.Socket,
  n: number,
): Promise<IdleRow> {
  log(`idle: ${n} connections through ${label}`);
  const before = Object.fromEntries(Object.entries(watch).map(([k, p]) => [k, p.memoryMb()]));
  const t0 = now();
  const held = await openIdle(n, open);
  const openSeconds = (now() - t0) / 1000;
  await sleep(1000);
  const after = Object.fromEntries(Object.entries(watch).map(([k, p]) => [k, p.memoryMb()]));
  for (const s of held) s.destroy();
  await sleep(1500);
  return { label, key, n, openSeconds, before, after };
}

async function idlePhase(running: Running[], max: number): Promise<IdleRow[]> {
  const out: IdleRow[] = [];
  for (const r of running) {
    const n = r.impl.key === "mtls" ? max : Math.min(max, IDLE_OTHERS);
    if (r.impl.key === "nginx") {
      // nginx's server end, from this process with session resumption (as the tunnel clients do).
      await tlsRequest(r.serverPort, false);
      out.push(
        await idleFor(
          "nginx stream server end (TLS straight from the driver, resumed)",
          "nginx",
          { server: r.server },
          () => tlsConnect(r.serverPort, true),
          n,
        ),
      );
    } else {
      out.push(
        await idleFor(
          `${r.impl.label} client + server`,
          r.impl.key,
          { client: r.client, server: r.server },
          () => net.connect({ host: HOST, port: r.clientPort, noDelay: true }),
          n,
        ),
      );
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// report

const fmt = (n: number, digits = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : "–";
const ratio = (a: number | undefined, b: number | undefined) =>
  a !== undefined && b !== undefined && b > 0 && Number.isFinite(a / b) ? `${(a / b).toFixed(2)}×` : "–";
const yesNo = (b: boolean) => (b ? "**yes**" : "**no**");

interface Results {
  m: ReturnType<typeof machine>;
  end: { load: string; cpuPressure: string };
  fdLimit: number;
  throughput?: Throughput[];
  handshakes?: HandshakeRow[];
  client?: ClientRow[];
  latency?: LatencyRow[];
  idle?: IdleRow[];
}

function report(r: Results): string {
  const { m } = r;
  const lines: string[] = [
    `Measured ${m.date} (code: ${m.code}, built to dist/) on ${m.nproc} CPU cores (${m.model}), Linux ${m.kernel}; Node ${m.node} (OpenSSL ${m.nodeOpenssl}); ${m.openssl}; ${m.stunnel}; nginx ${m.nginx}; ${m.iperf3}.`,
    `Load average ${m.load} at the start${m.cpuPressure ? `, CPU pressure (PSI some avg60) ${m.cpuPressure}%` : ""}; at the end ${r.end.load}${r.end.cpuPressure ? `, ${r.end.cpuPressure}%` : ""}.`,
    "Everything on 127.0.0.1, TLS 1.3 only, one ECDSA P-256 CA (root + intermediate) for all, client certificate required and verified",
    `by every server end. mtls runs as the built CLI with a SPIFFE-pattern allow rule, its default JSON log line per connection and`,
    "a status port; stunnel and nginx run with their default logging. Ratios are mtls over the other.",
    "",
  ];

  const byKey = <T extends { key?: string; impl?: Impl }>(rows: T[] | undefined, k: string) =>
    rows?.find((x) => (x.key ?? x.impl?.key) === k);

  if (r.throughput) {
    const t = r.throughput;
    const mt = byKey(t, "mtls");
    lines.push(
      `**Bulk throughput** through a client end + server end pair: one iperf3 stream (128 KiB writes), ${THROUGHPUT_ROUNDS} rounds of ${IPERF_SECONDS} s`,
      "with the pairs taking turns; the median round is shown, with the slowest and fastest. The iperf3 client and server run",
      "on the same machine, so four busy processes share the cores. CPU per GB: seconds of CPU each tunnel process spent per GB",
      "carried in that round (lower is better; a steadier measure than the rate when the cores are shared).",
      "",
      "| Pair | Gbit/s | Rounds | mtls / this | Client end CPU s/GB | Server end CPU s/GB | Client end, cores | Server end, cores |",
      "|---|---:|---:|---:|---:|---:|---:|---:|",
      ...t.map(
        (x) =>
          `| ${x.key === "mtls" ? `**${x.label}**` : x.label} | ${fmt(x.gbits, 2)} | ${fmt(x.range[0], 1)}–${fmt(x.range[1], 1)} | ${x.key === "mtls" || x.key === "direct" ? "" : ratio(mt?.gbits, x.gbits)} | ${fmt(x.cpuPerGb.client ?? Number.NaN, 2)} | ${fmt(x.cpuPerGb.server ?? Number.NaN, 2)} | ${fmt(x.cores.client ?? Number.NaN, 2)} | ${fmt(x.cores.server ?? Number.NaN, 2)} |`,
      ),
      "",
    );
  }

  if (r.handshakes) {
    const h = r.handshakes;
    const mt = byKey(h, "mtls");
    lines.push(
      `**Handshakes at the server end**: this process connects straight to each server end with the client certificate, ${CONCURRENCY} connections`,
      `in flight for ${SECONDS} s, each connection one 32-byte request echoed by the target behind the server, then closed. "Full": no`,
      `session offered; "resumed": the last TLS 1.3 ticket offered (PSK with (EC)DHE, OpenSSL's default). Server CPU = utime+stime of the`,
      "server process(es) over the run, divided by connections: the handshake, the connection to the target, the echo and the close.",
      "The client-side work is the same for every server (the last column shows it).",
      "",
      "| Server end | Negotiated | Full: server CPU/conn | Full: conn/s | Resumed: server CPU/conn | Resumed: conn/s | Resumed share | Full ÷ resumed CPU | Driver CPU/conn (full) |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|",
      ...h.map(
        (x) =>
          `| ${x.impl.key === "mtls" ? `**${x.impl.label}**` : x.impl.label} | ${x.negotiated} | ${fmt(x.full.cpuUs.server ?? Number.NaN)} µs | ${fmt(x.full.perSec)} | ${fmt(x.resumed.cpuUs.server ?? Number.NaN)} µs | ${fmt(x.resumed.perSec)} | ${x.resumed.ops ? `${Math.round((x.resumed.resumed / x.resumed.ops) * 100)}%` : "–"} | ${ratio(x.full.cpuUs.server, x.resumed.cpuUs.server)} | ${fmt(x.full.driverUs)} µs |`,
      ),
      "",
      "| mtls over … | Full: server CPU/conn | Full: conn/s | Resumed: server CPU/conn | Resumed: conn/s |",
      "|---|---:|---:|---:|---:|",
      ...h
        .filter((x) => x.impl.key !== "mtls")
        .map(
          (x) =>
            `| ${x.impl.label} | ${ratio(mt?.full.cpuUs.server, x.full.cpuUs.server)} | ${ratio(mt?.full.perSec, x.full.perSec)} | ${ratio(mt?.resumed.cpuUs.server, x.resumed.cpuUs.server)} | ${ratio(mt?.resumed.perSec, x.resumed.perSec)} |`,
        ),
      "",
    );
    const errs = h.flatMap((x) =>
      [x.full, x.resumed]
        .filter((q) => q.errors)
        .map((q) => `${x.impl.label}: ${q.errors} errors (${q.firstError})`),
    );
    if (errs.length) lines.push(`Errors: ${errs.join("; ")}.`, "");
  }

  if (r.client) {
    const c = r.client;
    lines.push(
      `**New connections through the client end** (each client end keeps its TLS 1.3 session and resumes it): a plain connection to the`,
      `client end, one 32-byte request echoed through the server end, close; ${CONCURRENCY} in flight for ${SECONDS} s. Latency: connect to echo,`,
      `at ${CONCURRENCY} in flight.`,
      "",
      "| Pair | Conn/s | Client end CPU/conn | Server end CPU/conn | Latency p50 | p99 | Server saw resumed |",
      "|---|---:|---:|---:|---:|---:|---:|",
      ...c.map(
        (x) =>
          `| ${x.impl.key === "mtls" ? `**${x.impl.label}**` : x.impl.label} | ${fmt(x.rate.perSec)} | ${fmt(x.rate.cpuUs.client ?? Number.NaN)} µs | ${fmt(x.rate.cpuUs.server ?? Number.NaN)} µs | ${fmt(x.rate.p50, 2)} ms | ${fmt(x.rate.p99, 2)} ms | ${x.serverResumed !== undefined ? `${Math.round(x.serverResumed * 100)}%` : "not reported"} |`,
      ),
      "",
    );
    const errs = c
      .filter((x) => x.rate.errors)
      .map((x) => `${x.impl.label}: ${x.rate.errors} errors (${x.rate.firstError})`);
    if (errs.length) lines.push(`Errors: ${errs.join("; ")}.`, "");
  }

  if (r.latency) {
    const l = r.latency;
    const d = byKey(l, "direct");
    lines.push(
      `**Latency** of a 64-byte request/response on an open connection through the pair (${PINGS} sequential round trips after a warm-up;`,
      "added = over the same echo without a tunnel).",
      "",
      "| Path | p50 | p99 | Added p50 | Added p99 |",
      "|---|---:|---:|---:|---:|",
      ...l.map(
        (x) =>
          `| ${x.key === "mtls" ? `**${x.label}**` : x.label} | ${fmt(x.p50)} µs | ${fmt(x.p99)} µs | ${x.key === "direct" ? "" : `${fmt(x.p50 - (d?.p50 ?? 0))} µs`} | ${x.key === "direct" ? "" : `${fmt(x.p99 - (d?.p99 ?? 0))} µs`} |`,
      ),
      "",
    );
  }

  if (r.idle) {
    const i = r.idle;
    const limited = i.some((x) => x.key === "mtls" && x.n < IDLE);
    lines.push(
      `**Idle connections**: connections opened through each tunnel (64 at a time, each proven end to end by one echo), then held`,
      "for 1 s; memory = proportional set size (PSS, from /proc/PID/smaps_rollup; all of nginx's processes), before and with them",
      `open. Per connection = the growth over the connections; at ${fmt(IDLE)} = before + ${fmt(IDLE)} × per connection.`,
      `mtls is measured at the most connections this run allows, the others at ${fmt(IDLE_OTHERS)} (their cost per connection, in less time).`,
      ...(limited
        ? [
            `(The descriptor limit here is ${fmt(r.fdLimit)} per process and cannot be raised, and a tunnel end holds two descriptors per`,
            `connection, so ${fmt(i.find((x) => x.key === "mtls")?.n ?? 0)} is the most one process can carry.)`,
          ]
        : []),
      "",
      "| Through | Connections | Opened in | Client end: before → with | per conn | Server end: before → with | per conn | Server end at 10,000 |",
      "|---|---:|---:|---:|---:|---:|---:|---:|",
      ...i.map((x) => {
        const perKb = (k: string) => (((x.after[k] as number) - (x.before[k] as number)) * 1024) / x.n;
        const per = (k: string) => (x.after[k] !== undefined ? `${fmt(perKb(k), 1)} KB` : "–");
        const tot = (k: string) =>
          x.after[k] !== undefined ? `${fmt(x.before[k] as number)} → ${fmt(x.after[k] as number)} MB` : "–";
        const at = (k: string) =>
          x.after[k] !== undefined ? `${fmt((x.before[k] as number) + (perKb(k) * IDLE) / 1024)} MB` : "–";
        return `| ${x.key === "mtls" ? `**${x.label}**` : x.label} | ${fmt(x.n)} | ${fmt(x.openSeconds, 1)} s | ${tot("client")} | ${per("client")} | ${tot("server")} | ${per("server")} | ${at("server")} |`;
      }),
      "",
    );
  }

  // goals
  const goals: string[] = [];
  const tp = r.throughput;
  if (tp) {
    const a = byKey(tp, "mtls")?.gbits;
    const b = byKey(tp, "stunnel")?.gbits;
    if (a !== undefined && b !== undefined)
      goals.push(
        `| Throughput ≥ ${GOALS.throughput}× stunnel's | ${ratio(a, b)} (${fmt(a, 2)} vs ${fmt(b, 2)} Gbit/s) | ${yesNo(a / b >= GOALS.throughput)} |`,
      );
  }
  const hs = r.handshakes;
  if (hs) {
    const a = byKey(hs, "mtls");
    const n = byKey(hs, "nginx");
    if (a && n) {
      const ac = a.full.cpuUs.server as number;
      const nc = n.full.cpuUs.server as number;
      goals.push(
        `| Server CPU per full handshake ≤ nginx's | ${fmt(ac)} µs vs ${fmt(nc)} µs (${ratio(ac, nc)}) | ${yesNo(ac <= nc)} |`,
      );
    }
    if (a) {
      const q = (a.full.cpuUs.server as number) / (a.resumed.cpuUs.server as number);
      goals.push(
        `| Resumed handshakes ≥ ${GOALS.resumedCheaper}× cheaper than full (mtls server CPU, direct) | ${q.toFixed(2)}× | ${yesNo(q >= GOALS.resumedCheaper)} |`,
      );
      const via = byKey(r.client, "mtls");
      if (via) {
        const q2 = (a.full.cpuUs.server as number) / (via.rate.cpuUs.server as number);
        goals.push(
          `| … the same through the mtls tunnel client (server CPU per full direct ÷ per resumed via client) | ${q2.toFixed(2)}× | ${yesNo(q2 >= GOALS.resumedCheaper)} |`,
        );
      }
    }
  }
  const idle = byKey(r.idle, "mtls");
  if (idle) {
    const at = (k: string) =>
      (idle.before[k] as number) + (((idle.after[k] as number) - (idle.before[k] as number)) / idle.n) * IDLE;
    const s = at("server");
    const c = at("client");
    const measured = idle.n < IDLE ? ` (projected from ${fmt(idle.n)})` : "";
    goals.push(
      `| ${fmt(IDLE)} idle connections < ${GOALS.idleMb} MB | server end ${fmt(s)} MB, client end ${fmt(c)} MB${measured} | ${yesNo(s < GOALS.idleMb && c < GOALS.idleMb)} |`,
    );
  }
  if (goals.length) lines.push("| Goal (issue 3) | mtls | Met |", "|---|---|---|", ...goals, "");
  return lines.join("\n").replace(/\n+$/, "");
}

function writeDoc(section: string): void {
  const block = `${START}\n${section}\n${END}`;
  const old = existsSync(docFile) ? readFileSync(docFile, "utf8") : "# Benchmarks\n";
  const a = old.indexOf(START);
  const b = old.indexOf(END);
  const text =
    a >= 0 && b > a
      ? old.slice(0, a) + block + old.slice(b + END.length)
      : `${old.replace(/\n*$/, "\n\n")}${[
          "## Tunnels",
          "",
          "`node --import tsx bench/tunnel.ts` (bench/tunnel.ts; `npm run build` first): the mtls tunnel as the built CLI runs it,",
          "next to stunnel and nginx `stream`, all in one run on loopback: bulk throughput through a client + server pair, full and",
          "resumed mTLS handshakes (server CPU per handshake, handshakes per second), new connections through the client end,",
          "request/response latency, and memory with 10,000 idle connections. Goals (issue 3): throughput at least 1.2x stunnel's,",
          "server CPU per full handshake no more than nginx's, resumed handshakes at least 3x cheaper than full ones, 10,000 idle",
          "connections in under 300 MB.",
          "",
          block,
          "",
        ].join("\n")}`;
  mkdirSync(dirname(docFile), { recursive: true });
  writeFileSync(docFile, text);
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  for (const cmd of ["stunnel4", "nginx", "iperf3"]) {
    if (!tryRun("sh", ["-c", `command -v ${cmd}`])) throw new Error(`${cmd} is not installed`);
  }
  if (!existsSync(cli)) throw new Error("dist/cli/main.js is missing: run `npm run build` first");
  const newestSrc = Math.max(...listTs(join(root, "src")).map((p) => statSync(p).mtimeMs));
  if (!process.env.BENCH_MTLS_CLI && statSync(cli).mtimeMs < newestSrc - 1000)
    log("warning: dist/ is older than src/ — run `npm run build` so the CLI measured is the current code");

  const m = machine();
  const fdLimit = raiseFdLimit(200_000);
  // A tunnel end holds two descriptors per connection, and this sandbox may not lift the limit.
  const idleN = Math.min(IDLE, Math.floor((fdLimit - 200) / 200) * 100);
  const dir = mkdtempSync(join(tmpdir(), "mtls-bench-tunnel-"));
  const results: Results = { m, end: { load: "", cpuPressure: "" }, fdLimit };
  const t0 = now();
  try {
    log("certificates (ECDSA P-256, root + intermediate)");
    const pki = await createTestPki("mtls-bench-pki-");
    let files: Files;
    try {
      const s = await pki.issue("server", "bench-server", {
        sans: [makeSan("dns", SERVER_NAME), makeSan("ip", HOST)],
        outDir: join(dir, "certs"),
      });
      const c = await pki.issue("client", "bench-client", {
        sans: [makeSan("uri", "spiffe://bench.test/user/alice")],
        outDir: join(dir, "certs"),
      });
      files = { dir, serverCert: s.cert, serverKey: s.key, clientCert: c.cert, clientKey: c.key, ca: s.ca };
    } finally {
      await pki.close();
    }
    driverContext = tls.createSecureContext({
      cert: readFileSync(files.clientCert),
      key: readFileSync(files.clientKey),
      ca: readFileSync(files.ca),
    });
    const wanted = (process.env.BENCH_IMPLS ?? "mtls,stunnel,nginx,naive").split(",").map((k) => k.trim());
    const all = wanted.flatMap((k) => impls(files).filter((i) => i.key === k));

    if (runs("throughput")) results.throughput = await throughputPhase(all, dir);

    if (runs("handshake") || runs("client") || runs("latency") || runs("idle")) {
      const ports = await freePorts(all.length * 3 + 1);
      const echoPorts = ports.slice(0, all.length + 1);
      const echo = await waitPort(
        start("echo", process.execPath, [peersScript, "echo", ...echoPorts.map(String)], dir),
        echoPorts[0] as number,
      );
      const running: Running[] = [];
      try {
        for (const [i, impl] of all.entries()) {
          const serverPort = ports[all.length + 1 + 2 * i] as number;
          const clientPort = ports[all.length + 2 + 2 * i] as number;
          const server = await impl.server(`${impl.key}-server`, serverPort, echoPorts[i + 1] as number);
          const client = await impl.client(`${impl.key}-client`, clientPort, serverPort);
          running.push({ impl, server, client, serverPort, clientPort });
        }
        if (runs("handshake")) results.handshakes = await handshakePhase(running);
        if (runs("client")) results.client = await clientPhase(running);
        if (runs("latency")) results.latency = await latencyPhase(running, echoPorts[0] as number);
        if (runs("idle")) results.idle = await idlePhase(running, idleN);
      } finally {
        await stopAll(running.flatMap((r) => [r.client, r.server]));
        await echo.stop();
      }
    }
  } finally {
    await stopAll(procs);
    if (KEEP) log(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
  results.end = {
    load: loadavg()
      .map((l) => l.toFixed(2))
      .join(" "),
    cpuPressure: cpuPressure(),
  };
  log(`done in ${((now() - t0) / 1000).toFixed(0)} s`);
  const section = report(results);
  process.stdout.write(`${section}\n`);
  if (ONLY.size === 0 && !process.env.BENCH_MTLS_CLI && !process.env.BENCH_IMPLS) {
    writeDoc(section);
    log(`wrote ${docFile}`);
  }
}

function listTs(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return listTs(p);
    return e.name.endsWith(".ts") && !e.name.endsWith(".test.ts") ? [p] : [];
  });
}

// Every child goes with us, whatever happens.
const killAll = () => {
  for (const p of procs) if (p.alive) p.child.kill("SIGKILL");
};
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

await main();
