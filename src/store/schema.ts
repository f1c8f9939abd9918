/**
 * Table typings for Kysely. Column types are the portable subset both SQLite and PostgreSQL store
 * the same way: text and integer only. Times are ISO-8601 UTC text from `Date.toISOString()`
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

export interface Database {
  certificates: CertificatesTable;
  audit_events: AuditEventsTable;
  counters: CountersTable;
  settings: SettingsTable;
}
