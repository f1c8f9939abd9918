import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The built CLI (npm test builds it first), run the way a user runs `mtls`. */
export const CLI = resolve(dirname(fileURLToPath(import.meta.url)), "../../dist/cli/main.js");

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command with a hard timeout; never throws on a non-zero exit. */
export function run(
  cmd: string,
  args: string[],
  opts: SpawnOptions & { input?: string | Buffer; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d) => {
      stdout += d;
    });
    child.stderr?.on("data", (d) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${cmd} ${args.join(" ")} timed out`));
    }, opts.timeoutMs ?? 60_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? -1, stdout, stderr });
    });
    // A child that exits without reading its stdin must not turn into an EPIPE for the caller.
    child.stdin?.on("error", () => {});
    child.stdin?.end(opts.input ?? "");
  });
}

/** Runs `mtls ARGS` in `cwd` with a clean MTLS_* environment. */
export function mtls(
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv; input?: string },
): Promise<RunResult> {
  const env = { ...process.env, ...opts.env };
  for (const k of ["MTLS_STATE", "MTLS_PASSPHRASE", "MTLS_STORE"]) if (!opts.env?.[k]) delete env[k];
  return run(process.execPath, [CLI, ...args], {
    cwd: opts.cwd,
    env,
    ...(opts.input ? { input: opts.input } : {}),
  });
}

export function tempDir(prefix = "mtls-e2e-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

// ---------------------------------------------------------------------------------------------
// Helpers for the CA end-to-end tests (ca-cli.test.ts, interop.test.ts).

/** The repository root, where `node --import tsx` finds tsx and the sources. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * Fails (never skips) when an external tool the tests drive is missing: CI installs them, so a
 * missing one is a broken machine, not a reason to pass.
 */
export async function requireTool(cmd: string, args: string[] = ["-h"]): Promise<void> {
  try {
    await run(cmd, args, { timeoutMs: 10_000 });
  } catch (err) {
    throw new Error(
      `${cmd} is required by the end-to-end tests and could not be run (${(err as Error).message}); ` +
        "install openssl, libnss3-tools and curl (.ci/run does)",
    );
  }
}

/**
 * Asserts the CLI's error contract: the expected exit code, exactly one line on stderr that starts
 * with "mtls: ", no stack trace, and (optionally) a message matching `pattern`.
 */
export function assertCliError(res: RunResult, code: number, pattern?: RegExp): void {
  const lines = res.stderr.split("\n").filter((l) => l.length > 0);
  const show = `exit ${res.code}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`;
  if (res.code !== code) throw new Error(`expected exit ${code}, got ${show}`);
  if (lines.length !== 1) throw new Error(`expected exactly one line on stderr, got ${show}`);
  const [line] = lines as [string];
  if (!line.startsWith("mtls: ")) throw new Error(`stderr does not start with "mtls: ": ${show}`);
  if (/\n\s+at |unexpected error|MtlsError|TypeError|SqliteError/.test(res.stderr))
    throw new Error(`stderr looks like a crash: ${show}`);
  if (pattern && !pattern.test(line)) throw new Error(`stderr does not match ${pattern}: ${show}`);
}

/** Asserts a command succeeded, with its output in the message when it did not. */
export function assertOk(res: RunResult, what = "command"): RunResult {
  if (res.code !== 0)
    throw new Error(`${what} failed with exit ${res.code}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`);
  return res;
}

/** Every file under `dir` (relative paths), recursively. */
export function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const outList: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(join(d, e.name), r);
      else outList.push(r);
    }
  };
  walk(dir, "");
  return outList.sort();
}

/**
 * What a failed or interrupted command may never leave in an output folder: temp files of the
 * atomic writer (`.NAME.RANDOM.tmp`), or a key or PKCS#12 without its certificate. Returns the
 * offending files (empty when clean).
 */
export function partialFiles(dir: string): string[] {
  const files = listFiles(dir);
  const set = new Set(files);
  return files.filter((f) => {
    if (/(^|\/)\.[^/]*\.tmp$/.test(f)) return true;
    const m = /^(.*)\.(key|p12)$/.exec(f);
    return m !== null && !set.has(`${m[1]}.crt`);
  });
}

/** File mode bits (e.g. 0o600). */
export const modeOf = (path: string): number => statSync(path).mode & 0o777;

/** The PEM blocks with this label in `text`, each with its BEGIN/END lines. */
export function pemBlocks(text: string, label: string): string[] {
  const re = new RegExp(`-----BEGIN ${label}-----[\\s\\S]*?-----END ${label}-----\\n?`, "g");
  return text.match(re) ?? [];
}

/** A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const srv = createNetServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolvePromise(port));
    });
  });
}

export interface Background {
  child: ChildProcess;
  /** stdout and stderr so far, interleaved. */
  output(): string;
  /** Resolves with the exit code (or -1 when killed by a signal). */
  exited: Promise<number>;
  /** Kills the process (SIGKILL) and waits for it, at most 5 s. */
  stop(): Promise<void>;
}

/**
 * Starts a long-running process (e.g. `openssl s_server`) with stdin kept open, and waits until its
 * output matches `ready` or it exits; rejects after `timeoutMs`. Always call stop() in a finally.
 */
export function startBackground(
  cmd: string,
  args: string[],
  opts: { cwd?: string; ready: RegExp; timeoutMs?: number },
): Promise<Background> {
  const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  const exited = new Promise<number>((res) => {
    child.on("close", (code) => res(code ?? -1));
  });
  const bg: Background = {
    child,
    output: () => output,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 5_000)))]);
      clearTimeout(timer);
    },
  };
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      void bg.stop();
      reject(new Error(`${cmd} did not become ready in time; output:\n${output}`));
    }, opts.timeoutMs ?? 10_000);
    const onData = (d: Buffer) => {
      output += d.toString();
      if (opts.ready.test(output)) {
        clearTimeout(timer);
        resolvePromise(bg);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited (${code}) before it was ready; output:\n${output}`));
    });
  });
}

