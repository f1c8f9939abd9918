import type { KeyObject } from "node:crypto";
import { EventEmitter } from "node:events";
import { existsSync } from "node:fs";
import { readFileOrThrow, writeFileAtomic } from "../config/files.js";
import type { StatePaths } from "../config/state.js";
import { MtlsError } from "../errors.js";
import { loadSoftwareSigner, openPkcs11Signer, requirePin, saveEncryptedKey } from "../keys/index.js";
import { buildCertificate, randomSerial } from "../pki/certificate.js";
import { type CertInfo, certToPem, parseCertificate, parseCertificates, sha256Hex } from "../pki/certinfo.js";
import { buildCrl, type CrlEntry, type CrlInfo, crlToPem, parseCrls, type ReasonName } from "../pki/crl.js";
import { generateKeyPair, type KeyType, keyTypeOf, publicKeyFromSpki, spkiOf } from "../pki/keys.js";
import { buildName, formatName, formatSan, type San } from "../pki/names.js";
import type { Signer } from "../pki/signer.js";
import { type CertificateRecord, isDuplicateSerial, type Store, type StoreTx } from "../store/index.js";
import {
  DEFAULT_TTL_MS,
  type LeafProfile,
  leafExtensions,
  validateLeafName,
  warningsFor,
} from "./profiles.js";

export type Clock = () => Date;

export interface IssueRequest {
  profile: LeafProfile;
  /** The name the certificate is filed under; also its CN unless `commonName` says otherwise. */
  name: string;
  commonName?: string;
  sans: San[];
  organizationalUnit?: string[];
  /** Lifetime in ms; defaults per profile. Must not outlive the intermediate. */
  ttlMs?: number;
  /** Generate a key of this type (default ec-p256)... */
  keyType?: KeyType;
  /** ...or certify this public key (from a CSR). */
  spki?: Uint8Array;
  /** Who asked, for the audit log. */
  actor: string;
  /**
   * Insert the record as `pending` with the paths the caller is about to write; the caller then calls
   * confirmIssued() once the files are in place. Used for crash-safe file delivery (see deliver.ts).
   */
  pending?: { certPath: string; keyPath: string | null; p12Path?: string | null };
  /**
   * Runs inside the transaction that records the certificate, after its row and audit event, before
   * the commit: whatever it writes commits with the certificate, and if it throws nothing is recorded
   * and issue() rethrows its error. Enrollment uses it to consume the token, renewal to log itself.
   */
  withinTransaction?: (tx: StoreTx, record: CertificateRecord) => Promise<void>;
}

export interface Issued {
  record: CertificateRecord;
  /** The certificate parsed (on first use). */
  readonly certificate: CertInfo;
  der: Uint8Array;
  /** Leaf then intermediate, PEM. */
  chainPem: string;
  /** Present when the CA generated the key. */
  privateKey?: KeyObject;
  warnings: string[];
}

export interface CaSettings {
  name: string;
  publicUrl?: string | undefined;
}

/**
 * What `ca.events` announces, in this process only (another process learns of a revocation from the
 * CRL file it rewrites): OcspResponder and CrlPublisher listen, so nothing stale is served.
 */
export interface CaEvents {
  /**
   * The certificates revoke() has just revoked, once its transaction committed; or, with
   * `origin.foreign`, certificates another process or node revoked, as the revocation feed
   * (revocation-feed.ts) found them in the audit log.
   */
  revoked: [records: CertificateRecord[], origin?: RevokedOrigin];
  /** The CRLs revoke() published next, which list those certificates (not emitted when that failed). */
  crlPublished: [crls: { intermediate: Uint8Array; root: Uint8Array }, revoked: CertificateRecord[]];
}

/** Where a revocation announced on ca.events was made: absent for this process's own. */
export interface RevokedOrigin {
  /** Made by another process or node: no revoke() of this process will publish a CRL for it. */
  foreign: true;
}

/** Validity for CRLs the intermediate signs; they are also regenerated on every revocation. */
export const CRL_VALIDITY_MS = 7 * 86_400_000;
/** The root's CRL lives long: the root key may be offline. */
export const ROOT_CRL_VALIDITY_MS = 365 * 86_400_000;
/** notBefore is back-dated for clock skew between machines. */
export const BACKDATE_MS = 60_000;

/**
 * The certificate authority: the root and intermediate certificates of one state directory, the
 * intermediate's signer (decrypted on first use), and the store. Everything that changes state is
 * recorded in the inventory and the hash-chained audit log in the same transaction.
 */
