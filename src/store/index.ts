/** The store module's public face: the Store interface, its SQLite and PostgreSQL openers and the audit chain helpers. */
export {
  canonicalEventJson,
  canonicalJson,
  computeAuditHash,
  GENESIS_HASH,
  type HashedAuditEvent,
  verifyChain,
  verifyChainAsync,
} from "./audit-chain.js";
export { isDuplicateSerial } from "./conflict.js";
export { KyselyStore, type KyselyStoreOptions } from "./kysely-store.js";
export { migrateToLatest, migrationProvider } from "./migrations.js";
export { openPostgresStore, openStore, type StoreWhere } from "./open.js";
export type { PostgresStoreOptions } from "./postgres.js";
export { describePostgresUrl, isPostgresUrl } from "./postgres-url.js";
export type { Database } from "./schema.js";
export { openSqliteStore, type SqliteStoreOptions } from "./sqlite.js";
export {
  BACKUP_FORMAT,
  backupStore,
  copyStore,
  exportRows,
  importRows,
  readBackup,
  restoreStore,
  type TableCounts,
  type TableRow,
  type TransferResult,
} from "./transfer.js";
export type * from "./types.js";
