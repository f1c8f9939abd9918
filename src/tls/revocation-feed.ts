import { EventEmitter } from "node:events";
import { type ClientRequest, request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { MtlsError } from "../errors.js";
import type { Logger } from "../observe/index.js";
import { certToPem, normalizeSerial } from "../pki/index.js";
import { type SseEvent, SseParser } from "./sse.js";

/** Where a CA service publishes revocations as they happen (server-sent events). */
export const FEED_PATH = "/v1/revocations/stream";

/** One revocation as the feed announced it. */
export interface FeedRevocation {
  /** Normalized hex serial of the revoked certificate. */
  serial: string;
  /** Normalized hex serial of the CA certificate that issued it; null when the feed does not say. */
  issuerSerial: string | null;
  revokedAt: Date;
  reason?: string;
  name?: string;
}

/** Trust anchors for the feed's server certificate: PEM, or parsed certificates (a TlsMaterial's). */
export type FeedAnchors = string | Buffer | readonly { der: Uint8Array }[];

export interface RevocationFeedOptions {
  /** https://host:port (the stream path is added when the URL has none); http:// only on loopback. */
  url: string;
  /** Read at every connection attempt, so a function follows a reloaded CA file. */
  anchors: FeedAnchors | (() => FeedAnchors);
  clock?: () => Date;
  /** A failure (connection refused, TLS, HTTP status, silence, a bad event); the same message is reported once until the feed is current again. */
  onError?: (err: Error) => void;
  /** Silence after which the feed is stale and the connection is dropped (default 3 heartbeats: 15 s). */
  staleAfterMs?: number;
  /** Longest wait between two connection attempts (default 10 s). */
  maxBackoffMs?: number;
  /** First wait after a failure (default 250 ms; a `retry:` field of the server replaces it). */
  minBackoffMs?: number;
}

export interface RevocationFeedState {
  url: string;
  /** A stream is open. */
  connected: boolean;
  /** This stream has sent its `ready` (snapshot or catch-up done). */
  current: boolean;
  /** Not connected-and-current, or nothing heard for longer than the stale limit. */
  stale: boolean;
  /** When the last byte (data or keep-alive) came. */
  lastContactAt: Date | undefined;
  /** Revocations held. */
  revocations: number;
  /** Revocations learned since start (a counter: never goes down). */
  received: number;
  lastError?: string;
}

/** State changes worth a log line (not every retry). */
export type FeedTransition =
  | { kind: "connected" }
  | { kind: "down"; error: string }
  | { kind: "stale" }
  | { kind: "fresh" };

const DEFAULT_HEARTBEAT_MS = 5_000;
const STALE_HEARTBEATS = 3;
const DEFAULT_MAX_BACKOFF_MS = 10_000;
const DEFAULT_MIN_BACKOFF_MS = 250;
const LOOPBACK = new Set(["127.0.0.1", "[::1]", "localhost"]);
const HEX = /^[0-9a-fA-F]{1,128}$/;

/**
 * The stream URL of a feed given as `https://ca.example:8443` (the path added) or in full. Throws a
 * one-line E_USAGE for anything else, and for plain http:// off loopback: the feed is what makes a
 * revoked peer lose its connections, it must not be forgeable on the network.
 */
export function feedStreamUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new MtlsError("E_USAGE", `revocation feed: not a URL: ${url}`);
  }
  if (u.protocol === "http:") {
    if (!LOOPBACK.has(u.hostname)) {
      throw new MtlsError(
        "E_USAGE",
        `revocation feed: plain http:// only on 127.0.0.1, ::1 or localhost; use https:// for ${u.host}`,
      );
    }
  } else if (u.protocol !== "https:") {
    throw new MtlsError("E_USAGE", `revocation feed: ${url} is not an https:// URL`);
  }
  if (u.username || u.password) throw new MtlsError("E_USAGE", "revocation feed: no credentials in the URL");
  u.hash = "";
  if (u.pathname === "/" || u.pathname === "") u.pathname = FEED_PATH;
  return u;
}

