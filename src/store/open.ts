import type { PostgresStoreOptions } from "./postgres.js";
import { openSqliteStore } from "./sqlite.js";
import type { Store } from "./types.js";

/** Where a state directory's store is (config/state.ts StatePaths has these two fields). */
export interface StoreWhere {
  /** The SQLite file, used unless `storeUrl` is set. */
  database: string;
  /** A `postgres://` URL (`--store` / MTLS_STORE). */
  storeUrl?: string | undefined;
}

/**
 * Opens the Store in PostgreSQL (postgres.ts). The driver is loaded on first use, so processes that
 * keep to SQLite (most CLI runs) never load `pg`.
 */
export async function openPostgresStore(url: string, options?: PostgresStoreOptions): Promise<Store> {
  const postgres = await import("./postgres.js");
  return postgres.openPostgresStore(url, options);
}

/** Opens the store a state directory uses: PostgreSQL when a URL is set, else its SQLite file. */
export function openStore(where: StoreWhere): Promise<Store> {
  return where.storeUrl !== undefined ? openPostgresStore(where.storeUrl) : openSqliteStore(where.database);
}
