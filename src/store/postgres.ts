import { userInfo } from "node:os";
import {
  CompiledQuery,
  Kysely,
  PostgresDialect,
  type PostgresPool,
  type PostgresPoolClient,
  sql,
} from "kysely";
import pg from "pg";
import { MtlsError } from "../errors.js";
import { KyselyStore, type KyselyStoreOptions } from "./kysely-store.js";
import { migrateToLatest } from "./migrations.js";
import { connectError, queryError } from "./postgres-errors.js";
import { listenWithReconnect } from "./postgres-listen.js";
import { checkSchemaName, describePostgresUrl, parsePostgresUrl } from "./postgres-url.js";
import type { Database } from "./schema.js";
import type { AuditEvent, RevocationWatch, RevocationWatchState, Store } from "./types.js";

export interface PostgresStoreOptions {
  /** Most connections this process keeps open (default 10, or `?pool=N` in the URL). */
  poolSize?: number;
  /** Longest any one statement may run, lock waits included (default 30 s, or `?statement_timeout=MS`). */
  statementTimeoutMs?: number;
  /** How long to wait for a connection before E_UNAVAILABLE (default 5 s). */
  connectTimeoutMs?: number;
  /**
   * A session idle inside a transaction this long is ended by the server, so a frozen node cannot
   * hold the writer lock forever (default 60 s).
   */
  idleInTransactionTimeoutMs?: number;
  /** Shown in pg_stat_activity (default "mtls", or `?application_name=`). */
  applicationName?: string;
  /** The schema holding the tables (search_path); default the server's (usually "public"), or `?schema=`. */
  schema?: string;
}

/**
 * Advisory lock keys are (class, object) pairs of int4: the class says which lock, the object is a
 * hash of the schema, so CAs kept in different schemas of one database never wait for each other.
 * 0x6d746c73 is "mtls" in ASCII.
 */
const LOCK_CLASS_WRITER = 0x6d746c73;
const LOCK_CLASS_MIGRATE = 0x6d746c74;
/** Longest wait for another node's migration before start-up fails. */
const MIGRATE_LOCK_TIMEOUT_MS = 10 * 60_000;

const DEFAULTS = {
  poolSize: 10,
  statementTimeoutMs: 30_000,
  connectTimeoutMs: 5_000,
  idleInTransactionTimeoutMs: 60_000,
  applicationName: "mtls",
};

/**
 * Opens the Store in a PostgreSQL database (`postgres://user@host:port/db`), brings its schema up
 * to date and returns it. Several processes may do this at once: migrations run under a per-schema
 * advisory lock, so one migrates and the others wait, then find nothing left to do.
 *
 * Concurrency between nodes: every `transaction()` first takes a transaction-scoped advisory lock
 * (the writer lock) and runs at READ COMMITTED, so transactions of all nodes run one at a time and
 * each of their statements sees everything committed before it, which is what SQLite's BEGIN
 * IMMEDIATE gives on one machine. This is what keeps the audit log one hash chain (the last event is
 * read after the lock), a CRL number and the revocations it lists consistent (no CRL with a higher
 * number lists less), and read-then-write transactions such as revoke() free of lost updates.
 * Single statements outside a transaction (reads, markTokenUsed's conditional UPDATE, nextCounter's
 * UPSERT) do not take it: each is atomic on its own. Group commit is SQLite's; the server commits.
 */