/**
 * Follows a CA's revocation feed (`GET /v1/revocations/stream`, server-sent events) and keeps every
 * revoked serial it announced, so a revocation reaches running tunnels and gateways in well under a
 * second instead of at the next CRL. The server's certificate is verified against `anchors` with the
 * normal hostname check.
 *
 * The first connection gets a snapshot of all revoked, unexpired certificates, then `ready`, then
 * live events; every event carries an `id:`, and a reconnection sends the last one as
 * `Last-Event-ID` so only what was missed is sent again. It reconnects forever (backoff from 250 ms
 * to 10 s, reset after a `ready`), and counts as a failure: a status other than 200
 * text/event-stream, a TLS or network error, a malformed stream, and silence longer than the stale
 * limit (the server sends a keep-alive comment every heartbeat).
 *
 * Emits "update" (FeedRevocation) for each revocation it did not hold yet, and "status"
 * (FeedTransition) on connected / down / stale / fresh changes. Memory stays bounded: a serial is held
 * once, and a fresh snapshot (a connection without Last-Event-ID) drops what the server no longer
 * lists (expired certificates).
 */
export class RevocationFeedClient extends EventEmitter {
  readonly url: string;
  readonly streamUrl: URL;
  private readonly clock: () => Date;
  private readonly maxBackoffMs: number;
  private readonly minBackoffMs: number;
  private readonly entries = new Map<string, FeedRevocation[]>();
  private held = 0;
  private received = 0;
  private lastEventId: string | undefined;
  private retryMs: number | undefined;
  private heartbeatMs = DEFAULT_HEARTBEAT_MS;
  private failures = 0;
  /** Connection generation: callbacks of an abandoned request see a newer one and do nothing. */
  private generation = 0;
  private req: ClientRequest | undefined;
  private res: IncomingMessage | undefined;
  private connected = false;
  private current = false;
  private lastContact: number | undefined;
  private attemptStartedAt = 0;
  /** Serials a snapshot connection re-sent before its `ready` (the rest expired server-side). */
  private snapshotSeen: Set<string> | undefined;
  /** "down" was announced for this outage; the same error message was reported. */
  private downAnnounced = false;
  private reportedError: string | undefined;
  private lastError: string | undefined;
  private wasStale = true;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private started = false;
  private closed = false;

  constructor(private readonly opts: RevocationFeedOptions) {
    super();
    this.url = opts.url;
    this.streamUrl = feedStreamUrl(opts.url);
    for (const k of ["staleAfterMs", "maxBackoffMs", "minBackoffMs"] as const) {
      const v = opts[k];
      if (v !== undefined && (!Number.isFinite(v) || v <= 0))
        throw new MtlsError("E_USAGE", `revocation feed: ${k} must be a positive number`);
    }
    this.clock = opts.clock ?? (() => new Date());
    this.maxBackoffMs = opts.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
    this.minBackoffMs = Math.min(opts.minBackoffMs ?? DEFAULT_MIN_BACKOFF_MS, this.maxBackoffMs);
  }

