import { createHash } from "node:crypto";
import { MtlsError } from "../errors.js";
import { type CertInfo, certToPem } from "../pki/certinfo.js";
import type { ReasonName } from "../pki/crl.js";
import { spkiKeyBits } from "../pki/extensions.js";
import type { CertIdHash } from "../pki/ocsp.js";
import {
  encodeSingleResponse,
  ocspErrorResponse,
  type RequestedCertId,
  readOcspRequest,
  responderIdByKey,
  responseCerts,
  signOcspResponse,
} from "../pki/ocsp-response.js";
import type { Signer } from "../pki/signer.js";
import type { CertificateRecord } from "../store/index.js";
import type { CertificateAuthority, Clock } from "./authority.js";
import { CrlFileWatch } from "./crl-watch.js";
import {
  ensureResponderCertificate,
  type ResponderCertOptions,
  type ResponderIdentity,
} from "./ocsp-cert.js";

/**
 * Default nextUpdate - thisUpdate of an answer: one hour. Relying parties that cache until
 * nextUpdate (nginx stapling, HTTP caches through Cache-Control, OpenSSL-based clients) then learn
 * of a revocation within the hour, while a pre-signed answer is re-signed only twice an hour per
 * certificate in use. mtls tunnels do not wait for nextUpdate: they re-poll the serials of open
 * connections every 30 s (--ocsp-recheck) and this responder drops a cached answer the moment its
 * certificate is revoked, so for them a revocation takes effect within one re-poll.
 */
export const OCSP_VALIDITY_MS = 60 * 60_000;
/** Pre-signed answers are re-signed once this fraction of their validity has passed. */
export const OCSP_REFRESH_FRACTION = 0.5;

export type OcspReplyStatus =
  | "good"
  | "revoked"
  | "unknown"
  | "malformedRequest"
  | "unauthorized"
  | "internalError";

export interface OcspReply {
  /** The DER OCSPResponse to send (application/ocsp-response), whatever the status. */
  der: Uint8Array;
  /**
   * The certificate status (for several CertIDs the worst one: revoked, then unknown, then good),
   * or the error status of an unsigned response.
   */
  status: OcspReplyStatus;
  /** Of a signed answer; Cache-Control can be derived from them when `nonce` is false. */
  thisUpdate?: Date;
  /** Absent for "unknown" (newer information is always available, RFC 6960 §4.2.2.1). */
  nextUpdate?: Date;
  /** True when the request's nonce was echoed (the answer is for this request only). */
  nonce: boolean;
}

export interface OcspResponderOptions {
  /** nextUpdate - thisUpdate of each answer (default 1 h, see OCSP_VALIDITY_MS). */
  validityMs?: number;
  /** A pre-signed answer is re-signed after this fraction of its validity (default 0.5). */
  refreshFraction?: number;
  /** Certificates whose status and pre-signed answers are kept in memory (default 20,000). */
  maxCached?: number;
  /** CertIDs accepted in one request (default 64); more is a malformedRequest. */
  maxCertIds?: number;
  /** Options of the delegated responder certificate (lifetime, key type, renewal point). */
  certificate?: ResponderCertOptions;
  /** Watch STATE/ca/crl.pem for revocations by other processes (default true). */
  watchCrlFile?: boolean;
  /** Defaults to the CA's clock. */
  clock?: Clock;
  /** Failures that do not throw: a renewal of the responder certificate, an internalError answer. */
  onError?: (err: Error) => void;
}

interface StatusInfo {
  status: "good" | "revoked";
  revokedAt?: Date;
  reason?: ReasonName;
  /** Clock ms after which the store is asked again. */
  until: number;
  /** Pre-signed answers without nonce, by CertID bytes (latin1). */
  presigned: Map<string, Presigned>;
}

interface Presigned {
  der: Uint8Array;
  thisUpdate: Date;
  nextUpdate: Date;
  refreshAt: number;
}

type Answer = { status: "unknown" } | Omit<StatusInfo, "until" | "presigned">;

const HASHES: CertIdHash[] = ["sha1", "sha256", "sha384", "sha512"];
const MAX_TIMER_MS = 2 ** 31 - 1;
const RENEW_RETRY_MS = 60 * 60_000;
const RANK: Record<string, number> = { good: 0, unknown: 1, revoked: 2 };
/** Pre-signed answers kept per certificate (one per CertID form: SHA-1, SHA-256, ...). */
const MAX_CERTID_FORMS = 8;

const view = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
const wholeSecond = (ms: number): Date => new Date(Math.floor(ms / 1000) * 1000);