export class CertificateAuthority {
  private signer: Signer | undefined;
  private rootSigner: Signer | undefined;
  /** Set when the intermediate's key lives in a PKCS#11 token (settings ca.keyUri, ca.pkcs11Module). */
  private tokenKey: { module: string; uri: string } | undefined;
  private pin: () => string = () => requirePin({});
  /** "revoked" after revoke() commits, "crlPublished" after it published the new CRLs. */
  readonly events = new EventEmitter<CaEvents>();
  /** Serials revoke() is revoking in this process, from before its commit until "revoked" is announced. */
  readonly #revoking = new Set<string>();
  /** Where issue() gets serials (126 random bits); replaceable so tests can force a collision. */
  newSerial: () => string = randomSerial;
  /** Keys kept at rest beside the CA's own (the OCSP responder's), encrypted with the CA passphrase. */
  readonly keysAtRest = {
    load: (path: string): Signer => loadSoftwareSigner(path, this.passphrase()),
    save: (path: string, key: KeyObject): void => saveEncryptedKey(path, key, this.passphrase(), true),
  };

  constructor(
    readonly paths: StatePaths,
    readonly store: Store,
    readonly root: CertInfo,
    readonly intermediate: CertInfo,
    readonly settings: CaSettings,
    private readonly passphrase: () => string,
    readonly clock: Clock = () => new Date(),
  ) {}

  static async open(
    paths: StatePaths,
    store: Store,
    opts: { passphrase: () => string; clock?: Clock; pin?: () => string },
  ): Promise<CertificateAuthority> {
    const [root] = parseCertificates(readFileOrThrow(paths.rootCert, "root certificate"));
    const [intermediate] = parseCertificates(
      readFileOrThrow(paths.intermediateCert, "intermediate certificate"),
    );
    if (!root || !intermediate)
      throw new MtlsError("E_NO_CA", `the CA certificates in ${paths.dir} are missing`);
    const name = (await store.getSetting("ca.name")) ?? root.subject;
    const publicUrl = await store.getSetting("ca.publicUrl");
    const ca = new CertificateAuthority(
      paths,
      store,
      root,
      intermediate,
      { name, publicUrl },
      opts.passphrase,
      opts.clock,
    );
    const keyUri = await store.getSetting("ca.keyUri");
    const module = await store.getSetting("ca.pkcs11Module");
    if (keyUri && module) ca.tokenKey = { module, uri: keyUri };
    if (opts.pin) ca.pin = opts.pin;
    return ca;
  }

  /**
   * The intermediate's signer: decrypted from its file (E_PASSPHRASE when the passphrase is wrong),
   * or opened in its PKCS#11 token with the PIN (E_PKCS11_* errors).
   */
  intermediateSigner(): Signer {
    this.signer ??= this.tokenKey
      ? this.tokenSigner(this.tokenKey)
      : loadSoftwareSigner(this.paths.intermediateKey, this.passphrase());
    return this.signer;
  }

  private tokenSigner(key: { module: string; uri: string }): Signer {
    const signer = openPkcs11Signer({ ...key, pin: this.pin() });
    if (!Buffer.from(signer.spki).equals(Buffer.from(this.intermediate.spki))) {
      throw new MtlsError(
        "E_PKCS11_KEY",
        `the key ${key.uri} in the token is not the intermediate certificate's key`,
      );
    }
    return signer;
  }

  /** The root's signer, from the state directory or an offline key file. */
  rootSignerFrom(keyFile: string): Signer {
    this.rootSigner ??= loadSoftwareSigner(keyFile, this.passphrase());
    return this.rootSigner;
  }

  /** PEM of the intermediate, which every leaf file carries after the leaf. */
  get intermediatePem(): string {
    return certToPem(this.intermediate.der);
  }

  get rootPem(): string {
    return certToPem(this.root.der);
  }

