import { EventEmitter } from "node:events";
import type { AuditEvent, CertificateRecord, RevocationWatch } from "../store/index.js";
import type { CertificateAuthority, RevokedOrigin } from "./authority.js";

/** One revocation, as the feed announces it and GET /v1/revocations/stream sends it. */
export interface RevocationNotice {
  /** The seq of its `cert.revoke` audit event. */
  seq: number;
  serial: string;
  /** Serial of the issuing CA certificate (null if the record is gone, which the store never does). */
  issuerSerial: string | null;
  revokedAt: Date;
  reason: string;
  name: string;
}

/** A line of the snapshot: a currently revoked, unexpired leaf of the intermediate. */
export type SnapshotEntry = Omit<RevocationNotice, "seq">;

export interface RevocationSnapshot {
  /** The audit seq the snapshot is current as of: resume after it. */
  seq: number;
  entries: SnapshotEntry[];
}

export interface FeedState {
  /** Whether the PostgreSQL LISTEN connection is up; null on a store without one (SQLite polls). */
  listening: boolean | null;
  /** When the audit log was last read through to its end. */
  lastPollAt: Date | null;
  /** The seq up to which the log has been read (every revocation up to it was announced). */
  lastSeq: number;
}

export interface RevocationFeedOptions {
  /**
   * How often the log is read without a wake-up: default 1 s on a store without notifications
   * (SQLite: `mtls revoke` and other processes on the machine), 5 s on PostgreSQL (a safety net
   * behind NOTIFY).
   */
  pollMs?: number;
  /** Events read per query (default 500). */
  pageSize?: number;
  /** Failures that do not throw (a poll while the store is down); the feed keeps trying. */
  onError?: (err: Error) => void;
  /** Each change of the LISTEN connection (PostgreSQL only). */
  onListening?: (up: boolean, err?: Error) => void;
}

interface FeedEvents {
  revocation: [notice: RevocationNotice];
}

const REVOKE = "cert.revoke";
const FOREIGN: RevokedOrigin = { foreign: true };
/** Own revocations not yet seen in the log are forgotten after this long (they always show up sooner). */
const OWN_TTL_MS = 10 * 60_000;

/**
 * Tails the audit log for `cert.revoke` events and announces each once, in seq order, as a
 * "revocation" event: revocations of this process, of other processes on the same SQLite file, and
 * of other nodes on the same PostgreSQL database. It reads on a timer (`pollMs`) and at once when
 * woken: by PostgreSQL's NOTIFY (Store.watchRevocations) and by this process's own ca.events
 * "revoked". Wake-ups are coalesced: one read at a time, and one more if woken meanwhile.
 *
 * Revocations not made by this process are also announced on ca.events "revoked" (with
 * `origin.foreign`), so the OCSP responder drops its cached answers and the CRL publisher re-signs:
 * this is how node B's /ocsp and /crl learn of a revocation made on node A.
 *
 * Commits of audit events happen in seq order (one writer at a time on both stores), so "every event
 * after seq N" misses nothing and lastAuditSeq() bounds what is committed.
 */
export class RevocationFeed extends EventEmitter<FeedEvents> {
  readonly #ca: CertificateAuthority;
  readonly #pollMs: number;
  readonly #pageSize: number;
  readonly #onError: (err: Error) => void;
  readonly #onListening: RevocationFeedOptions["onListening"];
  /** Serials this process revoked (ca.events), with when: not to be announced back to it. */
  readonly #own = new Map<string, number>();
  #cursor = 0;
  #lastPollAt: Date | null = null;
  #listening: boolean | null = null;
  #watch: RevocationWatch | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #started = false;
  #closed = false;

