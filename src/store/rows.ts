import type { Insertable, Selectable } from "kysely";
import { MtlsError } from "../errors.js";
import type { AuditEventsTable, CertificatesTable, EnrollmentTokensTable } from "./schema.js";
import type {
  AuditEvent,
  CertificateKind,
  CertificateRecord,
  CertificateStatus,
  CertificateSummary,
  EnrollmentTokenRecord,
  RevocationReason,
  StoreTx,
} from "./types.js";

/** Conversion between the Store's records (Dates, arrays) and table rows (text), both ways. */

export type CertificatePatch = Parameters<StoreTx["updateCertificate"]>[1];

/** ISO-8601 UTC with milliseconds; only years 0000–9999 so every value has the same width and sorts as text. */
export function toIso(date: Date, field: string): string {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) {
    throw new MtlsError("E_BAD_INPUT", `${field} is not a valid date`);
  }
  const year = date.getUTCFullYear();
  if (year < 0 || year > 9999) throw new MtlsError("E_BAD_INPUT", `${field} is outside the years 0000-9999`);
  return date.toISOString();
}

const fromIso = (text: string): Date => new Date(text);
const isoOrNull = (date: Date | null, field: string) => (date === null ? null : toIso(date, field));

export function certificateToRow(rec: CertificateRecord): CertificatesTable {
  return {
    serial: rec.serial,
    name: rec.name,
    profile: rec.profile,
    subject: rec.subject,
    sans: JSON.stringify(rec.sans),
    key_type: rec.keyType,
    not_before: toIso(rec.notBefore, "notBefore"),
    not_after: toIso(rec.notAfter, "notAfter"),
    status: rec.status,
    revoked_at: isoOrNull(rec.revokedAt, "revokedAt"),
    revocation_reason: rec.revocationReason,
    fingerprint: rec.fingerprint,
    issuer_serial: rec.issuerSerial,
    pem: rec.pem,
    cert_path: rec.certPath,
    key_path: rec.keyPath,
    p12_path: rec.p12Path,
    created_at: toIso(rec.createdAt, "createdAt"),
  };
}

export function rowToCertificate(row: CertificatesTable): CertificateRecord {
  return {
    ...rowToCertificateSummary(row),
    pem: row.pem,
    certPath: row.cert_path,
    keyPath: row.key_path,
    p12Path: row.p12_path,
  };
}

/** The columns of a CertificateSummary: a listing reads neither the PEM nor the file paths. */
export const SUMMARY_COLUMNS = [
  "serial",
  "name",
  "profile",
  "subject",
  "sans",
  "key_type",
  "not_before",
  "not_after",
  "status",
  "revoked_at",
  "revocation_reason",
  "fingerprint",
  "issuer_serial",
  "created_at",
] as const;

export function rowToCertificateSummary(
  row: Pick<CertificatesTable, (typeof SUMMARY_COLUMNS)[number]>,
): CertificateSummary {
  return {
    serial: row.serial,
    name: row.name,
    profile: row.profile as CertificateKind,
    subject: row.subject,
    sans: JSON.parse(row.sans) as string[],
    keyType: row.key_type,
    notBefore: fromIso(row.not_before),
    notAfter: fromIso(row.not_after),
    status: row.status as CertificateStatus,
    revokedAt: row.revoked_at === null ? null : fromIso(row.revoked_at),
    revocationReason: row.revocation_reason as RevocationReason | null,
    fingerprint: row.fingerprint,
    issuerSerial: row.issuer_serial,
    createdAt: fromIso(row.created_at),
  };
}

/** Only the columns the patch names; a property that is present but undefined is ignored. */
export function patchToRow(patch: CertificatePatch): Partial<CertificatesTable> {
  const row: Partial<CertificatesTable> = {};
  if (patch.status !== undefined) row.status = patch.status;
  if (patch.revokedAt !== undefined) row.revoked_at = isoOrNull(patch.revokedAt, "revokedAt");
  if (patch.revocationReason !== undefined) row.revocation_reason = patch.revocationReason;
  if (patch.certPath !== undefined) row.cert_path = patch.certPath;
  if (patch.keyPath !== undefined) row.key_path = patch.keyPath;
  if (patch.p12Path !== undefined) row.p12_path = patch.p12Path;
  return row;
}

export function rowToAuditEvent(row: AuditEventsTable): AuditEvent {
  return {
    seq: Number(row.seq),
    at: fromIso(row.at),
    actor: row.actor,
    action: row.action,
    subject: row.subject,
    details: JSON.parse(row.details) as Record<string, unknown>,
    prevHash: row.prev_hash,
    hash: row.hash,
  };
}

/** The row of a token; ttlMs must be a safe integer (it goes into a bigint column). */
export function tokenToRow(rec: EnrollmentTokenRecord): Insertable<EnrollmentTokensTable> {
  if (rec.ttlMs !== null && !(Number.isSafeInteger(rec.ttlMs) && rec.ttlMs > 0)) {
    throw new MtlsError("E_BAD_INPUT", `token ttlMs must be a positive integer, not ${rec.ttlMs}`);
  }
  return {
    id: rec.id,
    secret_hash: rec.secretHash,
    name: rec.name,
    profile: rec.profile,
    sans: JSON.stringify(rec.sans),
    ttl_ms: rec.ttlMs,
    ou: JSON.stringify(rec.organizationalUnit),
    created_at: toIso(rec.createdAt, "createdAt"),
    created_by: rec.createdBy,
    expires_at: toIso(rec.expiresAt, "expiresAt"),
    used_at: isoOrNull(rec.usedAt, "usedAt"),
    used_by_serial: rec.usedBySerial,
  };
}

export function rowToToken(row: Selectable<EnrollmentTokensTable>): EnrollmentTokenRecord {
  return {
    id: row.id,
    secretHash: row.secret_hash,
    name: row.name,
    profile: row.profile as EnrollmentTokenRecord["profile"],
    sans: JSON.parse(row.sans) as string[],
    // node-postgres returns bigint columns as strings.
    ttlMs: row.ttl_ms === null ? null : Number(row.ttl_ms),
    organizationalUnit: JSON.parse(row.ou) as string[],
    createdAt: fromIso(row.created_at),
    createdBy: row.created_by,
    expiresAt: fromIso(row.expires_at),
    usedAt: row.used_at === null ? null : fromIso(row.used_at),
    usedBySerial: row.used_by_serial,
  };
}
