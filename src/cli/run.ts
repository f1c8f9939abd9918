import type { Logger, StatusServer } from "../observe/index.js";
import { formatAddress } from "../tunnel/index.js";

/** Where a status server listens, as people write it: `127.0.0.1:9090` or `unix:/run/x.sock`. */
export function formatStatus(status: StatusServer): string {
  const a = status.address;
  return typeof a === "object" ? formatAddress({ kind: "tcp", host: a.address, port: a.port }) : `unix:${a}`;
}

/** `; status on ADDR` for a start-up line, or nothing without a status server. */
export const statusSuffix = (status: StatusServer | undefined): string =>
  status ? `; status on ${formatStatus(status)}` : "";

export interface ServeUntilSignalOptions {
  log: Logger;
  /** SIGHUP: re-read the TLS files; resolves whether anything changed. */
  reloadFiles: () => Promise<boolean>;
  /** Stops accepting and drains open connections for up to `deadlineMs` (0: close them now). */
  stop: (deadlineMs: number) => Promise<unknown>;
  deadlineMs: number;
  /** Called with what `stop` resolved to, before the signal handlers are removed. */
  onStopped?: (result: unknown) => void;
}

/**
 * The life of a long-running command (tunnel, gateway) after it started: SIGHUP reloads the TLS
 * files; SIGTERM or SIGINT stops it gracefully within the deadline, and a second one closes every
 * connection at once. Resolves when the stop is done (or failed, which is logged).
 */
export function serveUntilSignal(opts: ServeUntilSignalOptions): Promise<void> {
  const { log } = opts;
  return new Promise<void>((resolve) => {
    let signals = 0;
    const onHup = () => {
      log.info("SIGHUP: reloading the TLS files");
      opts.reloadFiles().then(
        (changed) => log.info({ changed }, changed ? "TLS files reloaded" : "TLS files unchanged"),
        (err: Error) => log.warn({ err: err.message }, "reload failed"),
      );
    };
    const onStop = (signal: NodeJS.Signals) => {
      signals++;
      if (signals > 1) {
        log.warn({ signal }, "second signal: closing every connection now");
        void opts.stop(0);
        return;
      }
      log.info({ signal, deadlineMs: opts.deadlineMs }, "shutting down");
      opts.stop(opts.deadlineMs).then(
        (result) => {
          opts.onStopped?.(result);
          process.off("SIGHUP", onHup);
          process.off("SIGTERM", onStop);
          process.off("SIGINT", onStop);
          resolve();
        },
        (err: Error) => {
          log.error({ err: err.message }, "stop failed");
          resolve();
        },
      );
    };
    process.on("SIGHUP", onHup);
    process.on("SIGTERM", onStop);
    process.on("SIGINT", onStop);
  });
}