/**
 * The CA's OCSP responder (RFC 6960, RFC 5019 profile): answers for the certificates the
 * intermediate issued, signed by a delegated responder certificate (EKU OCSPSigning, nocheck,
 * 30 days, renewed at 2/3 of its life) that rides in every answer; responderID by key hash.
 *
 * Speed: requests are read straight from the DER. Answers without a nonce are pre-signed per
 * certificate and served from memory until half their validity has passed; a revocation drops them
 * at once (ca.events in this process, the CRL file for others). A request with a nonce gets a fresh
 * signature echoing it, from the cached status. `respond()` never throws: bad input is answered
 * malformedRequest, a CertID of another issuer unauthorized, a failure internalError.
 */
export class OcspResponder {
  private identity: ResponderIdentity;
  private responderId: Uint8Array;
  private certsField: Uint8Array;
  private readonly issuerHashes: Map<CertIdHash, { name: Buffer; key: Buffer }>;
  private readonly statuses = new Map<string, StatusInfo>();
  private readonly lookups = new Map<string, Promise<Answer>>();
  private readonly signing = new Map<
    string,
    Promise<{ presigned: Presigned; answer: Answer; epoch: number }>
  >();
  /** Bumped by every invalidation: work started before it is not cached. */
  private epoch = 0;
  private renewTimer: NodeJS.Timeout | undefined;
  private readonly watch: CrlFileWatch | undefined;
  private readonly validityMs: number;
  private readonly refreshMs: number;
  private readonly maxCached: number;
  private readonly maxCertIds: number;
  private readonly clock: Clock;
  private readonly onError: (err: Error) => void;
  private closed = false;
  private readonly onRevoked = (records: CertificateRecord[]) => {
    for (const r of records) this.invalidate(r.serial);
  };

  private constructor(
    readonly ca: CertificateAuthority,
    identity: ResponderIdentity,
    private readonly opts: OcspResponderOptions,
  ) {
    this.identity = identity;
    this.responderId = responderIdByKey(sha1(spkiKeyBits(identity.certificate.spki)));
    this.certsField = responseCerts([identity.certificate.der]);
    this.validityMs = opts.validityMs ?? OCSP_VALIDITY_MS;
    this.refreshMs = this.validityMs * (opts.refreshFraction ?? OCSP_REFRESH_FRACTION);
    this.maxCached = opts.maxCached ?? 20_000;
    this.maxCertIds = opts.maxCertIds ?? 64;
    this.clock = opts.clock ?? ca.clock;
    this.onError = opts.onError ?? (() => {});
    const issuer = ca.intermediate;
    const keyBits = spkiKeyBits(issuer.spki);
    this.issuerHashes = new Map(
      HASHES.map((h) => [
        h,
        {
          name: createHash(h).update(issuer.subjectDer).digest(),
          key: createHash(h).update(keyBits).digest(),
        },
      ]),
    );
    ca.events.on("revoked", this.onRevoked);
    if (opts.watchCrlFile ?? true) this.watch = new CrlFileWatch(ca, () => this.invalidateAll());
    this.scheduleRenewal();
  }

  /**
   * Loads (or issues, when missing, foreign or 2/3 through its life) the delegated responder
   * certificate and starts answering. Needs the CA passphrase (E_PASSPHRASE).
   */
  static async open(ca: CertificateAuthority, opts: OcspResponderOptions = {}): Promise<OcspResponder> {
    const validity = opts.validityMs ?? OCSP_VALIDITY_MS;
    if (!Number.isFinite(validity) || validity < 1000) {
      throw new MtlsError("E_USAGE", "validityMs must be at least one second");
    }
    const fraction = opts.refreshFraction ?? OCSP_REFRESH_FRACTION;
    if (!(fraction > 0 && fraction <= 1)) throw new MtlsError("E_USAGE", "refreshFraction must be in (0, 1]");
    const identity = await ensureResponderCertificate(ca, opts.certificate);
    return new OcspResponder(ca, identity, opts);
  }

  /** The delegated responder certificate in use. */
  get certificate(): CertInfo {
    return this.identity.certificate;
  }

  get certificatePem(): string {
    return certToPem(this.identity.certificate.der);
  }

  /** Answers one DER OCSPRequest. Never throws. */
  async respond(requestDer: Uint8Array): Promise<OcspReply> {
    let ids: RequestedCertId[];
    let nonceExtnValue: Uint8Array | undefined;
    try {
      const req = readOcspRequest(requestDer, this.maxCertIds);
      ids = req.certIds;
      nonceExtnValue = req.nonceExtnValue;
    } catch {
      return { der: ocspErrorResponse("malformedRequest"), status: "malformedRequest", nonce: false };
    }
    for (const id of ids) {
      if (!this.isOurs(id)) {
        return { der: ocspErrorResponse("unauthorized"), status: "unauthorized", nonce: false };
      }
    }
    try {
      if (ids.length === 1 && !nonceExtnValue) {
        const id = ids[0] as RequestedCertId;
        const hit = this.presignedHit(id);
        if (hit) return hit;
        return await this.presign(id);
      }
      return await this.signFresh(ids, nonceExtnValue);
    } catch (err) {
      this.report(err);
      return { der: ocspErrorResponse("internalError"), status: "internalError", nonce: false };
    }
  }

