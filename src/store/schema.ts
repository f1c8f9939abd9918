import type { ColumnType } from "kysely";

/**
 * Table typings for Kysely. Column types are the portable subset both SQLite and PostgreSQL store
 * the same way: text and integer only (and bigint where a value can pass 2^31, which PostgreSQL's
 * integer cannot hold; node-postgres returns bigint as a string, so it is read through Number()). Times are ISO-8601 UTC text from `Date.toISOString()`
 * (fixed width, so they sort and compare as text); JSON values (SANs, audit details) are text.
 * Conversion to and from the Store's records happens in rows.ts, nowhere else.
 */

export interface CertificatesTable {
  serial: string;
  name: string;
  profile: string;
  subject: string;
  /** JSON array of strings. */
  sans: string;
  key_type: string;
  not_before: string;
  not_after: string;
  status: string;
  revoked_at: string | null;
  revocation_reason: string | null;
  fingerprint: string;
  issuer_serial: string | null;
  pem: string;
  cert_path: string | null;
  key_path: string | null;
  p12_path: string | null;
  created_at: string;
}

export interface AuditEventsTable {
  /** 1, 2, 3, ... assigned by appendAudit; the primary key, so two appends cannot share one. */
  seq: number;
  at: string;
  actor: string;
  action: string;
  subject: string | null;
  /** Canonical JSON (audit-chain.ts), exactly the text that was hashed. */
  details: string;
  prev_hash: string;
  hash: string;
}

export interface CountersTable {
  name: string;
  value: number;
}

export interface SettingsTable {
  key: string;
  value: string;
}

export interface EnrollmentTokensTable {
  /** 16 hex characters: the public half of the token, and its audit subject. */
  id: string;
  /** Hex SHA-256 of the secret's 32 bytes. */
  secret_hash: string;
  name: string;
  profile: string;
  /** JSON array of "dns:x"-style strings: the SANs the token allows. */
  sans: string;
  /** bigint column: a number on SQLite, a string from node-postgres. */
  ttl_ms: ColumnType<number | string | null, number | null, number | null>;
  /** JSON array of organizational units. */
  ou: string;
  created_at: string;
  created_by: string;
  expires_at: string;
  used_at: string | null;
  used_by_serial: string | null;
}

export interface Database {
  certificates: CertificatesTable;
  enrollment_tokens: EnrollmentTokensTable;
  audit_events: AuditEventsTable;
  counters: CountersTable;
  settings: SettingsTable;
}
