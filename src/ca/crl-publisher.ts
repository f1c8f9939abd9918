import { readFileSync } from "node:fs";
import { MtlsError } from "../errors.js";
import { readCrlHeader } from "../pki/crl-header.js";
import { indexCrl } from "../pki/crl-index.js";
import { derBlocks } from "../pki/pem.js";
import type { CertificateRecord } from "../store/index.js";
import type { CertificateAuthority, Clock, RevokedOrigin } from "./authority.js";
import { CrlFileWatch, crlBundlePem } from "./crl-watch.js";

/** The CRLs to serve at /crl and /crl/root, DER, with what HTTP caching needs. */
export interface PublishedCrls {
  /** The intermediate's CRL (lists revoked leaves). */
  intermediate: Uint8Array;
  /** The root's CRL (lists revoked intermediates). */
  root: Uint8Array;
  /** The intermediate CRL's thisUpdate and nextUpdate. */
  thisUpdate: Date;
  nextUpdate: Date;
  rootNextUpdate: Date | null;
  /** The intermediate CRL's number. */
  crlNumber: bigint;
}

export interface CrlPublisherOptions {
  /** Audit actor of the CRLs it signs (default "system:crl"). */
  actor?: string;
  /** The offline root key, to re-sign the root CRL when it is due (see CertificateAuthority.publishCrls). */
  rootKeyFile?: string;
  /** The CRLs are re-signed once this fraction of the intermediate CRL's life has passed (default 0.5). */
  refreshFraction?: number;
  /**
   * After a revocation, how long to wait for revoke()'s own publication before signing a CRL here
   * (default 2 s). Callers of current() meanwhile wait: no CRL that misses a committed revocation is
   * handed out.
   */
  graceMs?: number;
  /**
   * The same wait after a revocation another process or node made (ca.events "revoked" with
   * `origin.foreign`, from the revocation feed), default 250 ms: no revoke() here will publish a CRL
   * for it, so waiting the full grace would only delay /crl; the short wait lets a burst of them
   * share one signing.
   */
  foreignGraceMs?: number;
  /** Adopt CRLs other processes write to STATE/ca/crl.pem (default true). */
  watchCrlFile?: boolean;
  clock?: Clock;
  /** Failures that do not throw: a scheduled re-signing, a bad CRL file. */
  onError?: (err: Error) => void;
}

const MAX_TIMER_MS = 2 ** 31 - 1;
const RETRY_MIN_MS = 60_000;
const RETRY_MAX_MS = 60 * 60_000;

/**
 * Keeps the CA's CRLs ready to serve: the DERs in memory, re-signed before they go stale (at half the
 * intermediate CRL's life, on an unref'd timer) and right after every revocation, and written to
 * STATE/ca/crl.pem (and ca/root.crl) as `publishCrls` always does. A revocation in this process
 * (ca.events) is picked up from revoke()'s own publication; one by another process from the file it
 * rewrites.
 */
export class CrlPublisher {
  private set: PublishedCrls | undefined;
  private readonly actor: string;
  private readonly fraction: number;
  private readonly graceMs: number;
  private readonly foreignGraceMs: number;
  private readonly clock: Clock;
  private readonly onError: (err: Error) => void;
  /** Serials revoked here whose CRL has not been adopted yet. */
  private readonly pending = new Set<string>();
  private waiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  private refreshing: Promise<PublishedCrls> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private watch: CrlFileWatch | undefined;
  private started = false;
  private closed = false;

  private readonly onRevoked = (records: CertificateRecord[], origin?: RevokedOrigin) => {
    // Another process's revocation may already be on the CRLs held: on one machine `mtls revoke`
    // rewrote crl.pem and the file watch adopted it before the revocation feed found the event.
    const unlisted = origin?.foreign ? records.filter((r) => !this.lists(r.serial)) : records;
    if (!unlisted.length) return;
    for (const r of unlisted) this.pending.add(r.serial);
    if (!this.graceTimer && !this.closed) {
      this.graceTimer = setTimeout(
        () => {
          this.graceTimer = undefined;
          if (this.pending.size) this.refresh().catch((err) => this.report(err));
        },
        origin?.foreign ? this.foreignGraceMs : this.graceMs,
      );
      this.graceTimer.unref();
    }
  };

