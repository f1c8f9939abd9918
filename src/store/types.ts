/**
 * The Store: everything the CA persists, behind one interface so that SQLite (the embedded default)
 * and PostgreSQL (many nodes) are interchangeable. Times are Date objects; serials are lowercase hex
 * without leading zeros stripped (exactly as written in the certificate, even length).
 */

export type CertificateStatus = "pending" | "valid" | "revoked" | "aborted";

/** What a certificate was issued as. `ca-root` and `ca-intermediate` are the CA's own certificates. */
export type CertificateKind = "server" | "client" | "peer" | "ocsp" | "ca-root" | "ca-intermediate";

export type RevocationReason =
  | "unspecified"
  | "keyCompromise"
  | "cACompromise"
  | "affiliationChanged"
  | "superseded"
  | "cessationOfOperation"
  | "certificateHold"
  | "privilegeWithdrawn"
  | "aACompromise";

export interface CertificateRecord {
  serial: string;
  /** The name it was issued under (`mtls issue client alice` → "alice"); CA certs: "root"/"intermediate". */
  name: string;
  profile: CertificateKind;
  subject: string;
  /** Subject alternative names as "dns:x", "ip:x", "email:x", "uri:x". */
  sans: string[];
  keyType: string;
  notBefore: Date;
  notAfter: Date;
  status: CertificateStatus;
  revokedAt: Date | null;
  revocationReason: RevocationReason | null;
  /** SHA-256 of the DER, lowercase hex without separators. */
  fingerprint: string;
  /** Serial of the issuing CA certificate (null for the self-signed root). */
  issuerSerial: string | null;
  /** The certificate itself, PEM. */
  pem: string;
  /** Where `issue` wrote the files, when it did (absolute paths), for export and crash recovery. */
  certPath: string | null;
  keyPath: string | null;
  p12Path: string | null;
  createdAt: Date;
}

export interface CertificateFilter {
  name?: string;
  status?: CertificateStatus | CertificateStatus[];
  profile?: CertificateKind | CertificateKind[];
  /** Only certificates whose notAfter is at or before this time. */
  expiringBefore?: Date;
  issuerSerial?: string;
}

export interface AuditEventInput {
  at: Date;
  /** Who did it: "cli:<user>", "api:<serial>", "system". */
  actor: string;
  /** What happened: "ca.init", "cert.issue", "cert.revoke", "crl.generate", ... */
  action: string;
  /** The certificate serial or other object the event is about, if any. */
  subject: string | null;
  details: Record<string, unknown>;
}

export interface AuditEvent extends AuditEventInput {
  seq: number;
  /** Hex SHA-256 of the previous event's hash and this event's canonical content. */
  prevHash: string;
  hash: string;
}

export interface AuditVerification {
  ok: boolean;
  count: number;
  /** The first event whose hash or link does not verify. */
  brokenAt?: number;
  reason?: string;
}

/** Operations available inside a transaction; everything commits or nothing does. */
export interface StoreTx {
  insertCertificate(rec: CertificateRecord): Promise<void>;
  updateCertificate(
    serial: string,
    patch: Partial<
      Pick<
        CertificateRecord,
        "status" | "revokedAt" | "revocationReason" | "certPath" | "keyPath" | "p12Path"
      >
    >,
  ): Promise<void>;
  getCertificate(serial: string): Promise<CertificateRecord | undefined>;
  findCertificates(filter?: CertificateFilter): Promise<CertificateRecord[]>;
  appendAudit(event: AuditEventInput): Promise<AuditEvent>;
  /** Returns the next value of a named, strictly increasing counter (starts at 1), e.g. "crl:<issuer serial>". */
  nextCounter(name: string): Promise<number>;
  getSetting(key: string): Promise<string | undefined>;
  setSetting(key: string, value: string): Promise<void>;
}

export interface Store extends StoreTx {
  /** Runs `fn` in one serializable transaction; rolls back if it throws. */
  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>;
  listAudit(opts?: { afterSeq?: number; limit?: number }): Promise<AuditEvent[]>;
  verifyAudit(): Promise<AuditVerification>;
  close(): Promise<void>;
}
