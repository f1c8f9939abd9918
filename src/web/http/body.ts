/**
 * Response bodies as pull-based ReadableStreams: each read from the stream reads from the connection,
 * so nothing is buffered beyond one transport chunk and a reader that stops reading stops the server
 * (TCP or TLS back-pressure). Three framings: Content-Length, chunked, and read until close.
 */
import { type Connection, protocolError } from "./connection.js";
import { type Framing, readFields } from "./response-parser.js";

/** Longest chunk-size line accepted (size, extensions, no CRLF). */
const MAX_CHUNK_LINE = 4096;

export interface BodyHooks {
  maxTrailerBytes: number;
  maxTrailers: number;
  /** The body was read to its end. `delimitedByClose` is true when the end was the connection's end. */
  onEnd(delimitedByClose: boolean): void;
  /** The body failed (bad framing, truncated, transport error); returns the error the reader sees. */
  onError(err: unknown): unknown;
  /** The reader cancelled the stream before its end. */
  onCancel(reason: unknown): void;
}

export interface BodyHandle {
  stream: ReadableStream<Uint8Array>;
  /** Errors the stream from outside (an abort signal); no-op once it ended. */
  fail(reason: unknown): void;
}

/** The next piece of the body, or null at its end; `done` tells early that nothing follows. */
type Next = (() => Promise<Uint8Array | null>) & { done?: () => boolean };

function lengthReader(conn: Connection, length: number): Next {
  let remaining = length;
  const next: Next = async () => {
    if (remaining === 0) return null;
    const chunk = await conn.readSome(remaining);
    if (chunk === null) {
      throw protocolError(`body truncated: connection closed with ${remaining} of ${length} bytes missing`);
    }
    remaining -= chunk.length;
    return chunk;
  };
  next.done = () => remaining === 0;
  return next;
}

function parseChunkSize(line: Uint8Array): number {
  let i = 0;
  let size = 0;
  let digits = 0;
  for (; i < line.length; i++) {
    const c = line[i] as number;
    let v: number;
    if (c >= 0x30 && c <= 0x39) v = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) v = c - 0x57;
    else if (c >= 0x41 && c <= 0x46) v = c - 0x37;
    else break;
    if (size > 0 || v > 0) digits++;
    if (digits > 13) throw protocolError("chunk size too large");
    size = size * 16 + v;
  }
  if (i === 0) throw protocolError("invalid chunk size");
  // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ); contents ignored, but well-formed-ish.
  while (i < line.length && (line[i] === 0x20 || line[i] === 0x09)) i++;
  if (i < line.length) {
    if (line[i] !== 0x3b) throw protocolError("invalid chunk size");
    for (; i < line.length; i++) {
      const c = line[i] as number;
      if ((c < 0x20 && c !== 0x09) || c === 0x7f)
        throw protocolError("control character in a chunk extension");
    }
  }
  return size;
}

function chunkedReader(conn: Connection, hooks: BodyHooks): Next {
  let state: "size" | "data" | "crlf" | "done" = "size";
  let remaining = 0;
  return async () => {
    for (;;) {
      switch (state) {
        case "done":
          return null;
        case "data": {
          const chunk = await conn.readSome(remaining);
          if (chunk === null) throw protocolError("chunked body truncated inside a chunk");
          remaining -= chunk.length;
          if (remaining === 0) state = "crlf";
          return chunk;
        }
        case "crlf":
          await conn.expectCrlf("chunk data");
          state = "size";
          break;
        case "size": {
          const line = await conn.readLine(MAX_CHUNK_LINE, "chunk size line");
          if (line === null) throw protocolError("chunked body truncated before the last chunk");
          const size = parseChunkSize(line);
          if (size === 0) {
            // Trailer fields are read (bounded) and dropped.
            await readFields(conn, hooks.maxTrailerBytes, hooks.maxTrailers, "trailer section");
            state = "done";
            return null;
          }
          remaining = size;
          state = "data";
          break;
        }
      }
    }
  };
}

function closeReader(conn: Connection): Next {
  return () => conn.readSome(Number.MAX_SAFE_INTEGER);
}

export function bodyStream(conn: Connection, framing: Framing, hooks: BodyHooks): BodyHandle {
  let next: Next;
  switch (framing.kind) {
    case "length":
      next = lengthReader(conn, framing.length);
      break;
    case "chunked":
      next = chunkedReader(conn, hooks);
      break;
    case "close":
      next = closeReader(conn);
      break;
    case "none":
      next = async () => null;
      break;
  }
  let settled = false;
  let ctl: ReadableStreamDefaultController<Uint8Array> | undefined;
  const fail = (err: unknown) => {
    if (settled) return;
    settled = true;
    ctl?.error(hooks.onError(err));
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        ctl = controller;
      },
      async pull(controller) {
        if (settled) return;
        let chunk: Uint8Array | null;
        try {
          chunk = await next();
        } catch (err) {
          fail(err);
          return;
        }
        if (settled) return;
        if (chunk === null) {
          settled = true;
          controller.close();
          hooks.onEnd(framing.kind === "close");
          return;
        }
        controller.enqueue(chunk);
        if (next.done?.()) {
          settled = true;
          controller.close();
          hooks.onEnd(false);
        }
      },
      cancel(reason) {
        if (settled) return;
        settled = true;
        hooks.onCancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  return { stream, fail };
}
