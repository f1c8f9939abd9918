import { MtlsError } from "../errors.js";

/**
 * Whether a failed insertCertificate failed because its serial is already stored (the primary key),
 * as opposed to any other failure, including a duplicate fingerprint. Looks at the driver's error
 * kept as the E_STORE error's cause: SQLite names the column, PostgreSQL the constraint.
 */
export function isDuplicateSerial(err: unknown): boolean {
  if (!(err instanceof MtlsError) || err.code !== "E_STORE") return false;
  const cause = err.cause as { code?: unknown; constraint?: unknown; message?: unknown } | undefined;
  if (!cause || typeof cause !== "object") return false;
  if (cause.code === "23505") return cause.constraint === "certificates_pkey";
  if (typeof cause.code === "string" && cause.code.startsWith("SQLITE_CONSTRAINT")) {
    return typeof cause.message === "string" && /\bcertificates\.serial\b/.test(cause.message);
  }
  return false;
}