/** Resolves with `p`, or rejects after `ms` with a message naming `what`. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]);
}

/** One row of `mtls list --json`. */
export interface ListRow {
  serial: string;
  name: string;
  profile: string;
  subject: string;
  sans: string[];
  keyType: string;
  notBefore: string;
  notAfter: string;
  status: string;
  revokedAt: string | null;
  revocationReason: string | null;
  fingerprint: string;
  certPath: string | null;
  keyPath: string | null;
  expired: boolean;
}

/** `mtls list --json ARGS`, parsed. */
export async function listJson(
  cwd: string,
  args: string[] = [],
  env?: NodeJS.ProcessEnv,
): Promise<ListRow[]> {
  const res = assertOk(
    await mtls(["list", "--json", ...args], { cwd, ...(env ? { env } : {}) }),
    "mtls list",
  );
  return JSON.parse(res.stdout) as ListRow[];
}

/** A running `mtls ca serve`: the HTTPS API's and the public (CRL, OCSP) listener's URLs. */
export interface CaServe {
  bg: Background;
  /** https://127.0.0.1:PORT (the API, mTLS) */
  api: string;
  /** http://127.0.0.1:PORT (/crl, /ocsp, /healthz) */
  pub: string;
}

/** Starts `mtls ca serve ARGS` on free loopback ports in `cwd` and waits (30 s at most) for its banner. */
export async function startCaServe(cwd: string, args: string[]): Promise<CaServe> {
  const bg = await startBackground(
    process.execPath,
    [
      CLI,
      "ca",
      "serve",
      "--listen",
      "127.0.0.1:0",
      "--public-listen",
      "127.0.0.1:0",
      "--log-level",
      "warn",
      ...args,
    ],
    { cwd, ready: /Stop with Ctrl-C/, timeoutMs: 30_000 },
  );
  const m = /CA service: (https:\/\/127\.0\.0\.1:\d+) \(API, mTLS\), (http:\/\/127\.0\.0\.1:\d+)/.exec(
    bg.output(),
  );
  if (!m?.[1] || !m[2]) {
    await bg.stop();
    throw new Error(`mtls ca serve printed no listening addresses:\n${bg.output()}`);
  }
  return { bg, api: m[1], pub: m[2] };
}
