/**
 * The page's end of the gateway's WebSocket relay (`mtls gateway --relay NAME=host:port`, served at
 * wss://GATEWAY/.mtls/relay/NAME): a ByteStream whose bytes travel as binary WebSocket frames to
 * the relay's one target. TLS runs on top of it, end to end with the target; the relay sees only
 * ciphertext. Browser globals only (WebSocket, setTimeout); in Node pass `WebSocketImpl` (the `ws`
 * package's WebSocket).
 */
import { MtlsError } from "../errors.js";
import type { ByteStream } from "./stream.js";

/** What openRelay needs of a WebSocket: the browser's, or one API compatible with it (`ws`). */
export interface RelayWebSocket {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  readonly protocol: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "error", listener: (event: unknown) => void): void;
  addEventListener(type: "message", listener: (event: { data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { code: number; reason: string }) => void): void;
}

/** A WebSocket constructor (the global `WebSocket`, or `ws`'s). */
export type RelayWebSocketConstructor = new (url: string, protocols?: string | string[]) => RelayWebSocket;

export interface RelayOptions {
  /** WebSocket subprotocols to offer. */
  protocols?: string[];
  /** How long the WebSocket may take to open, in ms (default 10 s). */
  timeoutMs?: number;
  /** The WebSocket constructor; default: the global `WebSocket`. */
  WebSocketImpl?: RelayWebSocketConstructor;
  /** write() waits while more than this many bytes are queued in the WebSocket (default 1 MiB). */
  highWaterMark?: number;
}

/** The relay refused the session or it broke: E_RELAY, with the WebSocket close code and reason. */
export class RelayError extends MtlsError {
  /** The close code (1006: the connection broke or never opened; 0: not a close). */
  readonly closeCode: number;
  readonly closeReason: string;

  constructor(message: string, closeCode: number, closeReason: string) {
    super("E_RELAY", message);
    this.closeCode = closeCode;
    this.closeReason = closeReason;
  }
}

const OPEN = 1;
const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_HIGH_WATER = 1024 * 1024;
/** How often a write waiting for the WebSocket's queue to drain looks again. */
const POLL_MS = 10;
/** How long close() waits for the WebSocket's close handshake. */
const CLOSE_WAIT_MS = 5_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function describeClose(code: number, reason: string): string {
  return reason ? `${code} ${reason}` : String(code);
}

/**
 * Opens a session with the relay at `url` (wss://GATEWAY/.mtls/relay/NAME). Resolves once the
 * WebSocket is open; rejects with RelayError (E_RELAY) when it cannot be opened within `timeoutMs`
 * (a refused upgrade — unknown relay, origin not allowed, limits — shows as close code 1006 in a
 * browser, which does not expose the HTTP status).
 *
 * read() gives the frames received, in order; null once the relay closed normally (1000, the
 * target closed its connection); a RelayError for any other close (1001 gateway stopping or idle,
 * 1011 target unreachable or lost, 1013 target connect timeout, 1003/1009 protocol, 1006 broken).
 * write() sends one binary frame, first waiting while more than `highWaterMark` bytes are queued.
 */
