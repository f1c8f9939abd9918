/**
 * One HTTP/1.1 connection: a ByteStream with a read buffer in front of it, the count of bytes received,
 * and a way to tear it down that also ends any read or write still waiting on the transport (a
 * ByteStream does not promise that closing it settles pending reads, so the connection does it).
 */
import { MtlsError } from "../../errors.js";
import type { ByteStream } from "../stream.js";

const EMPTY = new Uint8Array(0);

/** The only error this folder raises for bad bytes from the server. */
export function protocolError(message: string, cause?: unknown): MtlsError {
  return new MtlsError("E_HTTP_PROTOCOL", message, cause === undefined ? undefined : { cause });
}

export class Connection {
  /** Bytes received from the transport since the connection was opened or last taken from the pool. */
  received = 0;
  /** True once the connection served a request (it came from the idle pool for the next one). */
  reused = false;
  /** True once torn down; a dead connection is never reused. */
  dead = false;

  private buf: Uint8Array = EMPTY;
  private start = 0;
  private end = 0;
  private owned = false;
  private eof = false;
  /** A read started while the connection sat idle in the pool; consumed by the next fill. */
  private pending: Promise<Uint8Array | null> | null = null;
  /** Rejecters of the reads and writes now waiting on the transport, settled by destroy(). */
  private readonly waiting = new Set<(reason: unknown) => void>();
  private deathReason: unknown;

  constructor(
    readonly stream: ByteStream,
    readonly originKey: string,
  ) {}

  /** `p`, or a rejection with the teardown reason if the connection is destroyed first. */
  private guard<T>(p: Promise<T>): Promise<T> {
    if (this.dead) return Promise.reject(this.deathReason);
    return new Promise<T>((resolve, reject) => {
      this.waiting.add(reject);
      p.then(
        (v) => {
          this.waiting.delete(reject);
          resolve(v);
        },
        (err) => {
          this.waiting.delete(reject);
          reject(err);
        },
      );
    });
  }

  /** Bytes read from the transport but not consumed yet. */
  get buffered(): number {
    return this.end - this.start;
  }

  /** Tears the connection down: pending and later reads/writes reject with `reason`; the stream is closed. */
  destroy(reason: unknown = protocolError("connection closed")): void {
    if (this.dead) return;
    this.dead = true;
    this.deathReason = reason;
    for (const reject of this.waiting) reject(reason);
    this.waiting.clear();
    this.buf = EMPTY;
    this.start = this.end = 0;
    this.stream.close().catch(() => {});
  }

  write(data: Uint8Array): Promise<void> {
    if (this.dead) return Promise.reject(this.deathReason);
    return this.guard(this.stream.write(data));
  }

  /**
   * Starts a read while the connection is idle, so a server that closes an idle connection (or sends
   * bytes it should not) is noticed; `onEvent` runs when that read settles.
   */
  watchIdle(onEvent: () => void): void {
    if (this.pending || this.dead || this.eof) {
      onEvent();
      return;
    }
    const p = this.stream.read();
    this.pending = p;
    p.then(onEvent, onEvent);
  }

  /** Reads one more chunk from the transport into the buffer; false at end of stream. */
  private async fill(): Promise<boolean> {
    if (this.eof) return false;
    if (this.dead) throw this.deathReason;
    const p = this.pending ?? this.stream.read();
    this.pending = null;
    const chunk = await this.guard(p);
    if (chunk === null) {
      this.eof = true;
      return false;
    }
    if (chunk.length === 0) return true;
    this.received += chunk.length;
    this.append(chunk);
    return true;
  }

  private append(chunk: Uint8Array): void {
    const have = this.end - this.start;
    if (have === 0) {
      this.buf = chunk;
      this.start = 0;
      this.end = chunk.length;
      this.owned = false;
      return;
    }
    if (this.owned && this.end + chunk.length <= this.buf.length) {
      this.buf.set(chunk, this.end);
      this.end += chunk.length;
      return;
    }
    const next = new Uint8Array(Math.max(4096, 2 * (have + chunk.length)));
    next.set(this.buf.subarray(this.start, this.end), 0);
    next.set(chunk, have);
    this.buf = next;
    this.start = 0;
    this.end = have + chunk.length;
    this.owned = true;
  }

  private take(n: number): Uint8Array {
    const out = this.buf.subarray(this.start, this.start + n);
    this.start += n;
    if (this.start === this.end) {
      // The caller now owns `out`; never write into its backing store again.
      this.buf = EMPTY;
      this.start = this.end = 0;
      this.owned = false;
    }
    return out;
  }

  /**
   * The next line without its CRLF, or null at end of stream before any byte of it. Lines must end in
   * CRLF (a bare CR or LF is an error); a line longer than `max` bytes (CRLF excluded) is an error.
   */
  async readLine(max: number, what: string): Promise<Uint8Array | null> {
    let scanned = 0;
    for (;;) {
      const have = this.end - this.start;
      const limit = Math.min(have, max + 2);
      for (let i = scanned; i < limit; i++) {
        if (this.buf[this.start + i] !== 0x0a) continue;
        if (i === 0 || this.buf[this.start + i - 1] !== 0x0d) {
          throw protocolError(`${what}: line ends in a bare LF`);
        }
        const line = this.take(i + 1).subarray(0, i - 1);
        if (line.includes(0x0d)) throw protocolError(`${what}: bare CR in a line`);
        return line;
      }
      scanned = limit;
      if (have >= max + 2) throw protocolError(`${what}: longer than ${max} bytes`);
      if (!(await this.fill())) {
        if (this.end - this.start === 0) return null;
        throw protocolError(`${what}: connection closed in the middle of a line`);
      }
    }
  }

  /** Up to `max` (> 0) bytes: what is buffered, else the next chunk from the transport; null at end of stream. */
  async readSome(max: number): Promise<Uint8Array | null> {
    if (this.end === this.start && !(await this.fill())) return null;
    return this.take(Math.min(max, this.end - this.start));
  }

  /** Consumes exactly CRLF. */
  async expectCrlf(what: string): Promise<void> {
    while (this.end - this.start < 2) {
      if (!(await this.fill())) throw protocolError(`${what}: connection closed before CRLF`);
    }
    if (this.buf[this.start] !== 0x0d || this.buf[this.start + 1] !== 0x0a) {
      throw protocolError(`${what}: expected CRLF`);
    }
    this.take(2);
  }
}
