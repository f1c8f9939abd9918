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

/** One line of a CRL, as listRevoked() reads it. */
export interface RevokedEntry {
  serial: string;
  revokedAt: Date | null;
  reason: RevocationReason | null;
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

/**
 * A one-time enrollment token (ca/tokens.ts): what it grants and whether it was used. The secret
 * itself is never stored, only its SHA-256.
 */
export interface EnrollmentTokenRecord {
  /** 16 lowercase hex characters; the token's public part and its audit subject. */
  id: string;
  /** Hex SHA-256 of the secret's 32 bytes. */
  secretHash: string;
  /** The name (and CN) of the certificate it grants. */
  name: string;
  profile: "server" | "client" | "peer";
  /** The SANs it allows, as "dns:x", "ip:x", "email:x", "uri:x". */
  sans: string[];
  /** Certificate lifetime in ms; null means the profile's default. */
  ttlMs: number | null;
  organizationalUnit: string[];
  createdAt: Date;
  /** Audit actor of whoever created it. */
  createdBy: string;
  expiresAt: Date;
  usedAt: Date | null;
  /** Serial of the certificate it was used for. */
  usedBySerial: string | null;
}

export interface TokenFilter {
  name?: string;
  /** true: only used tokens; false: only unused ones. */
  used?: boolean;
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
  /**
   * What a CRL lists, and nothing more: the revoked certificates of one issuer that are still
   * unexpired (notAfter strictly after `notAfterAfter`), in no particular order. A lean read for
   * CRLs of 100,000 entries (no PEM, no SANs).
   */
  listRevoked(issuerSerial: string, notAfterAfter: Date): Promise<RevokedEntry[]>;
  appendAudit(event: AuditEventInput): Promise<AuditEvent>;
  /** Returns the next value of a named, strictly increasing counter (starts at 1), e.g. "crl:<issuer serial>". */
  nextCounter(name: string): Promise<number>;
  getSetting(key: string): Promise<string | undefined>;
  setSetting(key: string, value: string): Promise<void>;
  /** Stores a new token; a duplicate id is an E_STORE error. */
  insertToken(rec: EnrollmentTokenRecord): Promise<void>;
  getToken(id: string): Promise<EnrollmentTokenRecord | undefined>;
  /**
   * Marks an unused token used (a conditional update, `WHERE used_at IS NULL`); true when this call
   * did it, false when the token was already used or does not exist. Of racing calls, one wins.
   */
  markTokenUsed(id: string, at: Date, serial: string): Promise<boolean>;
  /** Matching tokens, oldest first (createdAt, then id). */
  findTokens(filter?: TokenFilter): Promise<EnrollmentTokenRecord[]>;
}

export interface Store extends StoreTx {
  /**
   * Runs `fn` in one serializable transaction; rolls back if it throws. Both stores run the
   * transactions of all processes (all nodes, on PostgreSQL) one at a time.
   */
  transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>;
  listAudit(opts?: { afterSeq?: number; limit?: number }): Promise<AuditEvent[]>;
  verifyAudit(): Promise<AuditVerification>;
  close(): Promise<void>;
}
