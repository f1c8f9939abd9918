import type { Duplex } from "node:stream";

/** How a pipe ended. The caller may also close it with a reason of its own ("revoked", "shutdown", ...). */
export type PipeEnd = "closed" | "reset" | "error" | "idle_timeout" | (string & {});

export interface PipeResult {
  /** Bytes read from `a` (the listening side) and written to `b`. */
  bytesIn: number;
  /** Bytes read from `b` (the target side) and written to `a`. */
  bytesOut: number;
  reason: PipeEnd;
  error?: Error;
}

export interface PipeOptions {
  /** Destroy both sockets after this long without a byte either way (0 or undefined: never). */
  idleTimeoutMs?: number;
  /** Called for every chunk, for live byte counters. */
  onData?: (direction: "in" | "out", bytes: number) => void;
}

/** A socket-like stream: net.Socket and tls.TLSSocket both fit. */
type SocketLike = Duplex & { setTimeout?: (ms: number, cb?: () => void) => unknown };

/**
 * A running bidirectional pipe between `a` and `b`.
 *  - Backpressure: each direction is a stream.pipe(), which pauses the reader while the writer's
 *    buffer is over its high-water mark, so a slow end never makes the tunnel buffer without bound.
 *  - Half-close: when one side's readable ends (FIN, or TLS close_notify), the other side's
 *    writable is ended and the opposite direction keeps flowing. Both sockets must be created with
 *    `allowHalfOpen: true` for this to reach the far end. When both directions have ended and both
 *    writables are flushed, both sockets are destroyed.
 *  - Anything else (error, reset, idle timeout, close()) destroys both at once.
 */
export class Pipe {
  bytesIn = 0;
  bytesOut = 0;
  readonly done: Promise<PipeResult>;
  private settle!: (r: PipeResult) => void;
  private ended = { in: false, out: false };
  private finished = { a: false, b: false };
  private result: PipeResult | undefined;

  constructor(
    readonly a: SocketLike,
    readonly b: SocketLike,
    opts: PipeOptions = {},
  ) {
    this.done = new Promise((resolve) => {
      this.settle = resolve;
    });
    const onData = opts.onData;
    this.forward(a, b, "in", onData);
    this.forward(b, a, "out", onData);
    for (const [s, key] of [
      [a, "a"],
      [b, "b"],
    ] as const) {
      s.on("error", (err: Error) => this.close("error", err));
      s.on("finish", () => {
        this.finished[key] = true;
        this.maybeDone();
      });
      // A socket that read its end and flushed its own may close (autoDestroy) while the other
      // direction still drains: that is no reset.
      s.on("close", () => {
        const readDone = key === "a" ? this.ended.in : this.ended.out;
        if (!(readDone && this.finished[key])) this.close("reset");
      });
    }
    if (opts.idleTimeoutMs && opts.idleTimeoutMs > 0) {
      const onIdle = () => this.close("idle_timeout");
      a.setTimeout?.(opts.idleTimeoutMs, onIdle);
      b.setTimeout?.(opts.idleTimeoutMs, onIdle);
    }
  }

  /** True once the pipe has ended, whatever the reason. */
  get closed(): boolean {
    return this.result !== undefined;
  }

  /** Destroys both sockets now; the first reason given wins. */
  close(reason: PipeEnd, error?: Error): void {
    if (this.result) return;
    this.result = {
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      reason,
      ...(error ? { error } : {}),
    };
    this.a.destroy();
    this.b.destroy();
    // Bytes still counted by 'data' events fired during destroy are included.
    queueMicrotask(() => {
      const r = this.result as PipeResult;
      this.settle({ ...r, bytesIn: this.bytesIn, bytesOut: this.bytesOut });
    });
  }

  private forward(from: SocketLike, to: SocketLike, dir: "in" | "out", onData: PipeOptions["onData"]): void {
    from.on("data", (chunk: Buffer) => {
      if (dir === "in") this.bytesIn += chunk.length;
      else this.bytesOut += chunk.length;
      onData?.(dir, chunk.length);
    });
    from.pipe(to, { end: false });
    from.once("end", () => {
      this.ended[dir] = true;
      if (!to.destroyed) to.end();
      this.maybeDone();
    });
  }

  private maybeDone(): void {
    if (this.ended.in && this.ended.out && this.finished.a && this.finished.b) this.close("closed");
  }
}

export function pipeSockets(a: SocketLike, b: SocketLike, opts: PipeOptions = {}): Pipe {
  return new Pipe(a, b, opts);
}