export function openRelay(url: string, options: RelayOptions = {}): Promise<ByteStream> {
  const Impl =
    options.WebSocketImpl ?? (globalThis as unknown as { WebSocket?: RelayWebSocketConstructor }).WebSocket;
  if (!Impl) {
    return Promise.reject(
      new MtlsError(
        "E_USAGE",
        "openRelay: no WebSocket here (in Node 20, pass WebSocketImpl from the ws package)",
      ),
    );
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const highWater = options.highWaterMark ?? DEFAULT_HIGH_WATER;
  let ws: RelayWebSocket;
  try {
    ws = options.protocols?.length ? new Impl(url, options.protocols) : new Impl(url);
  } catch (err) {
    return Promise.reject(
      new RelayError(`relay ${url}: ${(err as Error).message}`, 0, (err as Error).message),
    );
  }
  ws.binaryType = "arraybuffer";

  const queue: Uint8Array[] = [];
  const readers: { resolve: (v: Uint8Array | null) => void; reject: (e: Error) => void }[] = [];
  /** Set once the WebSocket closed: null for a normal end, else the error reads and writes get. */
  let ended: { error: RelayError | null } | undefined;
  let closed = false;
  const closeWaiters: (() => void)[] = [];
  let writeChain: Promise<void> = Promise.resolve();

  const fail = (error: RelayError) => {
    if (ended) return;
    ended = { error };
    for (const r of readers.splice(0)) r.reject(error);
    try {
      // A browser may send only 1000 or 3000-4999.
      ws.close(1000);
    } catch {
      // already closing
    }
  };

  return new Promise<ByteStream>((resolve, reject) => {
    let opened = false;
    const timer = setTimeout(() => {
      if (opened) return;
      const error = new RelayError(`relay ${url}: not open within ${timeoutMs} ms`, 1006, "timeout");
      fail(error);
      reject(error);
    }, timeoutMs);

    ws.addEventListener("open", () => {
      opened = true;
      clearTimeout(timer);
      resolve(stream);
    });
    ws.addEventListener("message", (event) => {
      if (ended) return;
      const data = event.data;
      let bytes: Uint8Array;
      if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
      else if (ArrayBuffer.isView(data))
        bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      else {
        fail(new RelayError(`relay ${url}: a text frame (binary frames only)`, 1003, "binary frames only"));
        return;
      }
      if (bytes.length === 0) return;
      const reader = readers.shift();
      if (reader) reader.resolve(bytes);
      else queue.push(bytes);
    });
    ws.addEventListener("error", () => {
      // The close event that follows says more (its code); nothing to do here.
    });
    ws.addEventListener("close", (event) => {
      closed = true;
      clearTimeout(timer);
      for (const w of closeWaiters.splice(0)) w();
      const code = event.code;
      const reason = event.reason ?? "";
      if (!opened) {
        const error = new RelayError(
          `relay ${url}: could not open a session (${describeClose(code, reason)})`,
          code,
          reason,
        );
        fail(error);
        reject(error);
        return;
      }
      if (ended) return;
      if (code === 1000) {
        ended = { error: null };
        for (const r of readers.splice(0)) r.resolve(null);
        return;
      }
      fail(new RelayError(`relay ${url}: session closed (${describeClose(code, reason)})`, code, reason));
    });

    const stream: ByteStream = {
      read(): Promise<Uint8Array | null> {
        const next = queue.shift();
        if (next) return Promise.resolve(next);
        if (ended) return ended.error ? Promise.reject(ended.error) : Promise.resolve(null);
        return new Promise((res, rej) => {
          readers.push({ resolve: res, reject: rej });
        });
      },
      write(data: Uint8Array): Promise<void> {
        // Chained, so frames go out in the order write() was called even while waiting to drain.
        const p = writeChain.then(async () => {
          for (;;) {
            if (ended) throw ended.error ?? new RelayError(`relay ${url}: the session is closed`, 1000, "");
            if (ws.readyState !== OPEN) throw new RelayError(`relay ${url}: the session is closing`, 0, "");
            if (ws.bufferedAmount <= highWater) break;
            await sleep(POLL_MS);
          }
          if (data.length > 0) ws.send(data);
        });
        writeChain = p.catch(() => undefined);
        return p;
      },
      async close(): Promise<void> {
        if (!ended) {
          // Reads end (null); writes are refused.
          ended = { error: null };
          for (const r of readers.splice(0)) r.resolve(null);
        }
        if (closed) return;
        // What was written goes out first: a close frame follows queued data.
        await writeChain;
        try {
          ws.close(1000);
        } catch {
          // already closing
        }
        if (closed) return;
        let t: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((r) => {
          closeWaiters.push(r);
          t = setTimeout(r, CLOSE_WAIT_MS);
        });
        clearTimeout(t);
      },
    };
  });
}
