/** The store module's public face: the Store interface, its SQLite opener and the audit chain helpers. */
export {
  canonicalEventJson,
  canonicalJson,
  computeAuditHash,
  GENESIS_HASH,
  type HashedAuditEvent,
  verifyChain,
  verifyChainAsync,
} from "./audit-chain.js";
export { KyselyStore, type KyselyStoreOptions } from "./kysely-store.js";
export { migrateToLatest, migrationProvider } from "./migrations.js";
export type { Database } from "./schema.js";
export { openSqliteStore, type SqliteStoreOptions } from "./sqlite.js";
export type * from "./types.js";