  async issue(req: IssueRequest, attempt = 1): Promise<Issued> {
    validateLeafName(req.name);
    const now = this.clock();
    const ttl = req.ttlMs ?? DEFAULT_TTL_MS[req.profile];
    if (!Number.isFinite(ttl) || ttl <= 0)
      throw new MtlsError("E_TTL", `invalid lifetime ${ttl} ms: must be positive`);
    const notAfter = new Date(now.getTime() + ttl);
    if (notAfter > this.intermediate.notAfter) {
      throw new MtlsError(
        "E_TTL",
        `a lifetime of ${Math.ceil(ttl / 86_400_000)}d would outlive the intermediate CA (valid until ${this.intermediate.notAfter.toISOString()})`,
      );
    }
    let privateKey: KeyObject | undefined;
    let spki = req.spki;
    let keyType: KeyType;
    if (spki) {
      keyType = keyTypeOf(publicKeyFromSpki(spki));
    } else {
      keyType = req.keyType ?? "ec-p256";
      privateKey = generateKeyPair(keyType).privateKey;
      spki = spkiOf(privateKey);
    }
    const signer = this.intermediateSigner();
    const extensions = leafExtensions({
      profile: req.profile,
      spki,
      keyType,
      issuerSpki: this.intermediate.spki,
      sans: req.sans,
      publicUrl: this.settings.publicUrl,
    });
    const subject = {
      organization: this.settings.name,
      organizationalUnit: req.organizationalUnit,
      commonName: req.commonName ?? req.name,
    };
    const serial = this.newSerial();
    const notBefore = new Date(now.getTime() - BACKDATE_MS);
    const der = await buildCertificate(
      {
        serial,
        issuer: issuerNameDer(this.intermediate),
        subject: buildName(subject),
        notBefore,
        notAfter,
        spki,
        extensions,
      },
      signer,
    );
    // The record is written from what was just encoded; parsing the certificate back would cost
    // more than everything else in issuance together (see bench/issue.ts).
    const wholeSecond = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);
    const record: CertificateRecord = {
      serial,
      name: req.name,
      profile: req.profile,
      subject: formatName(subject),
      sans: req.sans.map(formatSan),
      keyType,
      notBefore: wholeSecond(notBefore),
      notAfter: wholeSecond(notAfter),
      status: req.pending ? "pending" : "valid",
      revokedAt: null,
      revocationReason: null,
      fingerprint: sha256Hex(der),
      issuerSerial: this.intermediate.serial,
      pem: certToPem(der),
      certPath: req.pending?.certPath ?? null,
      keyPath: req.pending?.keyPath ?? null,
      p12Path: req.pending?.p12Path ?? null,
      createdAt: now,
    };
    try {
      await this.store.transaction(async (tx) => {
        await tx.insertCertificate(record);
        if (!req.pending) await tx.appendAudit(issueEvent(record, req.actor, now));
        await req.withinTransaction?.(tx, record);
      });
    } catch (err) {
      // The primary key refuses a serial already issued (by this node or another on one database):
      // nothing was recorded, so sign again under a fresh serial. Random serials make this all but
      // impossible; a third collision in a row means the serial source is broken.
      if (isDuplicateSerial(err) && attempt < 3) return this.issue(req, attempt + 1);
      throw err;
    }
    let parsed: CertInfo | undefined;
    return {
      record,
      get certificate() {
        parsed ??= parseCertificate(der);
        return parsed;
      },
      der,
      chainPem: record.pem + this.intermediatePem,
      ...(privateKey ? { privateKey } : {}),
      warnings: warningsFor(req.profile, keyType),
    };
  }

  /** Marks a pending certificate delivered: status valid, and the issue event in the audit log. */
  async confirmIssued(serial: string, actor: string): Promise<void> {
    const now = this.clock();
    await this.store.transaction(async (tx) => {
      const rec = await tx.getCertificate(serial);
      if (rec?.status !== "pending") return;
      await tx.updateCertificate(serial, { status: "valid" });
      await tx.appendAudit(issueEvent({ ...rec, status: "valid" }, actor, now));
    });
  }

  /** A pending certificate that was never delivered: kept for the record, never valid. */
  async abortIssued(serial: string, actor: string, why: string): Promise<void> {
    const now = this.clock();
    await this.store.transaction(async (tx) => {
      await tx.updateCertificate(serial, { status: "aborted" });
      await tx.appendAudit({
        at: now,
        actor,
        action: "cert.abort",
        subject: serial,
        details: { reason: why },
      });
    });
  }

  /**
   * True while this process's revoke() is committing `serial` and has not yet announced it on
   * ca.events "revoked": the revocation feed, reading the audit log, leaves such an event to the
   * announcement instead of taking it for another node's.
   */
  isRevokingHere(serial: string): boolean {
    return this.#revoking.has(serial);
  }

  /**
   * Revokes certificates and publishes fresh CRLs. Already revoked ones are left as they were
   * (their first revocation time and reason stand).
   */
  async revoke(serials: string[], reason: ReasonName, actor: string): Promise<CertificateRecord[]> {
    const now = this.clock();
    // The key must be at hand before anything changes: without the passphrase, no revocation.
    this.intermediateSigner();
    const done: CertificateRecord[] = [];
    const marked: string[] = [];
    try {
      await this.store.transaction(async (tx) => {
        for (const serial of serials) {
          const rec = await tx.getCertificate(serial);
          if (!rec) throw new MtlsError("E_NOT_FOUND", `no certificate with serial ${serial}`);
          if (rec.status === "revoked") continue;
          if (rec.profile === "ca-root")
            throw new MtlsError("E_USAGE", "the root cannot be revoked; retire the CA instead");
          // Marked before the commit, so a reader of the audit log in this process (the revocation
          // feed) can tell this revocation from another node's the moment it becomes visible.
          this.#revoking.add(serial);
          marked.push(serial);
          await tx.updateCertificate(serial, { status: "revoked", revokedAt: now, revocationReason: reason });
          await tx.appendAudit({
            at: now,
            actor,
            action: "cert.revoke",
            subject: serial,
            details: { name: rec.name, reason, subject: rec.subject },
          });
          done.push({ ...rec, status: "revoked", revokedAt: now, revocationReason: reason });
        }
      });
      // Committed: the OCSP responder drops its cached answers before anything else can run.
      if (done.length) announce(() => this.events.emit("revoked", done));
    } finally {
      for (const serial of marked) this.#revoking.delete(serial);
    }
    if (done.length) {
      try {
        const crls = await this.publishCrls(actor);
        announce(() => this.events.emit("crlPublished", crls, done));
      } catch (err) {
        const e = err as MtlsError;
        throw new MtlsError(
          e.code ?? "E_IO",
          `revoked ${done.map((r) => r.serial).join(", ")}, but the CRL was not published: ${e.message}`,
          { cause: err },
        );
      }
    }
    return done;
  }

  /** Signs a fresh intermediate CRL (and the root CRL when the root key is at hand and it is due). */
  async generateCrl(
    issuer: CertInfo,
    signer: Signer,
    validityMs: number,
    actor: string,
  ): Promise<Uint8Array> {
    const now = this.clock();
    return this.store.transaction(async (tx) => {
      // Entries of expired certificates may leave the CRL (RFC 5280 §3.3): they fail validation anyway.
      // listRevoked reads only the three columns a CRL needs (100,000 entries in ~0.1 s).
      const revoked = await tx.listRevoked(issuer.serial, now);
      const entries: CrlEntry[] = revoked.map((r) => ({
        serial: r.serial,
        revokedAt: r.revokedAt ?? now,
        reason: r.reason ?? "unspecified",
      }));
      const crlNumber = await tx.nextCounter(`crl:${issuer.serial}`);
      const der = await buildCrl(
        {
          issuer: issuerNameDer(issuer),
          issuerSpki: issuer.spki,
          thisUpdate: now,
          nextUpdate: new Date(now.getTime() + validityMs),
          crlNumber,
          entries,
        },
        signer,
      );
      await tx.appendAudit({
        at: now,
        actor,
        action: "crl.generate",
        subject: issuer.serial,
        details: { crlNumber, entries: entries.length, issuer: issuer.subject },
      });
      return der;
    });
  }

  /**
   * Writes the CRL bundle (intermediate CRL then root CRL, PEM) into the state directory and returns
   * it. The root CRL is re-signed when the root key is available and half its life is gone;
   * otherwise the stored one is used as long as it is current.
   */
  async publishCrls(
    actor: string,
    opts: { rootKeyFile?: string } = {},
  ): Promise<{ intermediate: Uint8Array; root: Uint8Array; pem: string }> {
    const intermediate = await this.generateCrl(
      this.intermediate,
      this.intermediateSigner(),
      CRL_VALIDITY_MS,
      actor,
    );
    const root = await this.currentRootCrl(actor, opts.rootKeyFile);
    const pem = crlToPem(intermediate) + crlToPem(root);
    writeFileAtomic(this.paths.crl, pem, { overwrite: true });
    return { intermediate, root, pem };
  }

  /**
   * The root's CRL to publish. The stored one is reused while it is young and still lists exactly
   * the revoked intermediates; otherwise it is re-signed, which needs the root key (from the state
   * directory or `rootKeyFile`): without it, E_KEY_OFFLINE rather than a CRL that hides a revocation.
   */
  private async currentRootCrl(actor: string, rootKeyFile?: string): Promise<Uint8Array> {
    const now = this.clock();
    let stored: CrlInfo | undefined;
    try {
      stored = parseCrls(readFileOrThrow(this.paths.rootCrl, "root CRL"))[0];
    } catch {
      stored = undefined;
    }
    const revoked = await this.store.findCertificates({ status: "revoked", issuerSerial: this.root.serial });
    const wanted = new Set(
      revoked.filter((r) => r.notAfter > now).map((r) => r.serial.replace(/^0+(?=.)/, "")),
    );
    const listed = new Set(stored?.index.entries.keys() ?? []);
    const complete = [...wanted].every((s) => listed.has(s));
    const halfLife = stored?.nextUpdate
      ? stored.thisUpdate.getTime() + (stored.nextUpdate.getTime() - stored.thisUpdate.getTime()) / 2
      : 0;
    if (stored && complete && now.getTime() < halfLife && !rootKeyFile) return stored.der;
    const keyFile = rootKeyFile ?? this.paths.rootKey;
    if (!rootKeyFile && !existsSync(this.paths.rootKey)) {
      if (!complete) {
        throw new MtlsError(
          "E_KEY_OFFLINE",
          "a revoked intermediate must go on the root CRL and the root key is offline: run `mtls crl --root-key FILE`",
        );
      }
      if (stored?.nextUpdate && stored.nextUpdate > now) return stored.der;
      throw new MtlsError(
        "E_KEY_OFFLINE",
        "the root CRL has expired and the root key is offline: run `mtls crl --root-key FILE` with the offline key",
      );
    }
    const der = await this.generateCrl(this.root, this.rootSignerFrom(keyFile), ROOT_CRL_VALIDITY_MS, actor);
    writeFileAtomic(this.paths.rootCrl, crlToPem(der), { overwrite: true });
    return der;
  }

  /** Certificates a person can name: hex serial (colons allowed), or a name. */
  async resolve(selector: string, opts: { includeRevoked?: boolean } = {}): Promise<CertificateRecord[]> {
    const hex = selector.replace(/:/g, "").toLowerCase();
    if (/^[0-9a-f]{2,40}$/.test(hex)) {
      const bySerial = await this.store.getCertificate(hex);
      if (bySerial) return [bySerial];
    }
    const status: CertificateRecord["status"][] = opts.includeRevoked ? ["valid", "revoked"] : ["valid"];
    const byName = await this.store.findCertificates({ name: selector, status });
    return byName.filter((r) => r.profile !== "ca-root" && r.profile !== "ca-intermediate");
  }
}