  /** Starts connecting (in the background: an unreachable feed is retried, never thrown). */
  start(): this {
    if (this.started || this.closed) return this;
    this.started = true;
    const tick = Math.min(Math.max(Math.floor(this.staleAfterMs() / 5), 20), 1_000);
    this.ticker = setInterval(() => this.tick(), tick);
    this.ticker.unref();
    this.connect();
    return this;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.generation++;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.ticker);
    this.drop();
    this.connected = false;
    this.current = false;
  }

  /** The feed's revocation of `serial` (by `issuerSerial` when both sides know it), if any. */
  lookup(serial: string, issuerSerial?: string | null): FeedRevocation | undefined {
    const list = this.entries.get(normalizeSerial(serial));
    if (!list) return undefined;
    const issuer = issuerSerial ? normalizeSerial(issuerSerial) : null;
    return list.find((e) => e.issuerSerial === null || issuer === null || e.issuerSerial === issuer);
  }

  state(): RevocationFeedState {
    return {
      url: this.url,
      connected: this.connected,
      current: this.current,
      stale: this.isStale(),
      lastContactAt: this.lastContact === undefined ? undefined : new Date(this.lastContact),
      revocations: this.held,
      received: this.received,
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    };
  }

  // ---------------------------------------------------------------- connection

  private staleAfterMs(): number {
    return this.opts.staleAfterMs ?? STALE_HEARTBEATS * this.heartbeatMs;
  }

  private now(): number {
    return this.clock().getTime();
  }

  private anchorsPem(): string | Buffer {
    const a = typeof this.opts.anchors === "function" ? this.opts.anchors() : this.opts.anchors;
    if (typeof a === "string" || Buffer.isBuffer(a)) return a;
    return a.map((c) => certToPem(c.der)).join("");
  }

  private connect(): void {
    if (this.closed) return;
    const gen = ++this.generation;
    this.attemptStartedAt = this.now();
    const headers: Record<string, string> = { accept: "text/event-stream", "cache-control": "no-cache" };
    if (this.lastEventId !== undefined) headers["last-event-id"] = this.lastEventId;
    let req: ClientRequest;
    try {
      const https = this.streamUrl.protocol === "https:";
      req = (https ? httpsRequest : httpRequest)(this.streamUrl, {
        method: "GET",
        headers,
        agent: false,
        ...(https ? { ca: this.anchorsPem() } : {}),
      });
    } catch (err) {
      // Unusable anchors, for one: a failure like any other, retried (the CA file may be fixed).
      this.fail(gen, err);
      return;
    }
    this.req = req;
    req.on("error", (err) => this.fail(gen, err));
    req.on("response", (res) => this.onResponse(gen, res));
    req.end();
  }

  private onResponse(gen: number, res: IncomingMessage): void {
    if (gen !== this.generation) {
      res.destroy();
      return;
    }
    this.res = res;
    const type = String(res.headers["content-type"] ?? "");
    if (res.statusCode !== 200 || !/^text\/event-stream\b/i.test(type)) {
      res.resume();
      this.fail(
        gen,
        new MtlsError(
          "E_HTTP",
          `revocation feed ${this.streamUrl.href}: HTTP ${res.statusCode} ${type || "(no content type)"}, not an event stream`,
        ),
      );
      return;
    }
    this.connected = true;
    this.current = false;
    this.lastContact = this.now();
    this.snapshotSeen = this.lastEventId === undefined ? new Set() : undefined;
    const parser = new SseParser({
      onEvent: (e) => this.onEvent(gen, e),
      onRetry: (ms) => {
        this.retryMs = ms;
      },
    });
    res.on("data", (chunk: Buffer) => {
      if (gen !== this.generation) return;
      this.lastContact = this.now();
      try {
        parser.push(chunk);
      } catch (err) {
        this.fail(gen, err);
      }
    });
    res.on("error", (err) => this.fail(gen, err));
    res.on("end", () =>
      this.fail(
        gen,
        new MtlsError("E_UNAVAILABLE", `revocation feed ${this.streamUrl.href} ended the stream`),
      ),
    );
    res.on("close", () =>
      this.fail(
        gen,
        new MtlsError("E_UNAVAILABLE", `revocation feed ${this.streamUrl.href} closed the stream`),
      ),
    );
  }

  private onEvent(gen: number, e: SseEvent): void {
    if (gen !== this.generation) return;
    if (e.event === "revoked") this.onRevoked(e.data);
    else if (e.event === "ready") this.onReady(e.data);
    // Other event types are for other clients.
    if (e.id !== undefined) this.lastEventId = e.id === "" ? undefined : e.id;
  }

  private onRevoked(data: string): void {
    const rev = parseRevoked(data);
    if (typeof rev === "string") {
      this.report(new MtlsError("E_BAD_INPUT", `revocation feed: ignored a malformed revoked event: ${rev}`));
      return;
    }
    this.snapshotSeen?.add(rev.serial);
    let list = this.entries.get(rev.serial);
    if (list?.some((x) => x.issuerSerial === rev.issuerSerial)) return;
    if (!list) {
      list = [];
      this.entries.set(rev.serial, list);
    }
    list.push(rev);
    this.held++;
    this.received++;
    this.emit("update", rev);
  }

  private onReady(data: string): void {
    try {
      const v = JSON.parse(data) as { heartbeatMs?: unknown };
      const hb = v?.heartbeatMs;
      if (typeof hb === "number" && Number.isFinite(hb) && hb > 0) this.heartbeatMs = hb;
    } catch {
      // A ready without a readable body still means the catch-up is done.
    }
    if (this.snapshotSeen) {
      for (const [serial, list] of this.entries) {
        if (this.snapshotSeen.has(serial)) continue;
        this.entries.delete(serial);
        this.held -= list.length;
      }
      this.snapshotSeen = undefined;
    }
    this.current = true;
    this.failures = 0;
    this.downAnnounced = false;
    this.reportedError = undefined;
    this.lastError = undefined;
    this.announce({ kind: "connected" });
    this.updateStale();
  }

  /** Drops the connection `gen` (if still the current one) and schedules the next attempt. */
  private fail(gen: number, err: unknown): void {
    if (gen !== this.generation || this.closed) return;
    this.generation++;
    this.drop();
    this.connected = false;
    this.current = false;
    this.snapshotSeen = undefined;
    const e = err instanceof Error ? err : new Error(String(err));
    const message = describe(e);
    this.lastError = message;
    if (!this.downAnnounced) {
      this.downAnnounced = true;
      this.announce({ kind: "down", error: message });
    }
    if (message !== this.reportedError) {
      this.reportedError = message;
      this.report(e);
    }
    this.updateStale();
    const base = this.retryMs ?? this.minBackoffMs;
    const delay = Math.min(this.maxBackoffMs, base * 2 ** Math.min(this.failures, 20));
    this.failures++;
    // ±20 %: a fleet that lost the CA at the same moment does not come back at the same moment.
    const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this.connect(), jittered);
    this.reconnectTimer.unref();
  }

  private drop(): void {
    const req = this.req;
    const res = this.res;
    this.req = undefined;
    this.res = undefined;
    res?.destroy();
    req?.destroy();
  }

  /** Silence watchdog, and stale transitions that come with time alone. */
  private tick(): void {
    if (this.closed) return;
    const now = this.now();
    const limit = this.staleAfterMs();
    if (this.connected && this.lastContact !== undefined && now - this.lastContact > limit) {
      this.fail(
        this.generation,
        new MtlsError("E_UNAVAILABLE", `revocation feed silent for more than ${Math.round(limit / 1000)} s`),
      );
    } else if (!this.connected && this.req && now - this.attemptStartedAt > limit) {
      this.fail(
        this.generation,
        new MtlsError("E_UNAVAILABLE", `revocation feed did not answer within ${Math.round(limit / 1000)} s`),
      );
    }
    this.updateStale();
  }

  private isStale(): boolean {
    if (!this.connected || !this.current || this.lastContact === undefined) return true;
    return this.now() - this.lastContact > this.staleAfterMs();
  }

  private updateStale(): void {
    const stale = this.isStale();
    if (stale === this.wasStale) return;
    this.wasStale = stale;
    this.announce({ kind: stale ? "stale" : "fresh" });
  }

  private announce(t: FeedTransition): void {
    try {
      this.emit("status", t);
    } catch {
      // A throwing listener must not stop the feed.
    }
  }

  private report(err: Error): void {
    if (this.closed) return;
    try {
      this.opts.onError?.(err);
    } catch {
      // idem
    }
  }
}

