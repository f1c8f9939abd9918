import { type DestinationStream, type LevelWithSilent, type Logger, pino } from "pino";
import { MtlsError } from "../errors.js";

export type { Logger } from "pino";

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

export interface LoggerOptions {
  /** fatal, error, warn, info (default), debug, trace or silent. */
  level?: string;
  /** Written as `name` on every line, e.g. "tunnel-server". */
  name?: string;
  /** Where the JSON lines go; default stderr (fd 2), so stdout stays for program output. */
  destination?: DestinationStream;
}

/**
 * Field names that would hold secrets if a caller ever passed them by mistake. Nothing in mtls
 * logs keys or passphrases on purpose; this is the second line of defence.
 */
const REDACT = [
  "key",
  "privateKey",
  "passphrase",
  "password",
  "secret",
  "token",
  "*.key",
  "*.privateKey",
  "*.passphrase",
  "*.password",
  "*.secret",
  "*.token",
];

export function parseLogLevel(text: string): LevelWithSilent {
  const level = text.toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new MtlsError("E_USAGE", `invalid log level "${text}" (one of ${LOG_LEVELS.join(", ")})`);
  }
  return level as LevelWithSilent;
}

/** A pino logger writing one JSON object per line (ISO time) to stderr. */
export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level: parseLogLevel(opts.level ?? "info"),
      ...(opts.name ? { name: opts.name } : {}),
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT, censor: "[redacted]" },
    },
    opts.destination ?? pino.destination({ dest: 2, sync: true }),
  );
}

/** A logger that writes nothing, for library callers and tests that do not care. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
