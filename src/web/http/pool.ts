/**
 * Idle keep-alive connections per origin. A connection enters only after its response was read to the
 * end with neither side asking to close; while idle a read is kept pending on it, so a server closing
 * it (or sending unsolicited bytes) evicts it at once. Idle connections expire after a timeout.
 */
import type { Connection } from "./connection.js";

interface Idle {
  conn: Connection;
  timer: ReturnType<typeof setTimeout>;
}

export class IdlePool {
  private readonly idle = new Map<string, Idle[]>();

  constructor(
    private readonly maxPerOrigin: number,
    private readonly timeoutMs: number,
  ) {}

  /** Number of idle connections (all origins, or one). */
  size(originKey?: string): number {
    if (originKey !== undefined) return this.idle.get(originKey)?.length ?? 0;
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  /** The most recently used live idle connection of the origin, removed from the pool. */
  take(originKey: string): Connection | null {
    const list = this.idle.get(originKey);
    while (list && list.length > 0) {
      const entry = list.pop() as Idle;
      clearTimeout(entry.timer);
      if (list.length === 0) this.idle.delete(originKey);
      if (!entry.conn.dead) return entry.conn;
    }
    return null;
  }

  /** Puts a finished connection in the pool (or closes it if the pool is full). `serverTimeoutMs` shortens the idle time. */
  put(conn: Connection, serverTimeoutMs?: number): void {
    if (conn.dead) return;
    let list = this.idle.get(conn.originKey);
    if (!list) {
      list = [];
      this.idle.set(conn.originKey, list);
    }
    if (list.length >= this.maxPerOrigin || this.maxPerOrigin <= 0) {
      if (list.length === 0) this.idle.delete(conn.originKey);
      conn.destroy();
      return;
    }
    // Leave a margin under the server's own announced timeout: a second, or half of a short one
    // (timeout=1 still allows reuse within 500 ms; timeout=0 means no reuse at all).
    const ms =
      serverTimeoutMs === undefined
        ? this.timeoutMs
        : Math.min(this.timeoutMs, serverTimeoutMs - Math.min(1000, serverTimeoutMs / 2));
    if (ms <= 0) {
      conn.destroy();
      return;
    }
    const entry: Idle = { conn, timer: setTimeout(() => this.evict(entry), ms) };
    (entry.timer as { unref?: () => void }).unref?.();
    list.push(entry);
    conn.reused = true;
    conn.received = 0;
    conn.watchIdle(() => this.evict(entry));
  }

  private evict(entry: Idle): void {
    const list = this.idle.get(entry.conn.originKey);
    const i = list ? list.indexOf(entry) : -1;
    if (!list || i < 0) return; // already taken
    list.splice(i, 1);
    if (list.length === 0) this.idle.delete(entry.conn.originKey);
    clearTimeout(entry.timer);
    entry.conn.destroy();
  }

  closeAll(): void {
    for (const list of this.idle.values()) {
      for (const entry of list) {
        clearTimeout(entry.timer);
        entry.conn.destroy();
      }
    }
    this.idle.clear();
  }
}
