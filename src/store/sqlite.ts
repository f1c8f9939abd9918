import { chmodSync, closeSync, constants, fchmodSync, openSync } from "node:fs";
import BetterSqlite3 from "better-sqlite3";
import { Kysely } from "kysely";
import { KyselyStore } from "./kysely-store.js";
import { migrateToLatest } from "./migrations.js";
import type { Database } from "./schema.js";
import { ImmediateSqliteDialect } from "./sqlite-dialect.js";
import { storeError } from "./store-error.js";
import type { Store } from "./types.js";

export interface SqliteStoreOptions {
  /**
   * SQLite's `synchronous` setting in WAL mode. "full" (the default) fsyncs the WAL at every
   * commit, so a committed issuance or audit event survives power loss too; "normal" survives
   * process crashes but may lose the last commits on power loss or an OS crash, which for a CA
   * could mean a certificate in the wild with no record of it. FULL costs about a quarter of a
   * millisecond per commit here, so it is the default. Measured on this machine (ext4 on a virtual
   * disk, Node 20, 2000 sequential transactions, three runs):
   *   one setting written per transaction:             NORMAL 6,500-12,400/s  FULL 2,900-3,700/s
   *   insertCertificate + appendAudit per transaction: NORMAL 3,100-3,800/s   FULL 1,700-2,300/s
   * On a disk without a write cache each fsync costs more, and FULL's figures drop accordingly.
   */
  synchronous?: "full" | "normal";
  /**
   * Group commit (default true): transactions that queue while one runs share the next one and its
   * single commit and fsync, each caller's promise settling after that commit (KyselyStoreOptions).
   * One caller at a time sees no difference; concurrent callers stop paying one fsync each.
   */
  groupCommit?: boolean;
}

const MEMORY = ":memory:";

/**
 * Opens (creating if needed) the SQLite database at `file`, or a private in-memory one for
 * ":memory:", brings its schema up to date and returns it as a Store. The file and its -wal/-shm
 * companions are owner-only (0600) before SQLite writes anything into them.
 */
export async function openSqliteStore(file: string, options: SqliteStoreOptions = {}): Promise<Store> {
  let sqlite: BetterSqlite3.Database | undefined;
  try {
    if (file !== MEMORY) restrictToOwner(file);
    sqlite = new BetterSqlite3(file);
    sqlite.pragma("busy_timeout = 5000");
    sqlite.pragma("journal_mode = WAL");
    sqlite.pragma(`synchronous = ${options.synchronous === "normal" ? "NORMAL" : "FULL"}`);
    sqlite.pragma("foreign_keys = ON");
  } catch (err) {
    sqlite?.close();
    throw storeError(`could not open the database ${file}`, err);
  }
  const db = new Kysely<Database>({
    dialect: new ImmediateSqliteDialect({ database: withStatementCache(sqlite) }),
  });
  try {
    await migrateToLatest(db);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  return new KyselyStore(db, { groupCommit: options.groupCommit ?? true });
}

/**
 * Creates the file 0600 if missing and tightens it if it exists, through the same descriptor, so
 * there is no moment when it is readable by others. SQLite gives the -wal and -shm files it creates
 * the database file's mode; ones left over from before are tightened too.
 */
function restrictToOwner(file: string): void {
  const fd = openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600);
  try {
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
  for (const companion of [`${file}-wal`, `${file}-shm`]) {
    try {
      chmodSync(companion, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
}

/**
 * Kysely prepares every statement anew; the Store runs the same few statements over and over, and
 * preparing one costs more than running it. better-sqlite3 statements are reusable, so keep them.
 * (Kysely only streams with iterate() for streamQuery, which the Store never uses.)
 */
function withStatementCache(sqlite: BetterSqlite3.Database): BetterSqlite3.Database {
  const cache = new Map<string, BetterSqlite3.Statement>();
  const prepare = sqlite.prepare.bind(sqlite);
  return new Proxy(sqlite, {
    get(target, prop, receiver) {
      if (prop !== "prepare") return Reflect.get(target, prop, receiver);
      return (sql: string) => {
        let stmt = cache.get(sql);
        if (!stmt) {
          if (cache.size >= 256) cache.clear();
          stmt = prepare(sql);
          cache.set(sql, stmt);
        }
        return stmt;
      };
    },
  });
}
