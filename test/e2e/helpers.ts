import { type SpawnOptions, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
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
    child.stdin?.end(opts.input ?? "");
  });
}

/** Runs `mtls ARGS` in `cwd` with a clean MTLS_* environment. */
export function mtls(args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; input?: string }): Promise<RunResult> {
  const env = { ...process.env, ...opts.env };
  for (const k of ["MTLS_STATE", "MTLS_PASSPHRASE"]) if (!opts.env?.[k]) delete env[k];
  return run(process.execPath, [CLI, ...args], { cwd: opts.cwd, env, ...(opts.input ? { input: opts.input } : {}) });
}

export function tempDir(prefix = "mtls-e2e-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