  /** Forgets everything known about `serial` (its status and pre-signed answers). */
  invalidate(serial: string): void {
    this.epoch++;
    this.statuses.delete(normalize(serial));
  }

  /** Forgets every status and pre-signed answer (after a revocation by another process). */
  invalidateAll(): void {
    this.epoch++;
    this.statuses.clear();
  }

  /** Replaces the responder certificate now (normally done at 2/3 of its life by a timer). */
  async renewCertificate(): Promise<CertInfo> {
    const identity = await ensureResponderCertificate(this.ca, { ...this.opts.certificate, force: true });
    this.useIdentity(identity);
    return identity.certificate;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ca.events.off("revoked", this.onRevoked);
    this.watch?.close();
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.invalidateAll();
  }

  // ------------------------------------------------------------------------------------------

  private isOurs(id: RequestedCertId): boolean {
    if (!id.hash) return false;
    const h = this.issuerHashes.get(id.hash);
    if (!h) return false;
    return h.name.equals(view(id.issuerNameHash)) && h.key.equals(view(id.issuerKeyHash));
  }

  private presignedHit(id: RequestedCertId): OcspReply | undefined {
    const info = this.statuses.get(id.serial);
    if (!info) return undefined;
    const now = this.clock().getTime();
    if (now >= info.until) return undefined;
    const p = info.presigned.get(view(id.der).toString("latin1"));
    if (!p || now >= p.refreshAt) return undefined;
    return {
      der: p.der,
      status: info.status,
      thisUpdate: p.thisUpdate,
      nextUpdate: p.nextUpdate,
      nonce: false,
    };
  }

  /** Signs (once, however many ask at the same time) and caches the answer to a nonce-less request. */
  private async presign(id: RequestedCertId): Promise<OcspReply> {
    const key = view(id.der).toString("latin1");
    for (let attempt = 0; ; attempt++) {
      const flight = `${this.epoch}:${key}`;
      let pending = this.signing.get(flight);
      if (!pending) {
        pending = this.signPresigned(id);
        this.signing.set(flight, pending);
        const done = () => this.signing.delete(flight);
        pending.then(done, done);
      }
      const { presigned: p, answer, epoch } = await pending;
      // A revocation arrived while this was being looked up or signed: look again.
      if (epoch !== this.epoch && attempt < 2) continue;
      const info = this.statuses.get(id.serial);
      // A handful of CertID spellings per certificate (hash algorithms); more is not cached.
      if (
        answer.status !== "unknown" &&
        epoch === this.epoch &&
        info &&
        (info.presigned.has(key) || info.presigned.size < MAX_CERTID_FORMS)
      ) {
        info.presigned.set(key, p);
      }
      return {
        der: p.der,
        status: answer.status,
        thisUpdate: p.thisUpdate,
        ...(answer.status === "unknown" ? {} : { nextUpdate: p.nextUpdate }),
        nonce: false,
      };
    }
  }

  private async signPresigned(
    id: RequestedCertId,
  ): Promise<{ presigned: Presigned; answer: Answer; epoch: number }> {
    const epoch = this.epoch;
    const answer = await this.answerFor(id.serial);
    const now = this.clock().getTime();
    const thisUpdate = wholeSecond(now);
    const nextUpdate = new Date(thisUpdate.getTime() + this.validityMs);
    const der = await this.sign([this.single(id, answer, thisUpdate, nextUpdate)], thisUpdate, undefined);
    return { presigned: { der, thisUpdate, nextUpdate, refreshAt: now + this.refreshMs }, answer, epoch };
  }

  private async signFresh(
    ids: RequestedCertId[],
    nonceExtnValue: Uint8Array | undefined,
  ): Promise<OcspReply> {
    // Known statuses are used as they are: a fresh answer costs its signature and little else.
    const now = this.clock().getTime();
    let answers: Answer[] = [];
    for (const id of ids) {
      const info = this.statuses.get(id.serial);
      if (!info || now >= info.until) {
        answers = await Promise.all(ids.map((x) => this.answerFor(x.serial)));
        break;
      }
      answers.push(info);
    }
    const thisUpdate = wholeSecond(this.clock().getTime());
    const nextUpdate = new Date(thisUpdate.getTime() + this.validityMs);
    const singles = ids.map((id, i) => this.single(id, answers[i] as Answer, thisUpdate, nextUpdate));
    const der = await this.sign(singles, thisUpdate, nonceExtnValue);
    let status: OcspReply["status"] = "good";
    for (const a of answers) if ((RANK[a.status] ?? 0) > (RANK[status] ?? 0)) status = a.status;
    return {
      der,
      status,
      thisUpdate,
      ...(status === "unknown" ? {} : { nextUpdate }),
      nonce: nonceExtnValue !== undefined,
    };
  }