  private readonly onPublished = (
    crls: { intermediate: Uint8Array; root: Uint8Array },
    records: CertificateRecord[],
  ) => {
    try {
      this.adopt(crls.intermediate, crls.root);
    } catch (err) {
      this.report(err);
      return;
    }
    for (const r of records) this.pending.delete(r.serial);
    this.settle();
  };

  constructor(
    readonly ca: CertificateAuthority,
    private readonly opts: CrlPublisherOptions = {},
  ) {
    this.actor = opts.actor ?? "system:crl";
    this.fraction = opts.refreshFraction ?? 0.5;
    if (!(this.fraction > 0 && this.fraction < 1))
      throw new MtlsError("E_USAGE", "refreshFraction must be in (0, 1)");
    this.graceMs = opts.graceMs ?? 2_000;
    this.foreignGraceMs = opts.foreignGraceMs ?? 250;
    this.clock = opts.clock ?? ca.clock;
    this.onError = opts.onError ?? (() => {});
  }

  /**
   * Signs fresh CRLs (so none misses a revocation made while nothing was serving), starts listening
   * and schedules the next signing. When they cannot be signed (the passphrase or the offline root
   * key missing), the CRLs already in STATE/ca/crl.pem are served and the error is reported; with no
   * usable file either, start() rejects.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.ca.events.on("revoked", this.onRevoked);
    this.ca.events.on("crlPublished", this.onPublished);
    if (this.opts.watchCrlFile ?? true) {
      this.watch = new CrlFileWatch(this.ca, (content) => this.adoptFile(content));
    }
    try {
      await this.refresh();
    } catch (err) {
      this.report(err);
      try {
        this.adoptFile(readFileSync(this.ca.paths.crl));
      } catch {
        // nothing to fall back on
      }
      if (!this.set) {
        this.close();
        throw err;
      }
      this.scheduleRetry();
    }
  }

  /**
   * The CRLs to serve. Waits while a revocation made in this process is not on them yet; signs them
   * when there are none (start() was not called) or they went stale.
   */
  async current(): Promise<PublishedCrls> {
    if (this.pending.size) {
      // Someone waits now: the grace timer must fire even if nothing else keeps the process alive.
      this.graceTimer?.ref();
      await new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    }
    const set = this.set;
    if (set && set.nextUpdate.getTime() > this.clock().getTime()) return set;
    try {
      return await this.refresh();
    } catch (err) {
      if (set) {
        this.report(err);
        return set; // stale, but the best there is; the error went to onError
      }
      throw err;
    }
  }

  /**
   * Signs and publishes new CRLs now. Concurrent calls share one signing; revocations it may have
   * missed (announced after it began) stay pending until a later CRL lists them.
   */
  refresh(): Promise<PublishedCrls> {
    if (this.refreshing) return this.refreshing;
    const covered = [...this.pending];
    const run = async (): Promise<PublishedCrls> => {
      const crls = await this.ca.publishCrls(this.actor, {
        ...(this.opts.rootKeyFile ? { rootKeyFile: this.opts.rootKeyFile } : {}),
      });
      this.watch?.noteLocal(crls.pem);
      this.adopt(crls.intermediate, crls.root);
      return this.set as PublishedCrls;
    };
    this.refreshing = run().then(
      (set) => {
        this.refreshing = undefined;
        this.failures = 0;
        for (const s of covered) this.pending.delete(s);
        this.settle();
        if (this.pending.size && !this.graceTimer) this.refresh().catch((err) => this.report(err));
        return set;
      },
      (err) => {
        this.refreshing = undefined;
        if (covered.length) {
          // Nothing will publish these now: waiters get the error rather than hang.
          for (const s of covered) this.pending.delete(s);
          this.fail(err);
        }
        throw err;
      },
    );
    return this.refreshing;
  }