export async function openPostgresStore(url: string, options: PostgresStoreOptions = {}): Promise<Store> {
  const fromUrl = parsePostgresUrl(url);
  const where = describePostgresUrl(url);
  const schema = options.schema ?? fromUrl.schema;
  if (schema !== undefined) checkSchemaName(schema);
  const applicationName = options.applicationName ?? fromUrl.applicationName ?? DEFAULTS.applicationName;
  const pool = new pg.Pool({
    connectionString: withDefaultUser(fromUrl.connectionString),
    max: options.poolSize ?? fromUrl.poolSize ?? DEFAULTS.poolSize,
    statement_timeout:
      options.statementTimeoutMs ?? fromUrl.statementTimeoutMs ?? DEFAULTS.statementTimeoutMs,
    idle_in_transaction_session_timeout:
      options.idleInTransactionTimeoutMs ?? DEFAULTS.idleInTransactionTimeoutMs,
    connectionTimeoutMillis: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    application_name: applicationName,
    ...(schema !== undefined ? { options: `-c search_path=${schema}` } : {}),
  });
  // An idle connection the server drops (restart, failover) must not crash the process: the pool
  // discards it and the next query opens a new one.
  pool.on("error", () => {});
  // The same for a connection lost while checked out (between statements of a transaction): pg
  // emits it on the client, and unheard it would be an uncaught exception. The next statement on
  // that client then fails, and is reported as E_UNAVAILABLE.
  pool.on("connect", (client) => client.on("error", () => {}));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: reportingPool(pool, where) }) });
  try {
    const lockObject = await schemaLockKey(db, where);
    await migrateUnderLock(db, lockObject);
    const writerLock = CompiledQuery.raw(`select pg_advisory_xact_lock(${LOCK_CLASS_WRITER}, ${lockObject})`);
    const channel = revocationChannel(lockObject);
    return new PostgresStore(
      db,
      {
        isolationLevel: "read committed",
        onBegin: async (trx) => {
          await trx.executeQuery(writerLock);
        },
        afterAppendAudit: async (trx, event) => {
          if (event.action === REVOKE_ACTION) await trx.executeQuery(notifyQuery(channel, event));
        },
      },
      {
        channel,
        client: {
          connectionString: withDefaultUser(fromUrl.connectionString),
          connectionTimeoutMillis: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
          application_name: `${applicationName}:listen`,
        },
      },
    );
  } catch (err) {
    await db.destroy().catch(() => {});
    throw err;
  }
}

const REVOKE_ACTION = "cert.revoke";

/**
 * The NOTIFY channel of one schema's revocations: "mtls_revoked_" and the schema's hash (the same
 * hash the advisory locks use) in hex, so CAs in two schemas of one database do not wake each other.
 */
export const revocationChannel = (schemaKey: number): string =>
  `mtls_revoked_${(schemaKey >>> 0).toString(16).padStart(8, "0")}`;

/** pg_notify inside the revoking transaction: PostgreSQL delivers it at commit, never on rollback. */
const notifyQuery = (channel: string, event: AuditEvent) =>
  CompiledQuery.raw("select pg_notify($1, $2)", [channel, String(event.seq)]);

/** The KyselyStore with what only PostgreSQL has: a LISTEN on the schema's revocation channel. */
class PostgresStore extends KyselyStore {
  readonly #watches = new Set<RevocationWatch>();

  constructor(
    db: Kysely<Database>,
    options: KyselyStoreOptions,
    private readonly listen: { channel: string; client: pg.ClientConfig },
  ) {
    super(db, options);
  }

  async watchRevocations(
    onWake: () => void,
    onState?: (s: RevocationWatchState) => void,
  ): Promise<RevocationWatch> {
    const inner = await listenWithReconnect({ ...this.listen, onWake, onState });
    const watch: RevocationWatch = {
      close: async () => {
        this.#watches.delete(watch);
        await inner.close();
      },
    };
    this.#watches.add(watch);
    return watch;
  }