  readonly #onOwnRevoked = (records: CertificateRecord[], origin?: RevokedOrigin) => {
    if (origin?.foreign) return;
    const now = Date.now();
    for (const r of records) this.#own.set(r.serial, now);
    this.wake();
  };

  constructor(ca: CertificateAuthority, opts: RevocationFeedOptions = {}) {
    super();
    this.#ca = ca;
    this.#pollMs = opts.pollMs ?? (ca.store.watchRevocations ? 5_000 : 1_000);
    this.#pageSize = opts.pageSize ?? 500;
    this.#onError = opts.onError ?? (() => {});
    this.#onListening = opts.onListening;
  }

  /**
   * Starts after the newest event in the log (what came before is the snapshot's business), then
   * listens and polls. Rejects when the store cannot be read at all; later failures go to onError.
   */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    this.#cursor = await this.#ca.store.lastAuditSeq();
    this.#lastPollAt = new Date();
    this.#ca.events.on("revoked", this.#onOwnRevoked);
    const store = this.#ca.store;
    if (store.watchRevocations) {
      this.#listening = false;
      this.#watch = await store.watchRevocations(
        () => this.wake(),
        (s) => {
          if (this.#closed || this.#listening === s.connected) return;
          this.#listening = s.connected;
          this.#onListening?.(s.connected, s.error);
        },
      );
      if (this.#closed) await this.#watch.close();
    }
    if (this.#closed) return;
    this.#timer = setInterval(() => this.wake(), this.#pollMs);
    this.#timer.unref();
  }

  /** Reads the log now (or once more after the read in progress). */
  wake(): void {
    if (this.#closed || !this.#started) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = (async () => {
      do {
        this.#again = false;
        try {
          await this.#poll();
        } catch (err) {
          this.#report(err);
        }
      } while (this.#again && !this.#closed);
    })().finally(() => {
      this.#running = undefined;
    });
  }

  /** Every revocation after `afterSeq`, in seq order, a page at a time. */
  async *catchUp(afterSeq: number): AsyncGenerator<RevocationNotice> {
    let after = afterSeq;
    for (;;) {
      const page = await this.#ca.store.listAudit({
        afterSeq: after,
        limit: this.#pageSize,
        actions: [REVOKE],
      });
      for (const e of page) {
        yield (await this.#notice(e)).notice;
        after = e.seq;
      }
      if (page.length < this.#pageSize) return;
    }
  }

  /**
   * Every revoked, unexpired leaf of the intermediate, and the seq it is current as of. The seq is
   * read first: a revocation committed after it may or may not be listed, and comes again after
   * the seq (a repeat is harmless); one committed before it is certainly listed.
   */
  async snapshot(now: Date = this.#ca.clock()): Promise<RevocationSnapshot> {
    const seq = await this.#ca.store.lastAuditSeq();
    const issuerSerial = this.#ca.intermediate.serial;
    const revoked = await this.#ca.store.listRevoked(issuerSerial, now, { names: true });
    const entries = revoked.map((r) => ({
      serial: r.serial,
      issuerSerial,
      revokedAt: r.revokedAt ?? now,
      reason: r.reason ?? "unspecified",
      name: r.name ?? "",
    }));
    return { seq, entries };
  }

  /** The newest seq in the audit log (what a stream's ready event reports). */
  currentSeq(): Promise<number> {
    return this.#ca.store.lastAuditSeq();
  }

  state(): FeedState {
    return { listening: this.#listening, lastPollAt: this.#lastPollAt, lastSeq: this.#cursor };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#ca.events.off("revoked", this.#onOwnRevoked);
    if (this.#timer) clearInterval(this.#timer);
    await this.#watch?.close();
    await this.#running;
    this.#listening = this.#listening === null ? null : false;
    this.removeAllListeners();
  }

  // ------------------------------------------------------------------------------------------

  /**
   * Reads every revocation after the cursor. The log's last seq is read first: every event up to it
   * is committed, so once the revocations are read through, the cursor may move to it (a log with
   * many other events is then not rescanned from the last revocation on every poll).
   */
  async #poll(): Promise<void> {
    const store = this.#ca.store;
    const last = await store.lastAuditSeq();
    const foreign: CertificateRecord[] = [];
    try {
      for (;;) {
        const page = await store.listAudit({
          afterSeq: this.#cursor,
          limit: this.#pageSize,
          actions: [REVOKE],
        });
        for (const e of page) {
          if (this.#closed) return;
          const { notice, record } = await this.#notice(e);
          this.#cursor = e.seq;
          this.#emitSafely(notice);
          if (record && !this.#isOwn(record.serial)) foreign.push(record);
        }
        if (page.length < this.#pageSize) break;
      }
      this.#cursor = Math.max(this.#cursor, last);
      this.#lastPollAt = new Date();
      this.#pruneOwn();
    } finally {
      if (foreign.length) this.#announceForeign(foreign);
    }
  }

  async #notice(e: AuditEvent): Promise<{ notice: RevocationNotice; record: CertificateRecord | undefined }> {
    const serial = e.subject ?? "";
    const record = serial ? await this.#ca.store.getCertificate(serial) : undefined;
    const details = e.details as { name?: unknown; reason?: unknown };
    return {
      notice: {
        seq: e.seq,
        serial,
        issuerSerial: record?.issuerSerial ?? null,
        revokedAt: e.at,
        reason:
          typeof details.reason === "string" ? details.reason : (record?.revocationReason ?? "unspecified"),
        name: typeof details.name === "string" ? details.name : (record?.name ?? ""),
      },
      record,
    };
  }

  #emitSafely(notice: RevocationNotice): void {
    try {
      this.emit("revocation", notice);
    } catch (err) {
      // A listener's bug must not stop the feed or make it announce the event twice.
      this.#report(err);
    }
  }

  /**
   * True when this process revoked `serial` itself: announced already (and then forgotten here), or
   * still between revoke()'s commit and its announcement, which comes next and needs no help.
   */
  #isOwn(serial: string): boolean {
    return this.#own.delete(serial) || this.#ca.isRevokingHere(serial);
  }

  #pruneOwn(): void {
    const old = Date.now() - OWN_TTL_MS;
    for (const [serial, at] of this.#own) if (at < old) this.#own.delete(serial);
  }

  /** Announces on ca.events the revocations of other processes (OCSP cache dropped, CRL re-signed). */
  #announceForeign(records: CertificateRecord[]): void {
    if (this.#closed) return;
    try {
      this.#ca.events.emit("revoked", records, FOREIGN);
    } catch (err) {
      this.#report(err);
    }
  }

  #report(err: unknown): void {
    try {
      this.#onError(err instanceof Error ? err : new Error(String(err)));
    } catch {
      // a throwing callback must not stop the feed
    }
  }
}