/** Runs an event emission whose listeners must not turn a committed change into a failure. */
function announce(emit: () => void): void {
  try {
    emit();
  } catch (err) {
    // A listener's bug is its own: the revocation is committed and stays so.
    process.emitWarning(`a ca.events listener failed: ${(err as Error).message}`);
  }
}

/** The issuing certificate's subject, which becomes the issuer name of what it signs. */
export const issuerNameDer = (issuer: CertInfo): Uint8Array => issuer.subjectDer;

export function recordFor(
  cert: CertInfo,
  meta: {
    name: string;
    profile: CertificateRecord["profile"];
    issuerSerial: string | null;
    status: CertificateRecord["status"];
    certPath?: string | null;
    keyPath?: string | null;
    p12Path?: string | null;
    now: Date;
  },
): CertificateRecord {
  return {
    serial: cert.serial,
    name: meta.name,
    profile: meta.profile,
    subject: cert.subject,
    sans: cert.sans.map(formatSan),
    keyType: cert.keyType,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    status: meta.status,
    revokedAt: null,
    revocationReason: null,
    fingerprint: cert.fingerprint,
    issuerSerial: meta.issuerSerial,
    pem: certToPem(cert.der),
    certPath: meta.certPath ?? null,
    keyPath: meta.keyPath ?? null,
    p12Path: meta.p12Path ?? null,
    createdAt: meta.now,
  };
}

function issueEvent(rec: CertificateRecord, actor: string, at: Date) {
  return {
    at,
    actor,
    action: "cert.issue",
    subject: rec.serial,
    details: {
      name: rec.name,
      profile: rec.profile,
      subject: rec.subject,
      sans: rec.sans,
      keyType: rec.keyType,
      notAfter: rec.notAfter.toISOString(),
      fingerprint: rec.fingerprint,
    },
  };
}
