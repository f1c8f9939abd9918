import { StringDecoder } from "node:string_decoder";
import { MtlsError } from "../errors.js";

/** One dispatched server-sent event. */
export interface SseEvent {
  /** The `event:` field, "message" when absent. */
  event: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  /** The last event ID in force when the event was dispatched (undefined: none seen yet). */
  id: string | undefined;
}

export interface SseHandlers {
  onEvent(e: SseEvent): void;
  /** A valid `retry:` field (milliseconds). */
  onRetry?(ms: number): void;
  /** A comment line (without its leading ":"), e.g. " keep-alive". */
  onComment?(text: string): void;
  /** An `id:` field, whether or not an event follows (resume from it). */
  onId?(id: string): void;
}

/** A line or an event larger than this is garbage, not a revocation feed. */
const DEFAULT_MAX_BYTES = 1024 * 1024;

/**
 * The text/event-stream framing (WHATWG HTML "server-sent events", the parsing part): lines end in
 * CRLF, LF or CR, and a chunk may end anywhere (inside a UTF-8 sequence, between CR and LF); fields
 * `event`, `data` (several lines join with "\n"), `id`, `retry`; lines starting with ":" are
 * comments; a blank line dispatches the event, and an event without data is not dispatched.
 * Throws E_BAD_INPUT when a line or an event's data grows past `maxBytes` (the caller drops the
 * connection): the stream is bounded, whatever the server sends.
 */
export class SseParser {
  private readonly decoder = new StringDecoder("utf8");
  private buffer = "";
  /** The previous chunk ended in CR: a LF at the start of the next one belongs to it. */
  private afterCr = false;
  private eventType = "";
  private data: string[] = [];
  private dataSize = 0;
  private lastId: string | undefined;
  private readonly maxBytes: number;

  constructor(
    private readonly handlers: SseHandlers,
    opts: { maxBytes?: number } = {},
  ) {
    this.maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  }

  /** The last event ID seen (the `Last-Event-ID` to resume with). */
  get lastEventId(): string | undefined {
    return this.lastId;
  }

  push(chunk: Buffer | string): void {
    let text = typeof chunk === "string" ? chunk : this.decoder.write(chunk);
    // A chunk that decoded to nothing (half a UTF-8 sequence) keeps a pending CR pending.
    if (text === "") return;
    if (this.afterCr && text.startsWith("\n")) text = text.slice(1);
    this.afterCr = false;
    this.buffer += text;
    let start = 0;
    // Next CR and LF at or after `start`, searched again only once passed: a stream without CR
    // (the usual) must not rescan the rest of the chunk for one at every line.
    let cr = -2;
    let lf = -2;
    for (;;) {
      if (cr !== -1 && cr < start) cr = this.buffer.indexOf("\r", start);
      if (lf !== -1 && lf < start) lf = this.buffer.indexOf("\n", start);
      if (cr < 0 && lf < 0) break;
      const end = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
      const line = this.buffer.slice(start, end);
      if (this.buffer[end] === "\r") {
        if (end + 1 === this.buffer.length) {
          // CR at the very end: the LF of a CRLF may come in the next chunk.
          this.afterCr = true;
          start = end + 1;
        } else {
          start = this.buffer[end + 1] === "\n" ? end + 2 : end + 1;
        }
      } else {
        start = end + 1;
      }
      this.line(line);
    }
    this.buffer = this.buffer.slice(start);
    if (this.buffer.length > this.maxBytes) {
      throw new MtlsError("E_BAD_INPUT", `event stream line longer than ${this.maxBytes} bytes`);
    }
  }

  private line(line: string): void {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) {
      this.handlers.onComment?.(line.slice(1));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.dataSize += value.length + 1;
        if (this.dataSize > this.maxBytes) {
          throw new MtlsError("E_BAD_INPUT", `event stream event larger than ${this.maxBytes} bytes`);
        }
        this.data.push(value);
        break;
      case "id":
        // An ID with NUL is ignored (as the standard says).
        if (!value.includes("\u0000")) {
          this.lastId = value;
          this.handlers.onId?.(value);
        }
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.handlers.onRetry?.(Number(value));
        break;
      default:
      // Unknown fields are ignored.
    }
  }

  private dispatch(): void {
    const data = this.data;
    const event = this.eventType || "message";
    this.data = [];
    this.dataSize = 0;
    this.eventType = "";
    if (data.length === 0) return;
    this.handlers.onEvent({ event, data: data.join("\n"), id: this.lastId });
  }
}