  /** Closes the listening connections too, so a forgotten watch cannot keep the process alive. */
  override async close(): Promise<void> {
    await Promise.all([...this.#watches].map((w) => w.close()));
    await super.close();
  }
}

/** The URL with a user name when it has none (pg would send none, and the server refuses that). */
export function withDefaultUser(url: string): string {
  const u = new URL(url);
  if (u.username || u.searchParams.has("user")) return url;
  // A URL without a host (`postgres:///db?host=/run/postgresql`) cannot carry a user name: pg
  // also reads it from the query string.
  if (u.host === "") u.searchParams.set("user", defaultUser());
  else u.username = encodeURIComponent(defaultUser());
  return u.toString();
}

/** PGUSER, else USER, else the operating system's name for this process's user (libpq does the same). */
export function defaultUser(env: NodeJS.ProcessEnv = process.env): string {
  return env.PGUSER || env.USER || userInfo().username;
}

/** The per-schema half of the advisory lock keys; fails clearly when the schema does not exist. */
async function schemaLockKey(db: Kysely<Database>, where: string): Promise<number> {
  const { rows } = await sql<{ schema: string | null; key: number | null }>`
    select current_schema() as schema, hashtext(current_schema()) as key`.execute(db);
  const row = rows[0];
  if (row?.schema == null || row.key == null) {
    throw new MtlsError(
      "E_STORE",
      `PostgreSQL at ${where}: no schema to keep the tables in (the search_path names none that exists)`,
    );
  }
  return Number(row.key);
}

/**
 * Runs the migrations on one connection while it holds a session advisory lock for this schema.
 * The migration bookkeeping tables are created here, in the current schema, before Kysely's
 * Migrator looks for them: the Migrator searches every schema of the database for a table of that
 * name, so a second CA in another schema would otherwise make it skip creating its own.
 */
async function migrateUnderLock(db: Kysely<Database>, lockObject: number): Promise<void> {
  await db.connection().execute(async (conn) => {
    // Waiting for another node's migration, and migrating a large table, may take longer than one
    // statement may (statement_timeout, 30 s by default, or much less when configured): on this
    // session only, statements are unbounded and the lock wait is bounded by its own, generous limit.
    await sql`set statement_timeout = 0`.execute(conn);
    await sql`set lock_timeout = ${sql.lit(`${MIGRATE_LOCK_TIMEOUT_MS}ms`)}`.execute(conn);
    try {
      await sql`select pg_advisory_lock(${sql.lit(LOCK_CLASS_MIGRATE)}, ${sql.lit(lockObject)})`.execute(
        conn,
      );
    } catch (err) {
      await resetTimeouts(conn);
      throw err;
    }
    try {
      await sql`create table if not exists mtls_migration (name varchar(255) not null primary key, timestamp varchar(255) not null)`.execute(
        conn,
      );
      await sql`create table if not exists mtls_migration_lock (id varchar(255) not null primary key, is_locked integer not null default 0)`.execute(
        conn,
      );
      await migrateToLatest(conn);
    } finally {
      await sql`select pg_advisory_unlock(${sql.lit(LOCK_CLASS_MIGRATE)}, ${sql.lit(lockObject)})`
        .execute(conn)
        .catch(() => {});
      await resetTimeouts(conn);
    }
  });
}

/** Back to the pool's settings (the connection parameters), before the connection is reused. */
async function resetTimeouts(conn: Kysely<Database>): Promise<void> {
  await sql`reset statement_timeout`.execute(conn).catch(() => {});
  await sql`reset lock_timeout`.execute(conn).catch(() => {});
}

/**
 * The pool as Kysely sees it, with failures reported as one line that names the server: a refused
 * or timed-out connect becomes E_UNAVAILABLE (or E_STORE when the server said no), and a statement
 * cut off by a dropped connection E_UNAVAILABLE. Other statement errors pass through unchanged for
 * the store to report as E_STORE.
 */
function reportingPool(pool: pg.Pool, where: string): PostgresPool {
  const wrapped = new WeakMap<pg.PoolClient, PostgresPoolClient>();
  return {
    async connect() {
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (err) {
        throw connectError(where, err);
      }
      let wrapper = wrapped.get(client);
      if (!wrapper) {
        const c = client;
        wrapper = {
          // The Store never streams (no cursors): only query(text, values) is used.
          query: (async (text: string, values: unknown[]) => {
            try {
              return await c.query(text, values);
            } catch (err) {
              throw queryError(where, err);
            }
          }) as unknown as PostgresPoolClient["query"],
          release: (destroy?: boolean) => c.release(destroy),
        };
        wrapped.set(client, wrapper);
      }
      return wrapper;
    },
    end: () => pool.end(),
  };
}
