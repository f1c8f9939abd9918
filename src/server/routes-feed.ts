import type { ServerResponse } from "node:http";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { RevocationNotice, SnapshotEntry } from "../ca/index.js";
import { MtlsError } from "../errors.js";
import { pathOf } from "./app.js";
import type { RevocationStreamOptions, ServerContext } from "./context.js";
import { errorBody } from "./errors.js";

export const REVOCATION_STREAM_PATH = "/v1/revocations/stream";
/** What a client waits before reconnecting (the stream's first line). */
export const RETRY_MS = 1000;
const DEFAULTS = { heartbeatMs: 5_000, maxStreams: 1000, maxBufferedBytes: 1024 * 1024 };
/** Snapshot and catch-up lines are sent in chunks of about this size. */
const CHUNK = 64 * 1024;
/** A client that reads nothing of its snapshot or catch-up for this long is cut. */
const DRAIN_TIMEOUT_MS = 30_000;

type Phase = "snapshot" | "catchup" | "live";

/** The resume point: Last-Event-ID (an EventSource's reconnect) before ?after=; undefined for none. */
export function resumePoint(req: FastifyRequest): number | undefined {
  const header = req.headers["last-event-id"];
  const fromHeader = Array.isArray(header) ? header[0] : header;
  const query = (req.query as { after?: string | string[] } | undefined)?.after;
  const fromQuery = Array.isArray(query) ? query[0] : query;
  const [text, what] =
    fromHeader !== undefined && fromHeader !== ""
      ? [fromHeader, "the Last-Event-ID header"]
      : [fromQuery, '"after"'];
  if (text === undefined) return undefined;
  const n = /^\d{1,16}$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
  if (!Number.isSafeInteger(n)) {
    throw new MtlsError(
      "E_BAD_INPUT",
      `${what} must be a non-negative integer (an audit seq), not "${text.slice(0, 32)}"`,
    );
  }
  return n;
}

const revokedData = (e: SnapshotEntry): string =>
  JSON.stringify({
    serial: e.serial,
    issuerSerial: e.issuerSerial,
    revokedAt: e.revokedAt.toISOString(),
    reason: e.reason,
    name: e.name,
  });

/** One `revoked` event; `id` is its seq (or, on the snapshot's last entry, the snapshot's seq). */
export const revokedEvent = (e: SnapshotEntry, id?: number): string =>
  `event: revoked\ndata: ${revokedData(e)}\n${id === undefined ? "" : `id: ${id}\n`}\n`;

export const readyEvent = (seq: number, heartbeatMs: number): string =>
  `event: ready\ndata: ${JSON.stringify({ seq, heartbeatMs })}\nid: ${seq}\n\n`;

/**
 * GET /v1/revocations/stream (docs/api.md "Revocation stream"): server-sent events with every
 * revocation, for tunnels and gateways that drop a revoked peer within seconds. No client
 * certificate is required: it carries what the public CRL carries, and the client checks the
 * server's certificate against the CA. Streams bypass Fastify's reply (hijack), so their request
 * log line is written here when they end; they are ended before the server closes, so shutdown
 * does not wait for them.
 */
export function registerFeedRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const opts = ctx.revocations;
  if (!opts) return;
  const heartbeatMs = opts.heartbeatMs ?? DEFAULTS.heartbeatMs;
  const streams = new Set<FeedStream>();
  const heartbeat = setInterval(() => {
    for (const s of streams) s.heartbeat();
  }, heartbeatMs);
  heartbeat.unref();
  let closing = false;
  app.addHook("preClose", async () => {
    closing = true;
    clearInterval(heartbeat);
    for (const s of [...streams]) s.end("server closing");
  });

  app.get(REVOCATION_STREAM_PATH, async (req, reply) => {
    const after = resumePoint(req);
    const max = opts.maxStreams ?? DEFAULTS.maxStreams;
    if (closing || streams.size >= max) return refuse(reply, closing);
    reply.hijack();
    const stream = new FeedStream(req, reply.raw, ctx, opts, () => {
      streams.delete(stream);
      ctx.metrics?.revocationStreams.dec();
    });
    streams.add(stream);
    ctx.metrics?.revocationStreams.inc();
    await stream.run(after, heartbeatMs);
  });
}

function refuse(reply: FastifyReply, closing: boolean) {
  const message = closing
    ? "the CA service is shutting down; reconnect to another node"
    : "too many revocation streams are open on this node; retry later";
  return reply
    .code(503)
    .header("retry-after", "5")
    .type("application/json; charset=utf-8")
    .send(errorBody({ status: 503, code: "E_UNAVAILABLE", message }));
}

/** One client's stream: snapshot or catch-up, `ready`, then live events and heartbeats. */
class FeedStream {
  readonly #started = process.hrtime.bigint();
  #ended = false;
  #why = "client closed";
  #sent = 0;
  /** Live notices that arrive while the snapshot or catch-up is still being sent. */
  #held: RevocationNotice[] | undefined = [];
  /** The highest seq the client has been sent (or that its snapshot covers). */
  #sentSeq = 0;
  readonly #onNotice = (n: RevocationNotice) => {
    if (this.#held) this.#held.push(n);
    else this.#live(n);
  };

