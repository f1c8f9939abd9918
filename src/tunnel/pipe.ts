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

/** The pipe a socket belongs to, so that one set of listener functions serves every pipe. */
const kPipe = Symbol("mtls.pipe");
type Piped = SocketLike & { [kPipe]?: Pipe };

/**
 * A running bidirectional pipe between `a` and `b`.
 *  - Backpressure: a chunk read from one side is written to the other, and the reader is paused
 *    while the writer's buffer is over its high-water mark (until 'drain'), as stream.pipe() does,
 *    so a slow end never makes the tunnel buffer without bound.
 *  - Half-close: when one side's readable ends (FIN, or TLS close_notify), the other side's
 *    writable is ended and the opposite direction keeps flowing. Both sockets must be created with
 *    `allowHalfOpen: true` for this to reach the far end. When both directions have ended and both
 *    writables are flushed, both sockets are destroyed.
 *  - Anything else (error, reset, idle timeout, close()) destroys both at once.
 *  - Sockets may be handed over late: an end, error or close that happened before is acted on.
 *
 * Memory: a tunnel holds one Pipe per open connection, so it keeps little per connection. The
 * listeners are module functions shared by every pipe (they find theirs through a symbol on the
 * socket), not closures, and the idle timer is a single socket timeout on `a` (see idleTimeoutMs).
 */
export class Pipe {
  bytesIn = 0;
  bytesOut = 0;
  readonly done: Promise<PipeResult>;
  private settle!: (r: PipeResult) => void;
  /** Reader of `a` (in) / of `b` (out) ended; writer of `a` / of `b` finished. */
  private endedIn = false;
  private endedOut = false;
  private finishedA = false;
  private finishedB = false;
  private result: PipeResult | undefined;
  private readonly onData: PipeOptions["onData"];

  constructor(
    readonly a: SocketLike,
    readonly b: SocketLike,
    opts: PipeOptions = {},
  ) {
    this.done = new Promise((resolve) => {
      this.settle = resolve;
    });
    this.onData = opts.onData;
    for (const s of [a, b] as Piped[]) {
      s[kPipe] = this;
      s.on("data", onData);
      s.on("drain", onDrain);
      s.on("error", onError);
      s.on("finish", onFinish);
      s.on("close", onClose);
    }
    // One timer is enough: every byte either way is read from or written to `a`, and a socket's
    // timeout is re-armed by both. (FTP sessions re-arm it with a.setTimeout() from outside.)
    const timed = a.setTimeout ? a : b.setTimeout ? b : undefined;
    if (opts.idleTimeoutMs && opts.idleTimeoutMs > 0 && timed) {
      timed.setTimeout?.(opts.idleTimeoutMs);
      timed.on("timeout", onTimeout);
    }
    // Sockets handed over late fire no event for what already happened to them: a FIN read before
    // this pipe subscribed ('end' already emitted: a health check that connects and closes while
    // the tunnel verifies it or connects to the target), a flushed end, an error, a close.
    this.finishedA = a.writableFinished;
    this.finishedB = b.writableFinished;
    for (const s of [a, b]) {
      if (s.readableEnded) this.readEnded(s);
      else s.once("end", onEnd);
    }
    for (const s of [a, b]) {
      if (s.errored) this.close("error", s.errored);
      else if (s.destroyed) this.socketClosed(s);
    }
    // Flowing from now on (a reader paused by its previous owner included).
    if (!this.result) {
      a.resume();
      b.resume();
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

  // The handlers below are called by the shared listeners at the end of this file.

  /** @internal A chunk read from `from`: counted, written on, the reader paused if the writer is full. */
  forward(from: SocketLike, chunk: Buffer): void {
    const to = from === this.a ? this.b : this.a;
    if (from === this.a) this.bytesIn += chunk.length;
    else this.bytesOut += chunk.length;
    this.onData?.(from === this.a ? "in" : "out", chunk.length);
    if (!to.write(chunk)) from.pause();
  }

  /** @internal `to` drained its buffer: the side that writes into it may read again. */
  drained(to: SocketLike): void {
    const from = to === this.a ? this.b : this.a;
    if (!this.result) from.resume();
  }

  /** @internal One side's reader ended: end the other side's writes (half-close). */
  readEnded(from: SocketLike): void {
    const inward = from === this.a;
    if (inward ? this.endedIn : this.endedOut) return;
    if (inward) this.endedIn = true;
    else this.endedOut = true;
    const to = inward ? this.b : this.a;
    if (!to.destroyed) to.end();
    this.maybeDone();
  }

  /** @internal */
  writeFinished(s: SocketLike): void {
    if (s === this.a) this.finishedA = true;
    else this.finishedB = true;
    this.maybeDone();
  }

  /**
   * @internal A socket closed. One that read its end and flushed its own may close (autoDestroy)
   * while the other direction still drains: that is no reset.
   */
  socketClosed(s: SocketLike): void {
    const clean = s === this.a ? this.endedIn && this.finishedA : this.endedOut && this.finishedB;
    if (!clean) this.close("reset");
  }

  private maybeDone(): void {
    if (this.endedIn && this.endedOut && this.finishedA && this.finishedB) this.close("closed");
  }
}

// The listeners every pipe shares; `this` is the socket the event came from.
function pipeOf(s: SocketLike): Pipe {
  return (s as Piped)[kPipe] as Pipe;
}
function onData(this: SocketLike, chunk: Buffer): void {
  pipeOf(this).forward(this, chunk);
}
function onDrain(this: SocketLike): void {
  pipeOf(this).drained(this);
}
function onEnd(this: SocketLike): void {
  pipeOf(this).readEnded(this);
}
function onFinish(this: SocketLike): void {
  pipeOf(this).writeFinished(this);
}
function onClose(this: SocketLike): void {
  pipeOf(this).socketClosed(this);
}
function onError(this: SocketLike, err: Error): void {
  pipeOf(this).close("error", err);
}
function onTimeout(this: SocketLike): void {
  pipeOf(this).close("idle_timeout");
}

export function pipeSockets(a: SocketLike, b: SocketLike, opts: PipeOptions = {}): Pipe {
  return new Pipe(a, b, opts);
}
