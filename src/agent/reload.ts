import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import type { ReloadConfig } from "../config/load.js";
import { MtlsError } from "../errors.js";

/** What the reload action learns about the renewed certificate, as environment variables. */
export interface ReloadContext {
  name: string;
  cert: string;
  key: string;
  serial: string;
  notAfter: Date;
}

/** Output of a reload command kept for the log: the first few KiB. */
const OUTPUT_LIMIT = 4096;

/**
 * Runs the reload action after a renewal was written:
 *   - signal: reads the pid from `pidFile` and sends the signal (SIGHUP by default);
 *   - command as a list: run as argv, no shell involved;
 *   - command as a string: run by `/bin/sh -c` with the config's text exactly as written.
 * Nothing from the certificate or the CA is spliced into a command line: the name, files, serial
 * and expiry reach the command as MTLS_CERT_NAME, MTLS_CERT_FILE, MTLS_KEY_FILE, MTLS_CERT_SERIAL
 * and MTLS_CERT_NOT_AFTER. A command that exits non-zero, is killed or outlives its timeout is an
 * E_IO error (the renewal itself stands: the files are in place).
 */
export async function runReload(action: ReloadConfig, ctx: ReloadContext): Promise<string> {
  if (action.kind === "signal") {
    const pid = readPid(action.pidFile);
    try {
      process.kill(pid, action.signal);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new MtlsError(
        "E_IO",
        `cannot send ${action.signal} to pid ${pid} from ${action.pidFile}: ${code === "ESRCH" ? "no such process" : (code ?? (err as Error).message)}`,
        { cause: err },
      );
    }
    return `sent ${action.signal} to pid ${pid}`;
  }
  const [cmd, ...args] = action.shell ? ["/bin/sh", "-c", action.argv[0] as string] : action.argv;
  return runCommand(cmd as string, args, ctx, action.timeoutMs);
}

function readPid(file: string): number {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new MtlsError(
      "E_IO",
      `cannot read the pid file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      { cause: err },
    );
  }
  const t = text.trim();
  if (!/^\d{1,10}$/.test(t) || Number(t) <= 1) {
    throw new MtlsError("E_BAD_INPUT", `the pid file ${file} does not hold a process id`);
  }
  return Number(t);
}

function runCommand(cmd: string, args: string[], ctx: ReloadContext, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let output = "";
    const keep = (d: Buffer) => {
      if (output.length < OUTPUT_LIMIT) output += d.toString("utf8").slice(0, OUTPUT_LIMIT - output.length);
    };
    const child = spawn(cmd, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        MTLS_CERT_NAME: ctx.name,
        MTLS_CERT_FILE: ctx.cert,
        MTLS_KEY_FILE: ctx.key,
        MTLS_CERT_SERIAL: ctx.serial,
        MTLS_CERT_NOT_AFTER: ctx.notAfter.toISOString(),
      },
    });
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    const shown = [cmd, ...args].join(" ");
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(new MtlsError("E_IO", `cannot run the reload command ${shown}: ${err.message}`, { cause: err }));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const out = output.replace(/\s+/g, " ").trim();
      if (timedOut) {
        reject(
          new MtlsError("E_IO", `the reload command ${shown} ran longer than ${timeoutMs} ms and was killed`),
        );
      } else if (code !== 0) {
        const how = signal ? `was killed by ${signal}` : `exited with ${code}`;
        reject(
          new MtlsError("E_IO", `the reload command ${shown} ${how}${out ? `: ${out.slice(0, 300)}` : ""}`),
        );
      } else {
        resolve(out);
      }
    });
  });
}
