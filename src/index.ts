/**
 * The mtls library: everything the CLI does, for programs to import. The CLI (src/cli) is a thin
 * shell over these exports.
 */
export * from "./agent/index.js";
export * from "./ca/index.js";
export * from "./config/index.js";
export { ERROR_CODES, type ErrorCode, isMtlsError, MtlsError } from "./errors.js";
export * from "./gateway/index.js";
export * from "./keys/index.js";
export * from "./pki/index.js";
export {
  type AuditEvent,
  type AuditEventInput,
  backupStore,
  type CertificateFilter,
  type CertificateRecord,
  type CertificateStatus,
  copyStore,
  type EnrollmentTokenRecord,
  openPostgresStore,
  openSqliteStore,
  openStore,
  type PostgresStoreOptions,
  restoreStore,
  type Store,
  type StoreTx,
} from "./store/index.js";
