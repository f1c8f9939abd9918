/**
 * The HTTP/1.1 client of `mtls/web`: fetch-shaped, over any ByteStream the caller's `connect` opens
 * (TLS over a WebSocket relay in the browser, TCP in tests). One request at a time per connection (no
 * pipelining), keep-alive through an idle pool, streaming bodies both ways, strict bounded parsing.
 */
import { MtlsError } from "../../errors.js";
import type { ByteStream } from "../stream.js";
import { bodyStream } from "./body.js";
import { Connection, protocolError } from "./connection.js";
import { IdlePool } from "./pool.js";
import { type HttpRequestInit, type PreparedRequest, prepareRequest } from "./request.js";
import {
  type HeadLimits,
  keepAliveTimeoutMs,
  type ResponseHead,
  readResponseHead,
  responseFraming,
  serverKeepsAlive,
} from "./response-parser.js";

export interface HttpClientOptions {
  /** Opens a byte stream to `origin` (`https://host:port`): TLS over the relay in the browser. */
  connect(origin: URL): Promise<ByteStream>;
  /** Idle keep-alive connections kept per origin (default 6; 0 disables reuse). */
  maxIdlePerOrigin?: number;
  /** How long an idle connection is kept (default 30 s, shortened by the server's `Keep-Alive: timeout`). */
  idleTimeoutMs?: number;
  /** Largest response head (status line + fields) and trailer section accepted, in bytes (default 64 KiB). */
  maxHeaderBytes?: number;
}

export interface HttpClient {
  fetch(input: string | URL, init?: HttpRequestInit): Promise<Response>;
  /** Closes idle connections; later fetches fail; responses in flight finish, then their connections close. */
  close(): Promise<void>;
}

const MAX_HEADERS = 100;
const MAX_INTERIM = 20;
/** How long a request with `Expect: 100-continue` waits for 100 before sending its body anyway. */
const CONTINUE_TIMEOUT_MS = 1000;
/** Largest body drained from a 205 response (which a Response cannot carry). */
const MAX_205_BODY = 65536;
const LAST_CHUNK = new Uint8Array([0x30, 0x0d, 0x0a, 0x0d, 0x0a]);

/** A failure of the caller's request body stream (not of the connection). */
class SourceError {
  constructor(readonly cause: unknown) {}
}