  close(): void {
    this.closed = true;
    this.ca.events.off("revoked", this.onRevoked);
    this.ca.events.off("crlPublished", this.onPublished);
    this.watch?.close();
    if (this.timer) clearTimeout(this.timer);
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.fail(new MtlsError("E_UNAVAILABLE", "the CRL publisher was closed"));
  }

  // ------------------------------------------------------------------------------------------

  /** Takes these CRLs when they are newer than the ones held (a late event never rolls back). */
  private adopt(intermediate: Uint8Array, root: Uint8Array): void {
    const head = readCrlHeader(intermediate);
    if (!Buffer.from(head.issuerDer).equals(Buffer.from(this.ca.intermediate.subjectDer))) {
      throw new MtlsError("E_BAD_INPUT", "the CRL is not the intermediate's");
    }
    const number = head.crlNumber ?? 0n;
    if (this.set && number <= this.set.crlNumber) return;
    this.set = {
      intermediate,
      root,
      thisUpdate: head.thisUpdate,
      nextUpdate: head.nextUpdate ?? new Date(head.thisUpdate.getTime() + 86_400_000),
      rootNextUpdate: readCrlHeader(root).nextUpdate,
      crlNumber: number,
    };
    this.schedule();
  }

  /** STATE/ca/crl.pem as written by publishCrls: the intermediate's CRL, then the root's. */
  private adoptFile(content: Buffer): void {
    try {
      const [intermediate, root] = derBlocks(content, ["X509 CRL"], "CRL");
      if (!intermediate || !root) throw new MtlsError("E_BAD_INPUT", `${this.ca.paths.crl} lacks a CRL`);
      this.adopt(intermediate, root);
    } catch (err) {
      this.report(err);
      return;
    }
    // Pending revocations the adopted CRL already lists need no signing here.
    if (!this.pending.size) return;
    for (const serial of this.pending) if (this.lists(serial)) this.pending.delete(serial);
    this.settle();
  }

  /** Whether the intermediate CRL held lists `serial` (a DER walk: tens of ms for 100,000 entries). */
  private lists(serial: string): boolean {
    if (!this.set) return false;
    try {
      return indexCrl(this.set.intermediate).entries.has(serial.replace(/^0+(?=.)/, ""));
    } catch {
      return false;
    }
  }

  private settle(): void {
    if (this.pending.size) return;
    if (this.graceTimer) {
      clearTimeout(this.graceTimer);
      this.graceTimer = undefined;
    }
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.resolve();
  }

  private fail(err: unknown): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(err);
  }

  private schedule(): void {
    if (this.closed || !this.started || !this.set) return;
    if (this.timer) clearTimeout(this.timer);
    const { thisUpdate, nextUpdate, rootNextUpdate } = this.set;
    let due = thisUpdate.getTime() + (nextUpdate.getTime() - thisUpdate.getTime()) * this.fraction;
    if (rootNextUpdate) due = Math.min(due, rootNextUpdate.getTime());
    this.arm(due - this.clock().getTime());
  }

  private scheduleRetry(): void {
    if (this.closed) return;
    this.failures++;
    this.arm(Math.min(RETRY_MIN_MS * 2 ** (this.failures - 1), RETRY_MAX_MS));
  }

  private arm(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    const wait = Math.min(Math.max(ms, 0), MAX_TIMER_MS);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.closed) return;
      if (wait === MAX_TIMER_MS) return this.schedule(); // a far due time: wake up and look again
      this.refresh().catch((err) => {
        this.report(err);
        this.scheduleRetry();
      });
    }, wait);
    this.timer.unref();
  }

  private report(err: unknown): void {
    try {
      this.onError(err instanceof Error ? err : new Error(String(err)));
    } catch {
      // a throwing callback must not stop publishing
    }
  }
}

export { crlBundlePem };