  private single(id: RequestedCertId, a: Answer, thisUpdate: Date, nextUpdate: Date): Uint8Array {
    if (a.status === "unknown")
      return encodeSingleResponse({ certIdDer: id.der, status: "unknown", thisUpdate });
    return encodeSingleResponse({
      certIdDer: id.der,
      status: a.status,
      ...(a.revokedAt ? { revokedAt: a.revokedAt } : {}),
      ...(a.reason && a.reason !== "unspecified" ? { reason: a.reason } : {}),
      thisUpdate,
      nextUpdate,
    });
  }

  private sign(singles: Uint8Array[], producedAt: Date, nonceExtnValue: Uint8Array | undefined) {
    const signer: Signer = this.identity.signer;
    return signOcspResponse(
      { responderId: this.responderId, producedAt, singles, nonceExtnValue, certs: this.certsField },
      signer,
    );
  }

  /** The status of a serial under our intermediate: from memory, else from the store (once per flight). */
  private answerFor(serial: string): Promise<Answer> {
    const info = this.statuses.get(serial);
    if (info && this.clock().getTime() < info.until) return Promise.resolve(info);
    const flight = `${this.epoch}:${serial}`;
    let pending = this.lookups.get(flight);
    if (!pending) {
      pending = this.lookup(serial);
      this.lookups.set(flight, pending);
      const done = () => this.lookups.delete(flight);
      pending.then(done, done);
    }
    return pending;
  }

  private async lookup(serial: string): Promise<Answer> {
    const epoch = this.epoch;
    // The store keeps serials as written in the certificate: even length, so a leading 0 may be due.
    const rec = await this.ca.store.getCertificate(serial.length % 2 ? `0${serial}` : serial);
    if (!rec || rec.issuerSerial !== this.ca.intermediate.serial) return { status: "unknown" };
    // pending: not delivered yet (it may still be aborted); aborted: never valid. Neither is cached.
    if (rec.status !== "valid" && rec.status !== "revoked") return { status: "unknown" };
    const info: StatusInfo = {
      status: rec.status === "revoked" ? "revoked" : "good",
      ...(rec.status === "revoked" && rec.revokedAt ? { revokedAt: rec.revokedAt } : {}),
      ...(rec.status === "revoked" ? { reason: rec.revocationReason ?? "unspecified" } : {}),
      until: this.clock().getTime() + this.refreshMs,
      presigned: new Map(),
    };
    if (epoch === this.epoch && !this.closed) {
      if (this.statuses.size >= this.maxCached) {
        const oldest = this.statuses.keys().next().value;
        if (oldest !== undefined) this.statuses.delete(oldest);
      }
      this.statuses.set(serial, info);
    }
    return info;
  }

  private useIdentity(identity: ResponderIdentity): void {
    this.identity = identity;
    this.responderId = responderIdByKey(sha1(spkiKeyBits(identity.certificate.spki)));
    this.certsField = responseCerts([identity.certificate.der]);
    // Answers signed with the old certificate stay valid until their nextUpdate; new ones use the new.
    this.scheduleRenewal();
  }

  private scheduleRenewal(): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    if (this.closed) return;
    const due = this.identity.renewAt.getTime() - this.clock().getTime();
    this.renewTimer = setTimeout(
      () => {
        this.renewTimer = undefined;
        if (this.closed) return;
        if (this.clock().getTime() < this.identity.renewAt.getTime()) return this.scheduleRenewal();
        ensureResponderCertificate(this.ca, this.opts.certificate).then(
          (identity) => {
            if (!this.closed) this.useIdentity(identity);
          },
          (err) => {
            this.report(err);
            if (this.closed) return;
            this.renewTimer = setTimeout(() => this.scheduleRenewal(), RENEW_RETRY_MS);
            this.renewTimer.unref();
          },
        );
      },
      Math.min(Math.max(due, 0), MAX_TIMER_MS),
    );
    this.renewTimer.unref();
  }

  private report(err: unknown): void {
    try {
      this.onError(err instanceof Error ? err : new Error(String(err)));
    } catch {
      // a throwing callback must not break answering
    }
  }
}

const sha1 = (b: Uint8Array): Uint8Array => new Uint8Array(createHash("sha1").update(b).digest());
const normalize = (hex: string): string => hex.toLowerCase().replace(/^0+/, "") || "0";