/** A reused connection failed before any response byte: the request may be sent again. */
class StaleConnection {
  constructor(readonly cause: unknown) {}
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("This operation was aborted", "AbortError");
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Transport failures that are not already ours become E_UNAVAILABLE, keeping the cause. */
function connectionError(err: unknown, what: string): unknown {
  if (err instanceof MtlsError) return err;
  return new MtlsError("E_UNAVAILABLE", `${what}: ${describe(err)}`, { cause: err });
}

function chunkFrame(chunk: Uint8Array): Uint8Array {
  const size = `${chunk.length.toString(16)}\r\n`;
  const out = new Uint8Array(size.length + chunk.length + 2);
  for (let i = 0; i < size.length; i++) out[i] = size.charCodeAt(i);
  out.set(chunk, size.length);
  out[out.length - 2] = 0x0d;
  out[out.length - 1] = 0x0a;
  return out;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

export function createHttpClient(options: HttpClientOptions): HttpClient {
  const pool = new IdlePool(options.maxIdlePerOrigin ?? 6, options.idleTimeoutMs ?? 30_000);
  const limits: HeadLimits = { maxHeaderBytes: options.maxHeaderBytes ?? 65536, maxHeaders: MAX_HEADERS };
  let closed = false;

  async function open(req: PreparedRequest, signal: AbortSignal | undefined): Promise<Connection> {
    const origin = new URL(req.originKey);
    let pending: Promise<ByteStream>;
    try {
      pending = Promise.resolve(options.connect(origin));
    } catch (err) {
      pending = Promise.reject(err);
    }
    let stream: ByteStream;
    try {
      stream = await new Promise<ByteStream>((resolve, reject) => {
        const onAbort = () => reject(abortReason(signal as AbortSignal));
        signal?.addEventListener("abort", onAbort, { once: true });
        pending.then(
          (s) => {
            signal?.removeEventListener("abort", onAbort);
            if (signal?.aborted) s.close().catch(() => {});
            else resolve(s);
          },
          (err) => {
            signal?.removeEventListener("abort", onAbort);
            reject(err);
          },
        );
      });
    } catch (err) {
      if (signal?.aborted) throw abortReason(signal);
      // TLS and relay failures keep their own codes (E_TLS, E_TLS_CERT, E_RELAY).
      throw connectionError(err, `cannot connect to ${req.originKey}`);
    }
    return new Connection(stream, req.originKey);
  }

  async function exchange(
    conn: Connection,
    req: PreparedRequest,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    let failBody: ((reason: unknown) => void) | undefined;
    let sourceReader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    const onAbort = () => {
      const reason = abortReason(signal as AbortSignal);
      conn.destroy(reason);
      failBody?.(reason);
      sourceReader?.cancel(reason).catch(() => {});
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    const detach = () => signal?.removeEventListener("abort", onAbort);

    // The writer runs beside the reader: a server may answer before the body is sent.
    let writerDone = false;
    let bodyStarted = req.body === null || !req.expectContinue;
    let skipBody = false;
    let openGate: (() => void) | undefined;
    let gateTimer: ReturnType<typeof setTimeout> | undefined;
    let writerError: unknown;
    const writer = (async () => {
      const body = req.body;
      if (body === null) {
        await conn.write(req.head);
      } else if (body instanceof Uint8Array && !req.expectContinue && body.length <= 65536) {
        await conn.write(concat(req.head, body));
      } else {
        await conn.write(req.head);
        if (req.expectContinue) {
          await new Promise<void>((resolve) => {
            openGate = resolve;
            gateTimer = setTimeout(resolve, CONTINUE_TIMEOUT_MS);
          });
          clearTimeout(gateTimer);
          if (skipBody) {
            if (body instanceof ReadableStream) body.cancel().catch(() => {});
            return;
          }
          bodyStarted = true;
        }
        if (body instanceof Uint8Array) {
          await conn.write(body);
        } else {
          const reader = body.getReader();
          sourceReader = reader;
          for (;;) {
            let r: ReadableStreamReadResult<Uint8Array>;
            try {
              r = await reader.read();
            } catch (err) {
              throw new SourceError(err);
            }
            if (r.done) break;
            if (!(r.value instanceof Uint8Array)) {
              const err = new TypeError("request body chunks must be Uint8Array");
              reader.cancel(err).catch(() => {});
              throw new SourceError(err);
            }
            if (r.value.length === 0) continue;
            try {
              await conn.write(chunkFrame(r.value));
            } catch (err) {
              reader.cancel(err).catch(() => {});
              throw err;
            }
          }
          await conn.write(LAST_CHUNK);
        }
      }
      writerDone = true;
    })();
    writer.catch((err) => {
      writerError = err;
      // A failing body source ends the exchange; a failing transport shows on the read side too.
      if (err instanceof SourceError) conn.destroy(err.cause);
    });

    let head: ResponseHead | null;
    try {
      let interim = 0;
      for (;;) {
        head = await readResponseHead(conn, limits);
        if (head === null) {
          throw new MtlsError("E_UNAVAILABLE", `${req.originKey} closed the connection without answering`);
        }
        if (head.status >= 200) break;
        if (head.status === 101) throw protocolError("unexpected 101 Switching Protocols");
        if (head.status === 100) openGate?.();
        if (++interim > MAX_INTERIM) throw protocolError(`more than ${MAX_INTERIM} interim responses`);
      }
    } catch (err) {
      detach();
      clearTimeout(gateTimer);
      const reason = signal?.aborted
        ? abortReason(signal)
        : writerError instanceof SourceError
          ? writerError.cause
          : connectionError(err, `connection to ${req.originKey} failed`);
      conn.destroy(reason);
      sourceReader?.cancel(reason).catch(() => {});
      if (!signal?.aborted && !(writerError instanceof SourceError) && conn.reused && conn.received === 0) {
        throw new StaleConnection(reason);
      }
      throw reason;
    }
    if (!bodyStarted) {
      // Final answer before 100 Continue: the body is never sent, so the connection cannot be reused.
      skipBody = true;
      clearTimeout(gateTimer);
      openGate?.();
    }

    let reusable = false;
    let serverTimeout: number | undefined;
    let response: Response;
    try {
      const { framing, smuggling } = responseFraming(head, req.method);
      reusable = !req.wantsClose && !skipBody && !smuggling && serverKeepsAlive(head);
      serverTimeout = keepAliveTimeoutMs(head);
      const headers = new Headers();
      for (const [name, value] of head.fields) headers.append(name, value);

      const finish = (clean: boolean) => {
        detach();
        if (clean && reusable && writerDone && conn.buffered === 0 && !closed && !conn.dead) {
          pool.put(conn, serverTimeout);
        } else {
          conn.destroy();
          // An upload still running after the response ended is stopped with the connection.
          if (!writerDone) sourceReader?.cancel().catch(() => {});
        }
      };
      let body: ReadableStream<Uint8Array> | null;
      const nullBody = head.status === 204 || head.status === 205 || head.status === 304;
      if (framing.kind === "none" || (framing.kind === "length" && framing.length === 0)) {
        finish(true);
        body = nullBody || req.method === "HEAD" ? null : new ReadableStream({ start: (c) => c.close() });
      } else {
        const handle = bodyStream(conn, framing, {
          maxTrailerBytes: limits.maxHeaderBytes,
          maxTrailers: MAX_HEADERS,
          onEnd: (byClose) => finish(!byClose),
          onError: (err) => {
            detach();
            const reason = signal?.aborted
              ? abortReason(signal)
              : connectionError(err, "response body failed");
            conn.destroy(reason);
            return reason;
          },
          onCancel: (reason) => {
            detach();
            conn.destroy(reason);
          },
        });
        failBody = handle.fail;
        body = handle.stream;
        if (nullBody) {
          // 205 Reset Content may still frame (empty) content; drain it, bounded.
          const reader = body.getReader();
          let total = 0;
          for (;;) {
            const r = await reader.read();
            if (r.done) break;
            total += r.value.length;
            if (total > MAX_205_BODY) {
              reader.cancel().catch(() => {});
              throw protocolError("205 response with a large body");
            }
          }
          body = null;
        }
      }
      try {
        response = new Response(body, { status: head.status, statusText: head.statusText, headers });
      } catch (err) {
        throw protocolError(`response cannot be represented: ${describe(err)}`, err);
      }
    } catch (err) {
      detach();
      const reason = signal?.aborted ? abortReason(signal) : err;
      conn.destroy(reason);
      throw reason;
    }
    try {
      Object.defineProperty(response, "url", { value: req.url.href });
    } catch {
      // Not fatal: `url` stays "".
    }
    return response;
  }

  return {
    async fetch(input, init = {}) {
      const req = prepareRequest(input, init);
      const signal = init.signal ?? undefined;
      if (signal?.aborted) throw abortReason(signal);
      if (closed) throw new MtlsError("E_UNAVAILABLE", "the HTTP client is closed");
      for (let attempt = 0; ; attempt++) {
        const conn = (attempt === 0 ? pool.take(req.originKey) : null) ?? (await open(req, signal));
        try {
          return await exchange(conn, req, signal);
        } catch (err) {
          if (!(err instanceof StaleConnection)) throw err;
          if (attempt > 0 || !req.idempotent || !req.replayable) throw err.cause;
        }
      }
    },
    async close() {
      closed = true;
      pool.closeAll();
    },
  };
}
