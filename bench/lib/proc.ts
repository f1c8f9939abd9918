/**
 * What every benchmark that runs processes needs, in one place: the machine line of the report, child
 * processes started (optionally pinned with taskset) with their output in a log file and their CPU time
 * read from /proc (the whole process tree, so nginx's and cluster workers count), free ports, waiting
 * for a port or a log line, percentiles, and rewriting one section of docs/benchmarks.md between its
 * markers. bench/scale.ts uses it; bench/ca.ts and bench/gateway.ts carry older copies of the same
 * helpers and can move to this file as they are next rerun.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { availableParallelism, loadavg } from "node:os";
import { join } from "node:path";

export const HOST = "127.0.0.1";

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** 12,345 / 1.50; "–" for NaN and infinities, so a missing figure never reads as a number. */
export const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n)
    ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
    : "–";

/** The p-quantile (0..1) of an ascending list, nearest rank below; NaN when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number;
}

/** A command's trimmed stdout, or its output so far when it fails ("" when it cannot start). */
export function tryRun(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ""}${e.stderr ?? ""}`.trim();
  }
}

/** PSI "some avg60" of the CPU, in percent as text ("" where the kernel has no PSI). */
export const cpuPressure = (): string =>
  existsSync("/proc/pressure/cpu")
    ? (/some avg10=\S+ avg60=(\S+)/.exec(readFileSync("/proc/pressure/cpu", "utf8"))?.[1] ?? "")
    : "";

export const loadAverage = (): string =>
  loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");

export interface Machine {
  nproc: string;
  model: string;
  kernel: string;
  node: string;
  nodeOpenssl: string;
  /** The commit, and how many files under src/ differ from it. */
  code: string;
  date: string;
  load: string;
  cpuPressure: string;
}

/** What the report's first lines say about where and on what code it ran. */
export function machine(root: string): Machine {
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
    code: dirty ? `${head} with ${dirty} uncommitted file(s) in src/` : head,
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    load: loadAverage(),
    cpuPressure: cpuPressure(),
  };
}

/** More runnable work than cores, or CPU pressure above 10%: figures from such a run are provisional. */
export const busy = (m: Pick<Machine, "load" | "nproc" | "cpuPressure">): boolean =>
  Number(m.load.split(" ")[0]) > Number(m.nproc) || Number(m.cpuPressure || 0) > 10;

/** The report's opening line: date, code, cores, kernel, Node. */
export const machineLine = (m: Machine, extra = ""): string =>
  `Measured ${m.date} (code: ${m.code}, built to dist/) on ${m.nproc} CPU cores (${m.model}), Linux ${m.kernel}; Node ${m.node} (OpenSSL ${m.nodeOpenssl})${extra}.`;

// ---------------------------------------------------------------------------------------------
// processes

export const CLK_TCK = Number(tryRun("getconf", ["CLK_TCK"])) || 100;

/** Parent pid and utime+stime (clock ticks) of a process, from /proc; undefined once it is gone. */
export function readStat(pid: number): { ppid: number; ticks: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
  } catch {
    return undefined;
  }
}

/** `pid` and all its descendants, parents first. */
export function processTree(pid: number): number[] {
  const byParent = new Map<number, number[]>();
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const st = readStat(Number(e));
    if (!st) continue;
    byParent.set(st.ppid, [...(byParent.get(st.ppid) ?? []), Number(e)]);
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of byParent.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

/** Every process whose command name (/proc/PID/comm) is `name`, e.g. "postgres" (server and backends). */
export function pidsNamed(name: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/comm`, "utf8").trim() === name) out.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** CPU seconds (user + system) of a set of processes, as far as they still exist. */
export const cpuSecondsOf = (pids: number[]): number =>
  pids.reduce((sum, p) => sum + (readStat(p)?.ticks ?? 0), 0) / CLK_TCK;

