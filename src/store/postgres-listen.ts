import pg from "pg";
import { MtlsError } from "../errors.js";
import type { RevocationWatch, RevocationWatchState } from "./types.js";

/** First reconnect delay after a loss; doubled after each failed attempt up to RECONNECT_MAX_MS. */
export const RECONNECT_MIN_MS = 250;
export const RECONNECT_MAX_MS = 5_000;

export interface ListenOptions {
  /** pg.Client settings of the listening connection (connection string, timeouts, name). */
  client: pg.ClientConfig;
  /** An identifier PostgreSQL takes unquoted (lowercase letters, digits, underscores). */
  channel: string;
  onWake: () => void;
  onState?: ((s: RevocationWatchState) => void) | undefined;
  minDelayMs?: number;
  maxDelayMs?: number;
}

/**
 * LISTENs on `channel` on a connection of its own (never one of the pool's: LISTEN belongs to a
 * session, and a pooled session is handed to other work). When the connection fails or the server
 * drops it (restart, pg_terminate_backend), it reconnects after 250 ms, then 500 ms, ... up to 5 s
 * between attempts, until close(). After every successful LISTEN it calls onWake, because a
 * notification sent while no session listened is gone: the caller re-reads what it may have missed.
 * Resolves after the first attempt, connected or not (a failure is reported to onState and retried).
 */
export async function listenWithReconnect(opts: ListenOptions): Promise<RevocationWatch> {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(opts.channel)) {
    throw new MtlsError("E_USAGE", `bad channel name ${JSON.stringify(opts.channel)} for LISTEN`);
  }
  const min = opts.minDelayMs ?? RECONNECT_MIN_MS;
  const max = opts.maxDelayMs ?? RECONNECT_MAX_MS;
  let delay = min;
  let client: pg.Client | undefined;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let connected = false;

  const report = (s: RevocationWatchState) => {
    try {
      opts.onState?.(s);
    } catch {
      // a throwing callback must not stop the reconnect loop
    }
  };
  const wake = () => {
    try {
      opts.onWake();
    } catch {
      // the caller's failure is its own
    }
  };

  const retryLater = (error: Error) => {
    if (closed || timer) return;
    connected = false;
    report({ connected: false, error });
    timer = setTimeout(() => {
      timer = undefined;
      void attempt();
    }, delay);
    timer.unref();
    delay = Math.min(delay * 2, max);
  };

  const attempt = async (): Promise<void> => {
    if (closed) return;
    const c = new pg.Client({ ...opts.client, keepAlive: true });
    client = c;
    // A loss is reported once per connection, whichever of "error" and "end" comes first.
    let lost = false;
    const onLost = (err?: Error) => {
      if (lost || client !== c) return;
      lost = true;
      client = undefined;
      c.end().catch(() => {});
      retryLater(err ?? new Error("the listening connection was closed by the server"));
    };
    c.on("error", (err) => onLost(err));
    c.on("end", () => onLost());
    c.on("notification", (msg) => {
      if (msg.channel === opts.channel) wake();
    });
    try {
      await c.connect();
      await c.query(`listen ${opts.channel}`);
    } catch (err) {
      onLost(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (closed || lost) return;
    delay = min;
    connected = true;
    report({ connected: true });
    wake();
  };

  await attempt();
  return {
    async close() {
      if (closed) return;
      closed = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      const c = client;
      client = undefined;
      if (c) await c.end().catch(() => {});
      if (connected) {
        connected = false;
        report({ connected: false });
      }
    },
  };
}
