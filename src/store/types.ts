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
  /** The certificate's name; only when listRevoked() was asked for it (`{ names: true }`). */
  name?: string;
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

/**
 * The admin console's certificate views. `valid`: status valid and notAfter after `now`;
 * `expiring7`/`expiring30`: valid ones whose notAfter is at most 7/30 days after `now`; `expired`:
 * status valid and notAfter at or before `now`; `revoked`/`pending`: that status.
 */
export type CertificateView =
  | "all"
  | "valid"
  | "expiring7"
  | "expiring30"
  | "expired"
  | "revoked"
  | "pending";

/** One page of the console's certificate table (searchCertificates). */
export interface CertificateSearch {
  /**
   * Case-insensitive substring of name, subject or a SAN, or a prefix of the serial or the SHA-256
   * fingerprint (hex, colons ignored). LIKE wildcards in it are literal. Blank: no text filter.
   */
  text?: string;
  /** Default "all". */
  view?: CertificateView;
  /** Only these profiles (an empty array matches nothing). */
  profile?: CertificateKind[];
  /** Default "name". "status" sorts by the status shown (expired ones as "expired"). Ties: by serial. */
  sort?: "name" | "notAfter" | "notBefore" | "serial" | "status" | "profile" | "keyType" | "createdAt";
  /** Default "asc". */
  direction?: "asc" | "desc";
  /** Rows to skip (default 0). */
  offset?: number;
  /** Rows per page, 1..500. */
  limit: number;
  /** The time the views are relative to. */
  now: Date;
}

/** A certificate as a listing shows it: no PEM, no file paths. */
export type CertificateSummary = Omit<CertificateRecord, "pem" | "certPath" | "keyPath" | "p12Path">;

/** What the console's overview shows (certificateStats): every certificate but the CA's own root and intermediate. */
export interface CertificateStats {
  /** Counts as in CertificateView (expiring7 and expiring30 are also counted in valid), plus aborted. */
  byStatus: {
    valid: number;
    expiring7: number;
    expiring30: number;
    expired: number;
    revoked: number;
    pending: number;
    aborted: number;
  };
  /**
   * Valid certificates whose notAfter is after `now` and at most `days` days later, per UTC day:
   * every day from now's through (now + days)'s, oldest first, days without any with count 0.
   */
  expiriesByDay: { day: string; count: number }[];
}

/** A page of the audit log, newest first (listAuditPage). */
export interface AuditPageQuery {
  /** Only events with seq below this (the last seq of the previous page). */
  beforeSeq?: number;
  /** 1..1000. */
  limit: number;
  /** Only events of exactly this actor. */
  actor?: string;
  /** Only events of exactly this action. */
  action?: string;
}

/** What Store.watchRevocations reports about its listening connection. */
export interface RevocationWatchState {
  connected: boolean;
  /** Why it is not connected (the last failure). */
  error?: Error;
}

export interface RevocationWatch {
  /** Stops listening and retrying; idempotent. */
  close(): Promise<void>;
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
  listRevoked(issuerSerial: string, notAfterAfter: Date, opts?: { names?: boolean }): Promise<RevokedEntry[]>;
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
  /**
   * Events with seq > afterSeq (default 0), in seq order; all of them unless `limit` is given;
   * only those whose action is one of `actions` when given (filtered by the database).
   */
  listAudit(opts?: { afterSeq?: number; limit?: number; actions?: string[] }): Promise<AuditEvent[]>;
  /** The seq of the newest audit event (0 when the log is empty). Every smaller seq is committed. */
  lastAuditSeq(): Promise<number>;
  /**
   * PostgreSQL only (SQLite leaves it undefined: callers poll). Calls `onWake` soon after any
   * process on this database (and schema) commits a `cert.revoke` audit event, and after every
   * (re)connect of the listening connection, so the caller re-reads the log and catches up on
   * anything it missed while disconnected. The connection is retried with backoff until close();
   * `onState` hears each connect and loss.
   */
  watchRevocations?(
    onWake: () => void,
    onState?: (s: RevocationWatchState) => void,
  ): Promise<RevocationWatch>;
  /** The console's certificate table: one page and the number of all matching rows, in SQL. */
  searchCertificates(q: CertificateSearch): Promise<{ rows: CertificateSummary[]; total: number }>;
  /** The console's overview counts and expiry chart (`days` default 90, 1..3660). */
  certificateStats(now: Date, days?: number): Promise<CertificateStats>;
  /** Audit events newest first, filtered by exact actor and action, paged by seq. */
  listAuditPage(q: AuditPageQuery): Promise<AuditEvent[]>;
  verifyAudit(): Promise<AuditVerification>;
  close(): Promise<void>;
}