/** A `revoked` event's data, or why it is not one. */
function parseRevoked(data: string): FeedRevocation | string {
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    return "not JSON";
  }
  if (!v || typeof v !== "object") return "not an object";
  const o = v as Record<string, unknown>;
  if (typeof o.serial !== "string" || !HEX.test(o.serial)) return "no hex serial";
  const issuer = o.issuerSerial;
  if (issuer !== undefined && issuer !== null && (typeof issuer !== "string" || !HEX.test(issuer)))
    return "issuerSerial is not hex";
  const revokedAt = typeof o.revokedAt === "string" ? new Date(o.revokedAt) : undefined;
  if (!revokedAt || Number.isNaN(revokedAt.getTime())) return "no valid revokedAt";
  return {
    serial: normalizeSerial(o.serial),
    issuerSerial: typeof issuer === "string" ? normalizeSerial(issuer) : null,
    revokedAt,
    ...(typeof o.reason === "string" && o.reason ? { reason: o.reason } : {}),
    ...(typeof o.name === "string" ? { name: o.name } : {}),
  };
}

function describe(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (err instanceof MtlsError || !code) return err.message;
  return `${code}: ${err.message}`;
}

/**
 * Log lines for a feed's state changes, as tunnels and gateways write them: one when it connects,
 * one when it goes down (not at every retry), one when a connected feed falls silent.
 */
export function logFeedStatus(log: Logger, url: string): (t: FeedTransition) => void {
  let previous: FeedTransition["kind"] | undefined;
  return (t) => {
    if (t.kind === "connected") log.info({ feed: url }, "revocation feed connected");
    else if (t.kind === "down")
      log.warn({ feed: url, err: t.error }, "revocation feed down; CRL and OCSP still apply, retrying");
    else if (t.kind === "stale" && previous !== "down")
      log.warn({ feed: url }, "revocation feed stale; CRL and OCSP still apply");
    previous = t.kind;
  };
}
