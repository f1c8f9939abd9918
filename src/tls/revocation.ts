import { X509Certificate as NodeX509, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { type FSWatcher, watch } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import { MtlsError } from "../errors.js";
import {
  buildOcspRequest,
  type CertInfo,
  type CrlIndex,
  crlSignedBy,
  indexCrls,
  normalizeSerial,
  type OcspAnswer,
  parseOcspResponse,
  sha256Hex,
} from "../pki/index.js";
import {
  type FeedAnchors,
  type FeedTransition,
  RevocationFeedClient,
  type RevocationFeedState,
} from "./revocation-feed.js";
import type { RevocationChecker, RevocationState, RevocationStatus } from "./types.js";

export interface RevocationCheckerOptions {
  /** CRL sources: file paths (watched) or http(s) URLs (refetched). A file may hold several CRLs. */
  crl?: string[];
  /** Ask the OCSP responder named in the leaf's AIA. */
  ocsp?: boolean;
  /** Timeout of one OCSP exchange (default 3 s). */
  ocspTimeoutMs?: number;
  /** Timeout of one CRL download (default 10 s). */
  fetchTimeoutMs?: number;
  /** Minimum time between two fetches of a CRL URL, and the first retry delay (default 30 s). */
  refreshFloorMs?: number;
  /** A CRL URL is refetched at its nextUpdate, but at least this often (default 5 min). */
  crlMaxAgeMs?: number;
  /** How often OCSP answers of recently checked serials are re-polled (default 30 s; 0 = never). */
  ocspRecheckMs?: number;
  /** A serial is re-polled while check() saw it within this window (default 15 min). */
  ocspRecheckWindowMs?: number;
  /** After a failed OCSP exchange, the responder is not asked again for that serial this long (default 5 s). */
  ocspErrorHoldMs?: number;
  /** Safety net besides fs.watch: CRL files are stat'ed this often (default 30 s; 0 = never). */
  filePollMs?: number;
  /** Called for every failure that does not throw: a bad CRL reload, a failed fetch, an OCSP error. */
  onError?: (err: Error, source: string) => void;
  clock?: () => Date;
  /** When the OCSP responder cannot be reached and no other source has data: "good" (soft-fail) instead of "unknown". */
  softFail?: boolean;
  /**
   * A CA's revocation feed (revocation-feed.ts), asked before CRLs and OCSP: a revocation it
   * announces reaches open connections at once ("update"). While it is down, CRLs and OCSP apply as
   * without it. Never blocks the start: an unreachable feed is retried in the background.
   */
  feed?: RevocationFeedSpec;
}

export interface RevocationFeedSpec {
  /** https://ca.example:8443 (the stream path is added) or the full stream URL. */
  url: string;
  /** Trust anchors for the feed's server certificate: PEM, certificates, or a function (read at each connection). */
  anchors: FeedAnchors | (() => FeedAnchors);
  staleAfterMs?: number;
  maxBackoffMs?: number;
  /** State changes of the feed, for log lines (connected, down, stale, fresh). */
  onStatus?: (t: FeedTransition) => void;
  /** The feed's failures (each message once per outage); default: the checker's onError. */
  onError?: (err: Error) => void;
}

const DEFAULTS = {
  ocspTimeoutMs: 3_000,
  fetchTimeoutMs: 10_000,
  refreshFloorMs: 30_000,
  crlMaxAgeMs: 5 * 60_000,
  ocspRecheckMs: 30_000,
  ocspRecheckWindowMs: 15 * 60_000,
  ocspErrorHoldMs: 5_000,
  filePollMs: 30_000,
};
/** Cache lifetime of an OCSP answer without nextUpdate. */
const OCSP_DEFAULT_TTL_MS = 5 * 60_000;
const WATCH_DEBOUNCE_MS = 100;
/** Shortest time between two "update"s caused by the revocation feed. */
const FEED_UPDATE_GAP_MS = 100;
const MAX_CRL_BYTES = 64 * 1024 * 1024;
const MAX_OCSP_BYTES = 1024 * 1024;
const OCSP_RECHECK_CONCURRENCY = 8;
/** setTimeout's ceiling (~24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** One parsed CRL, its serials indexed in a Map (O(1) lookups in CRLs of 100k entries). */
interface CrlRecord {
  info: CrlIndex;
  id: string;
  source: CrlSource;
  /** Signature check against an issuer (by fingerprint), done once. */
  verified: Map<string, boolean>;
}

interface CrlSource {
  kind: "file" | "url";
  /** Absolute path, or the URL. */
  location: string;
  crls: CrlRecord[];
  /** File: the bytes last parsed, and the last bytes that failed (reported once). */
  content?: Buffer;
  badContent?: Buffer;
  statKey?: string;
  /** URL: conditional-GET validators, retry state, timer. */
  etag?: string;
  lastModified?: string;
  failures: number;
  timer?: NodeJS.Timeout;
}

interface OcspEntry {
  key: string;
  url: string;
  leaf: CertInfo;
  issuer: CertInfo;
  answer?: OcspAnswer;
  /** Clock ms until which `answer` may be used. */
  expiresAt: number;
  /** Clock ms until which a failed responder is not asked again for this serial. */
  errorUntil: number;
  /** The responder could not be reached (or answered garbage) on the last attempt. */
  unreachable: boolean;
  /** Clock ms of the last check() for this serial. */
  lastUsed: number;
  /** Exchanges tried so far (the first answer is news to nobody: no "update" for it). */
  attempts: number;
  pending?: Promise<void>;
}

const isUrl = (s: string): boolean => /^https?:\/\//i.test(s);

/**
 * Builds a revocation checker from CRLs (files watched, URLs refetched) and OCSP (the responder in
 * the leaf's AIA, answers cached until nextUpdate and re-polled while the serial is in use). A CRL
 * file that is missing or unreadable at start is an E_BAD_INPUT error; later failures keep the
 * previous data and go to `onError`.
 */
export async function createRevocationChecker(
  opts: RevocationCheckerOptions = {},
): Promise<RevocationChecker> {
  const checker = new Checker(opts);
  try {
    await checker.start();
  } catch (err) {
    checker.close();
    throw err;
  }
  return checker;
}

class Checker extends EventEmitter implements RevocationChecker {
  private readonly cfg: typeof DEFAULTS;
  private readonly clock: () => Date;
  private readonly onError: (err: Error, source: string) => void;
  private readonly sources: CrlSource[] = [];
  /** CRLs by issuer name (the subject string of the CA certificate). */
  private byIssuer = new Map<string, CrlRecord[]>();
  private readonly ocspCache = new Map<string, OcspEntry>();
  private readonly watchers: FSWatcher[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private staleTimer: NodeJS.Timeout | undefined;
  private readonly abort = new AbortController();
  private feed: RevocationFeedClient | undefined;
  private closed = false;

  constructor(private readonly opts: RevocationCheckerOptions) {
    super();
    this.cfg = { ...DEFAULTS };
    for (const k of Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]) {
      const v = opts[k];
      if (v !== undefined) {
        if (!Number.isFinite(v) || v < 0)
          throw new MtlsError("E_USAGE", `${k} must be a non-negative number`);
        this.cfg[k] = v;
      }
    }
    this.clock = opts.clock ?? (() => new Date());
    this.onError = opts.onError ?? (() => {});
  }

  // ---------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    this.startFeed();
    for (const item of this.opts.crl ?? []) {
      this.sources.push(
        isUrl(item)
          ? { kind: "url", location: item, crls: [], failures: 0 }
          : { kind: "file", location: resolve(item), crls: [], failures: 0 },
      );
    }
    for (const src of this.sources.filter((s) => s.kind === "file")) await this.loadFileAtStart(src);
    await Promise.all(this.sources.filter((s) => s.kind === "url").map((s) => this.fetchUrl(s)));
    this.reindex();
    this.watchFiles();
    if (this.opts.ocsp && this.cfg.ocspRecheckMs > 0)
      this.every(this.cfg.ocspRecheckMs, () => this.recheckOcsp());
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    this.feed?.close();
    for (const w of this.watchers) w.close();
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sources) if (s.timer) clearTimeout(s.timer);
    if (this.staleTimer) clearTimeout(this.staleTimer);
    this.timers.clear();
  }

  private after(ms: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(
      () => {
        this.timers.delete(t);
        if (!this.closed) fn();
      },
      Math.min(Math.max(0, ms), MAX_TIMER_MS),
    );
    t.unref();
    this.timers.add(t);
    return t;
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(() => {
      if (!this.closed) fn();
    }, ms);
    t.unref();
    this.timers.add(t);
  }

  private report(err: unknown, source: string): void {
    if (this.closed) return;
    const e = err instanceof Error ? err : new Error(String(err));
    try {
      this.onError(e, source);
    } catch {
      // a throwing callback must not break reloads
    }
  }

  private changed(source: string): void {
    if (!this.closed) this.emit("update", { source });
  }

  // ---------------------------------------------------------------- feed

  /** Throws E_USAGE for a bad URL; connects in the background. */
  private startFeed(): void {
    const spec = this.opts.feed;
    if (!spec) return;
    const source = `feed:${spec.url}`;
    const feed = new RevocationFeedClient({
      url: spec.url,
      anchors: spec.anchors,
      clock: this.clock,
      onError: spec.onError ?? ((err) => this.report(err, source)),
      ...(spec.staleAfterMs !== undefined ? { staleAfterMs: spec.staleAfterMs } : {}),
      ...(spec.maxBackoffMs !== undefined ? { maxBackoffMs: spec.maxBackoffMs } : {}),
    });
    // Each "update" makes every holder of open connections re-check all of them, and a snapshot of
    // thousands of revocations arrives in hundreds of chunks: at most one "update" per
    // FEED_UPDATE_GAP_MS. A lone live revocation is announced at once (after the chunk that carried
    // it is parsed: the re-check then sees all of it).
    let scheduled = false;
    let last = Number.NEGATIVE_INFINITY;
    const fire = () => {
      scheduled = false;
      last = Date.now();
      this.changed(source);
    };
    feed.on("update", () => {
      if (scheduled) return;
      scheduled = true;
      const wait = last + FEED_UPDATE_GAP_MS - Date.now();
      if (wait <= 0) queueMicrotask(fire);
      else this.after(wait, fire);
    });
    if (spec.onStatus) feed.on("status", spec.onStatus);
    this.feed = feed;
    feed.start();
  }

  /** The feed's connection state, for metrics (undefined: no feed configured). */
  feedState(): RevocationFeedState | undefined {
    return this.feed?.state();
  }

  // ---------------------------------------------------------------- check

  async check(leaf: CertInfo, issuer: CertInfo | undefined): Promise<RevocationStatus> {
    const fed = this.feed?.lookup(leaf.serial, issuer?.serial);
    if (fed) {
      return {
        status: "revoked",
        source: `feed:${this.feed?.url}`,
        revokedAt: fed.revokedAt,
        ...(fed.reason ? { reason: fed.reason } : {}),
      };
    }
    if (!issuer) return { status: "unknown", source: "none" };
    const crl = this.crlStatus(leaf, issuer);
    if (crl?.status === "revoked") return crl;
    const ocsp = this.opts.ocsp ? await this.ocspStatus(leaf, issuer) : undefined;
    if (ocsp && ocsp.status !== "unknown") return ocsp;
    if (crl) return crl;
    if (ocsp?.unreachable && this.opts.softFail) {
      return { status: "good", source: `${ocsp.source} (unreachable, soft-fail)` };
    }
    if (ocsp) return { status: "unknown", source: ocsp.source };
    return { status: "unknown", source: "none" };
  }

  // ---------------------------------------------------------------- CRL lookups

  private reindex(): void {
    const map = new Map<string, CrlRecord[]>();
    for (const src of this.sources) {
      for (const rec of src.crls) {
        const list = map.get(rec.info.issuer) ?? [];
        list.push(rec);
        map.set(rec.info.issuer, list);
      }
    }
    this.byIssuer = map;
    this.scheduleStaleness();
  }

  /** The verdict of the newest CRL that `issuer` signed; undefined when there is none or it is stale. */
  private crlStatus(leaf: CertInfo, issuer: CertInfo): RevocationStatus | undefined {
    const candidates = this.byIssuer.get(issuer.subject);
    if (!candidates?.length) return undefined;
    let best: CrlRecord | undefined;
    for (const rec of candidates) {
      if (!this.signedBy(rec, issuer)) continue;
      if (!best || newer(rec.info, best.info)) best = rec;
    }
    if (!best) return undefined;
    const source = `crl:${best.source.location} (#${best.info.crlNumber ?? "?"})`;
    const entry = best.info.entries.get(normalizeSerial(leaf.serial));
    // Revocation is final: an entry counts even in a CRL past its nextUpdate.
    if (entry) return { status: "revoked", source, reason: entry.reason, revokedAt: entry.revokedAt };
    if (best.info.nextUpdate && best.info.nextUpdate.getTime() < this.clock().getTime()) return undefined;
    return { status: "good", source };
  }

  private signedBy(rec: CrlRecord, issuer: CertInfo): boolean {
    let ok = rec.verified.get(issuer.fingerprint);
    if (ok === undefined) {
      ok = crlSignedBy(rec.info, issuer);
      rec.verified.set(issuer.fingerprint, ok);
      if (!ok) {
        this.report(
          new MtlsError(
            "E_UNTRUSTED",
            `a CRL in ${rec.source.location} names ${rec.info.issuer} as issuer but is not signed by its key: ignored`,
          ),
          `crl:${rec.source.location}`,
        );
      }
    }
    return ok;
  }

  /** Emits "update" when the earliest future nextUpdate passes (a CRL going stale changes verdicts). */
  private scheduleStaleness(): void {
    if (this.staleTimer) {
      clearTimeout(this.staleTimer);
      this.timers.delete(this.staleTimer);
      this.staleTimer = undefined;
    }
    const now = this.clock().getTime();
    let next = Number.POSITIVE_INFINITY;
    for (const list of this.byIssuer.values()) {
      for (const rec of list) {
        const t = rec.info.nextUpdate?.getTime();
        if (t !== undefined && t > now && t < next) next = t;
      }
    }
    if (next === Number.POSITIVE_INFINITY) return;
    this.staleTimer = this.after(next - now + 1, () => {
      this.staleTimer = undefined;
      this.changed("crl:stale");
      this.scheduleStaleness();
    });
  }

  /**
   * Replaces a source's CRLs. Per issuer name, a CRL older than the one held (lower CRL number and
   * not newer) is refused: an old, validly signed CRL replayed over plain HTTP must not un-revoke.
   * Returns true when the data changed.
   */
  private install(src: CrlSource, infos: CrlIndex[]): boolean {
    const next: CrlRecord[] = [];
    for (const info of infos) {
      const held = src.crls.find((r) => r.info.issuer === info.issuer);
      if (held && isRollback(info, held.info)) {
        this.report(
          new MtlsError(
            "E_BAD_INPUT",
            `${src.location}: CRL #${info.crlNumber} of ${info.issuer} is older than #${held.info.crlNumber} already loaded: kept the newer one`,
          ),
          `crl:${src.location}`,
        );
        next.push(held);
        continue;
      }
      const id = sha256Hex(info.der);
      const same = src.crls.find((r) => r.id === id);
      next.push(same ?? { info, id, source: src, verified: new Map() });
    }
    const before = src.crls
      .map((r) => r.id)
      .sort()
      .join();
    const after = next
      .map((r) => r.id)
      .sort()
      .join();
    src.crls = next;
    if (before === after) return false;
    this.reindex();
    return true;
  }

  // ---------------------------------------------------------------- CRL files

  private async loadFileAtStart(src: CrlSource): Promise<void> {
    let buf: Buffer;
    try {
      buf = await readFile(src.location);
    } catch (err) {
      throw new MtlsError("E_BAD_INPUT", `cannot read CRL file ${src.location}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    let infos: CrlIndex[];
    try {
      infos = indexCrls(buf);
    } catch (err) {
      throw new MtlsError("E_BAD_INPUT", `${src.location}: ${(err as Error).message}`, { cause: err });
    }
    src.content = buf;
    src.statKey = await statKey(src.location);
    this.install(src, infos);
  }

  private async reloadFile(src: CrlSource): Promise<void> {
    let buf: Buffer;
    try {
      buf = await readFile(src.location);
    } catch (err) {
      this.report(
        new MtlsError("E_IO", `cannot read CRL file ${src.location} (keeping the CRLs loaded before)`, {
          cause: err,
        }),
        `crl:${src.location}`,
      );
      return;
    }
    if (this.closed) return;
    src.statKey = await statKey(src.location);
    if (src.content?.equals(buf)) return;
    let infos: CrlIndex[];
    try {
      infos = indexCrls(buf);
    } catch (err) {
      if (!src.badContent?.equals(buf)) {
        src.badContent = buf;
        this.report(
          new MtlsError(
            "E_BAD_INPUT",
            `${src.location}: ${(err as Error).message} (keeping the CRLs loaded before)`,
            { cause: err },
          ),
          `crl:${src.location}`,
        );
      }
      return;
    }
    src.content = buf;
    src.badContent = undefined;
    if (this.install(src, infos)) this.changed(`crl:${src.location}`);
  }

  /**
   * Watches each CRL file's folder, not the file: writers replace files by renaming a temp file over
   * them (and Kubernetes swaps a symlinked folder), which a watch on the old inode never sees. Any
   * event in the folder re-reads its CRL files after a short debounce; unchanged bytes are ignored.
   */
  private watchFiles(): void {
    const byDir = new Map<string, CrlSource[]>();
    for (const src of this.sources.filter((s) => s.kind === "file")) {
      const dir = dirname(src.location);
      byDir.set(dir, [...(byDir.get(dir) ?? []), src]);
    }
    for (const [dir, srcs] of byDir) {
      let timer: NodeJS.Timeout | undefined;
      const reload = () => {
        if (timer) return;
        timer = this.after(WATCH_DEBOUNCE_MS, () => {
          timer = undefined;
          for (const s of srcs) void this.reloadFile(s);
        });
      };
      try {
        const w = watch(dir, { persistent: false }, reload);
        w.on("error", (err) => this.report(err, `crl:${dir}`));
        this.watchers.push(w);
      } catch (err) {
        this.report(
          new MtlsError(
            "E_IO",
            `cannot watch ${dir} (${srcs.map((s) => basename(s.location)).join(", ")}): polling only`,
            {
              cause: err,
            },
          ),
          `crl:${dir}`,
        );
      }
      if (this.cfg.filePollMs > 0) {
        this.every(this.cfg.filePollMs, () => {
          for (const s of srcs) {
            void statKey(s.location).then((k) => {
              if (k !== s.statKey) reload();
            });
          }
        });
      }
    }
  }

  // ---------------------------------------------------------------- CRL URLs

  private async fetchUrl(src: CrlSource): Promise<void> {
    const where = `crl:${src.location}`;
    const limit = deadline(this.abort.signal, this.cfg.fetchTimeoutMs);
    try {
      const headers: Record<string, string> = { accept: "application/pkix-crl, */*" };
      if (src.crls.length && src.etag) headers["if-none-match"] = src.etag;
      if (src.crls.length && src.lastModified) headers["if-modified-since"] = src.lastModified;
      const res = await fetch(src.location, {
        headers,
        signal: limit.signal,
      });
      if (res.status !== 304) {
        if (!res.ok) throw new MtlsError("E_IO", `GET ${src.location}: HTTP ${res.status}`);
        const body = await readBody(res, MAX_CRL_BYTES, src.location);
        const infos = indexCrls(body);
        src.etag = res.headers.get("etag") ?? undefined;
        src.lastModified = res.headers.get("last-modified") ?? undefined;
        if (this.install(src, infos)) this.changed(where);
      } else {
        await res.body?.cancel();
      }
      src.failures = 0;
    } catch (err) {
      if (this.closed) return;
      src.failures++;
      const e =
        err instanceof MtlsError
          ? err
          : new MtlsError("E_IO", `cannot fetch CRL ${src.location}: ${describe(err)}`, { cause: err });
      this.report(e, where);
    } finally {
      limit.done();
    }
    this.scheduleFetch(src);
  }

  private scheduleFetch(src: CrlSource): void {
    if (this.closed) return;
    const floor = this.cfg.refreshFloorMs;
    let delay: number;
    if (src.failures > 0) {
      delay = Math.min(floor * 2 ** (src.failures - 1), Math.max(floor, this.cfg.crlMaxAgeMs));
    } else {
      // At the earliest nextUpdate, clamped to [floor, max age]; at the floor when a CRL has none.
      const nexts = src.crls.map((r) => r.info.nextUpdate?.getTime());
      if (nexts.length === 0 || nexts.some((n) => n === undefined)) {
        delay = floor;
      } else {
        const next = Math.min(...(nexts as number[]));
        delay = Math.min(
          Math.max(next - this.clock().getTime(), floor),
          Math.max(floor, this.cfg.crlMaxAgeMs),
        );
      }
    }
    src.timer = this.after(delay, () => void this.fetchUrl(src));
  }

  // ---------------------------------------------------------------- OCSP

  private async ocspStatus(
    leaf: CertInfo,
    issuer: CertInfo,
  ): Promise<(RevocationStatus & { unreachable?: boolean }) | undefined> {
    const url = leaf.ocspUrls.find(isUrl);
    if (!url) return undefined;
    const key = `${issuer.fingerprint}:${normalizeSerial(leaf.serial)}`;
    const now = this.clock().getTime();
    let entry = this.ocspCache.get(key);
    if (!entry) {
      // Never send a request on behalf of a certificate the issuer did not sign (its AIA could
      // point anywhere).
      if (!issuedBy(leaf, issuer)) return { status: "unknown", source: `ocsp:${url}` };
      entry = {
        key,
        url,
        leaf,
        issuer,
        expiresAt: 0,
        errorUntil: 0,
        unreachable: false,
        lastUsed: now,
        attempts: 0,
      };
      this.ocspCache.set(key, entry);
    }
    entry.lastUsed = now;
    if (!(entry.answer && entry.expiresAt > now) && entry.errorUntil <= now) {
      await this.refreshOcsp(entry);
    }
    return this.ocspVerdict(entry, this.clock().getTime());
  }

  private ocspVerdict(entry: OcspEntry, now: number): RevocationStatus & { unreachable?: boolean } {
    const source = `ocsp:${entry.url}`;
    const a = entry.answer;
    if (!a || entry.expiresAt <= now) return { status: "unknown", source, unreachable: entry.unreachable };
    if (a.status === "revoked") {
      return {
        status: "revoked",
        source,
        ...(a.reason ? { reason: a.reason } : {}),
        ...(a.revokedAt ? { revokedAt: a.revokedAt } : {}),
      };
    }
    return { status: a.status, source };
  }

  /** Asks the responder (one request in flight per serial); emits "update" when the verdict changed. */
  private refreshOcsp(entry: OcspEntry): Promise<void> {
    entry.pending ??= (async () => {
      const before = this.ocspVerdict(entry, this.clock().getTime()).status;
      const hadAnswer = entry.attempts++ > 0;
      try {
        const answer = await this.queryOcsp(entry);
        const now = this.clock().getTime();
        entry.answer = answer;
        entry.expiresAt = answer.nextUpdate ? answer.nextUpdate.getTime() : now + OCSP_DEFAULT_TTL_MS;
        entry.errorUntil = 0;
        entry.unreachable = false;
      } catch (err) {
        if (this.closed) return;
        entry.unreachable = !(err instanceof MtlsError && err.code === "E_BAD_INPUT");
        entry.errorUntil = this.clock().getTime() + this.cfg.ocspErrorHoldMs;
        this.report(err, `ocsp:${entry.url}`);
      }
      const after: RevocationState = this.ocspVerdict(entry, this.clock().getTime()).status;
      if (hadAnswer && after !== before) this.changed(`ocsp:${entry.url}`);
    })().finally(() => {
      entry.pending = undefined;
    });
    return entry.pending;
  }

  private async queryOcsp(entry: OcspEntry): Promise<OcspAnswer> {
    const nonce = new Uint8Array(randomBytes(16));
    const body = buildOcspRequest(entry.leaf, entry.issuer, { nonce });
    let der: Uint8Array;
    const limit = deadline(this.abort.signal, this.cfg.ocspTimeoutMs);
    try {
      const res = await fetch(entry.url, {
        method: "POST",
        headers: { "content-type": "application/ocsp-request", accept: "application/ocsp-response" },
        body: body as BufferSource,
        signal: limit.signal,
      });
      if (!res.ok) {
        await res.body?.cancel();
        throw new MtlsError("E_IO", `OCSP responder ${entry.url}: HTTP ${res.status}`);
      }
      der = await readBody(res, MAX_OCSP_BYTES, entry.url);
    } catch (err) {
      if (err instanceof MtlsError) throw err;
      throw new MtlsError("E_IO", `OCSP responder ${entry.url} unreachable: ${describe(err)}`, {
        cause: err,
      });
    } finally {
      limit.done();
    }
    return parseOcspResponse(der, entry.leaf, entry.issuer, { nonce, at: this.clock() });
  }

  /** Re-polls serials used recently, so a revocation reaches open connections within seconds. */
  private recheckOcsp(): void {
    const now = this.clock().getTime();
    const due: OcspEntry[] = [];
    for (const [key, entry] of this.ocspCache) {
      if (now - entry.lastUsed <= this.cfg.ocspRecheckWindowMs) {
        if (!entry.pending && entry.errorUntil <= now) due.push(entry);
      } else if (entry.expiresAt <= now && !entry.pending) {
        this.ocspCache.delete(key);
      }
    }
    let i = 0;
    const worker = async (): Promise<void> => {
      while (i < due.length && !this.closed) {
        const entry = due[i++] as OcspEntry;
        await this.refreshOcsp(entry);
      }
    };
    for (let n = 0; n < Math.min(OCSP_RECHECK_CONCURRENCY, due.length); n++) void worker();
  }
}

// ------------------------------------------------------------------ helpers

/** Whether `a` supersedes `b` (both from the same issuer). */
function newer(a: CrlIndex, b: CrlIndex): boolean {
  if (a.crlNumber !== null && b.crlNumber !== null && a.crlNumber !== b.crlNumber) {
    return a.crlNumber > b.crlNumber;
  }
  return a.thisUpdate.getTime() > b.thisUpdate.getTime();
}

function isRollback(incoming: CrlIndex, held: CrlIndex): boolean {
  return (
    incoming.crlNumber !== null &&
    held.crlNumber !== null &&
    incoming.crlNumber < held.crlNumber &&
    incoming.thisUpdate.getTime() <= held.thisUpdate.getTime()
  );
}

function issuedBy(leaf: CertInfo, issuer: CertInfo): boolean {
  try {
    const c = new NodeX509(leaf.der);
    const i = new NodeX509(issuer.der);
    return c.checkIssued(i) && c.verify(i.publicKey);
  } catch {
    return false;
  }
}

async function statKey(path: string): Promise<string> {
  try {
    const s = await stat(path);
    return `${s.ino}:${s.size}:${s.mtimeMs}`;
  } catch {
    return "missing";
  }
}

async function readBody(res: Response, max: number, what: string): Promise<Uint8Array> {
  const declared = Number(res.headers.get("content-length") ?? "0");
  if (declared > max || !res.body) {
    await res.body?.cancel();
    if (!res.body) return new Uint8Array(0);
    throw new MtlsError("E_BAD_INPUT", `${what}: a response of ${declared} bytes is too large`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > max) {
      await reader.cancel();
      throw new MtlsError("E_BAD_INPUT", `${what}: the response is larger than ${max} bytes`);
    }
    chunks.push(value);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

/**
 * A signal that aborts with `parent` or after `ms` (reason: a TimeoutError), for one request and its
 * body; done() clears the timer. Not AbortSignal.any([parent, AbortSignal.timeout(ms)]): on Node 20
 * a timeout signal held only by such a composite can be garbage-collected before it fires
 * (nodejs/node#57736), and the request then waits for ever (a 300 s hang of an OCSP test showed it).
 */
function deadline(parent: AbortSignal, ms: number): { signal: AbortSignal; done(): void } {
  const ac = new AbortController();
  const onAbort = () => ac.abort(parent.reason);
  if (parent.aborted) ac.abort(parent.reason);
  else parent.addEventListener("abort", onAbort, { once: true });
  const timer = setTimeout(() => ac.abort(new DOMException(`no answer within ${ms} ms`, "TimeoutError")), ms);
  return {
    signal: ac.signal,
    done: () => {
      clearTimeout(timer);
      parent.removeEventListener("abort", onAbort);
    },
  };
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    if (err.name === "TimeoutError") return "timed out";
    const cause = (err as { cause?: unknown }).cause;
    if (cause instanceof Error && cause.message) return `${err.message} (${cause.message})`;
    return err.message;
  }
  return String(err);
}