  constructor(
    private readonly req: FastifyRequest,
    private readonly res: ServerResponse,
    private readonly ctx: ServerContext,
    private readonly opts: RevocationStreamOptions,
    private readonly onEnd: () => void,
  ) {
    res.on("close", () => this.#finish());
  }

  async run(after: number | undefined, heartbeatMs: number): Promise<void> {
    const source = this.opts.source;
    // Listening before the log is read: a revocation committed meanwhile is either read below or
    // held here, never neither (duplicates are dropped by seq).
    source.on("revocation", this.#onNotice);
    try {
      this.res.writeHead(200, {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        "x-accel-buffering": "no",
        connection: "close",
      });
      this.res.write(`retry: ${RETRY_MS}\n\n`);
      const current = await source.currentSeq();
      if (after !== undefined && after <= current) await this.#catchUp(after, current);
      // No resume point, or one ahead of the log (restored from a backup, another CA): a snapshot.
      else await this.#snapshot();
      if (this.#ended) return;
      this.res.write(readyEvent(this.#sentSeq, heartbeatMs));
      const held = this.#held ?? [];
      this.#held = undefined;
      for (const n of held) this.#live(n);
    } catch (err) {
      if (this.#ended) return; // cut or shut down meanwhile: the failure is a consequence
      this.ctx.logger.error(
        { reqId: this.req.id, path: REVOCATION_STREAM_PATH, err: (err as Error).message },
        "revocation stream failed",
      );
      this.end("failed");
    }
  }

  heartbeat(): void {
    if (!this.#held) this.#write(": keep-alive\n\n");
  }

  end(why: string): void {
    if (this.#ended) return;
    this.#why = why;
    this.res.end();
    this.#finish();
  }

  async #snapshot(): Promise<void> {
    const snap = await this.opts.source.snapshot();
    let chunk = "";
    const { entries } = snap;
    for (let i = 0; i < entries.length && !this.#ended; i++) {
      chunk += revokedEvent(entries[i] as SnapshotEntry, i === entries.length - 1 ? snap.seq : undefined);
      if (chunk.length >= CHUNK) {
        await this.#bulk(chunk, "snapshot", 0);
        chunk = "";
      }
    }
    if (chunk) await this.#bulk(chunk, "snapshot", 0);
    this.#count("snapshot", entries.length);
    this.#sentSeq = snap.seq;
  }

  async #catchUp(after: number, current: number): Promise<void> {
    let chunk = "";
    let count = 0;
    let last = after;
    for await (const n of this.opts.source.catchUp(after)) {
      if (this.#ended) return;
      chunk += revokedEvent(n, n.seq);
      count++;
      last = n.seq;
      if (chunk.length >= CHUNK) {
        await this.#bulk(chunk, "catchup", count);
        chunk = "";
        count = 0;
      }
    }
    if (chunk) await this.#bulk(chunk, "catchup", count);
    // Everything up to `current` was committed before the catch-up read it.
    this.#sentSeq = Math.max(last, current);
  }

  /** Writes a chunk of the snapshot or catch-up, waiting for the client to read (up to 30 s). */
  async #bulk(chunk: string, phase: Phase, count: number): Promise<void> {
    if (this.#ended) return;
    this.#count(phase, count);
    if (this.res.write(chunk)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.res.off("drain", done);
        this.res.off("close", done);
        resolve();
      };
      const timer = setTimeout(() => {
        this.#why = "client not reading";
        this.res.destroy();
        done();
      }, DRAIN_TIMEOUT_MS);
      this.res.on("drain", done);
      this.res.on("close", done);
    });
  }

  #live(n: RevocationNotice): void {
    if (n.seq <= this.#sentSeq) return;
    this.#sentSeq = n.seq;
    if (this.#write(revokedEvent(n, n.seq))) this.#count("live", 1);
  }

  /** Writes live data; a client whose unsent data passes the limit is cut (it is not reading). */
  #write(text: string): boolean {
    if (this.#ended) return false;
    this.res.write(text);
    if (this.res.writableLength > (this.opts.maxBufferedBytes ?? DEFAULTS.maxBufferedBytes)) {
      this.#why = "client not reading";
      this.res.destroy();
      this.#finish();
      return false;
    }
    return true;
  }

  #count(phase: Phase, n: number): void {
    this.#sent += n;
    if (n) this.ctx.metrics?.revocationEvents.inc({ phase }, n);
  }

  /** Once per stream: stop listening, and the request log line and metrics Fastify would write. */
  #finish(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.opts.source.off("revocation", this.#onNotice);
    this.onEnd();
    const seconds = Number(process.hrtime.bigint() - this.#started) / 1e9;
    this.ctx.logger.info(
      {
        reqId: this.req.id,
        listener: "api",
        ip: this.req.ip,
        method: this.req.method,
        path: pathOf(this.req),
        status: 200,
        actor: "anonymous",
        ms: Math.round(seconds * 100_000) / 100,
        events: this.#sent,
        ended: this.#why,
      },
      "request",
    );
    this.ctx.metrics?.requests.inc({ listener: "api", route: REVOCATION_STREAM_PATH, status: "200" });
    this.ctx.metrics?.duration.observe({ listener: "api", route: REVOCATION_STREAM_PATH }, seconds);
  }
}