/** A child process started by Procs.start: its log file, its CPU time, a stop that always ends it. */
export class Proc {
  readonly exited: Promise<number | null>;
  private code: number | null | undefined;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly logFile: string,
  ) {
    this.exited = new Promise((r) =>
      child.once("exit", (code, signal) => {
        this.code = code ?? (signal ? -1 : null);
        r(code);
      }),
    );
  }

  get alive(): boolean {
    return this.code === undefined;
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** The process and its descendants (workers, or the real command under taskset's exec). */
  pids(): number[] {
    return this.alive ? processTree(this.pid) : [];
  }

  cpuSeconds(): number {
    return cpuSecondsOf(this.pids());
  }

  log(): string {
    try {
      return readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }

  tail(lines = 10): string {
    return this.log().split("\n").slice(-lines).join("\n");
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.alive) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.kill(), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** SIGKILL to the process and every descendant (a killed parent can leave workers behind). */
  kill(): void {
    if (!this.alive) return;
    for (const pid of this.pids().reverse()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
  }
}

export interface StartOptions {
  /** CPUs for `taskset -c` (e.g. "0" or "0,1"); unpinned when absent. */
  cpus?: string | undefined;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/**
 * The child processes of one benchmark run. Every process it starts is killed when the benchmark
 * exits, however it exits (an exception, Ctrl-C), so no server outlives its run.
 */
export class Procs {
  readonly all: Proc[] = [];

  constructor(readonly dir: string) {
    const killAll = () => {
      for (const p of this.all) p.kill();
    };
    process.on("exit", killAll);
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      process.once(sig, () => {
        killAll();
        process.exit(130);
      });
    }
  }

  /** Starts `cmd` (under `taskset -c CPUS` when pinned), stdout and stderr to DIR/NAME.log. */
  start(name: string, cmd: string, args: string[], opts: StartOptions = {}): Proc {
    const logFile = join(this.dir, `${name}.log`);
    const fd = openSync(logFile, "a");
    const [c, a] = opts.cpus ? ["taskset", ["-c", opts.cpus, cmd, ...args]] : [cmd, args];
    // An env entry set to undefined removes the variable (spawn would pass the text "undefined").
    const env = Object.fromEntries(
      Object.entries({ ...process.env, ...opts.env }).filter(([, v]) => v !== undefined),
    );
    const child = spawn(c, a, { stdio: ["ignore", fd, fd], cwd: opts.cwd ?? this.dir, env });
    closeSync(fd);
    const p = new Proc(name, child, logFile);
    this.all.push(p);
    return p;
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.all.map((p) => p.stop()));
  }
}

// ---------------------------------------------------------------------------------------------
// ports and readiness

/** `n` distinct ports free on 127.0.0.1 right now (held together while picked, then released). */
export async function freePorts(n: number, host = HOST): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, async () => {
      const s = net.createServer().listen(0, host);
      await once(s, "listening");
      return s;
    }),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Waits until something accepts TCP connections on the port (a bare connect, closed at once). */
export async function waitPort(p: Proc, port: number, ms = 20_000, host = HOST): Promise<Proc> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!p.alive) throw new Error(`${p.name} exited:\n${p.tail()}`);
    const up = await new Promise<boolean>((r) => {
      const s = net.connect(port, host);
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

/** Waits until the process's log matches `pattern` (a start-up line). */
export async function waitLog(p: Proc, pattern: RegExp, ms = 20_000): Promise<Proc> {
  const end = Date.now() + ms;
  while (!pattern.test(p.log())) {
    if (!p.alive) throw new Error(`${p.name} exited:\n${p.tail()}`);
    if (Date.now() > end)
      throw new Error(`${p.name}: no ${pattern} in its log within ${ms} ms:\n${p.tail()}`);
    await sleep(50);
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// docs/benchmarks.md

export interface DocSection {
  /** docs/benchmarks.md (absolute). */
  file: string;
  /** The marker name: the section lies between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`. */
  name: string;
  /** Heading and prose put before the markers the first time the section is written. */
  intro: string;
  /** The generated text between the markers. */
  body: string;
}

/** Rewrites the text between the section's markers, or appends intro + section when there are none. */
export function writeDoc(s: DocSection): void {
  const start = `<!-- bench:${s.name}:start -->`;
  const end = `<!-- bench:${s.name}:end -->`;
  const block = `${start}\n${s.body}\n${end}`;
  const old = existsSync(s.file) ? readFileSync(s.file, "utf8") : "# Benchmarks\n";
  const a = old.indexOf(start);
  const b = old.indexOf(end);
  const text =
    a >= 0 && b > a
      ? old.slice(0, a) + block + old.slice(b + end.length)
      : `${old.replace(/\n*$/, "\n\n")}${s.intro.replace(/\n*$/, "\n\n")}${block}\n`;
  writeFileSync(s.file, text);
}
