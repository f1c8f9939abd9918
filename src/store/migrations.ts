import { type Kysely, type Migration, type MigrationProvider, Migrator, SqliteAdapter } from "kysely";
import { MtlsError } from "../errors.js";

/**
 * The schema's history, in code (nothing is read from disk at run time) and written only with
 * Kysely's schema builder and portable types (text, integer), so the same migrations create the
 * same tables on SQLite and PostgreSQL. Never edit a released migration: add the next one.
 */
const migrations: Record<string, Migration> = {
  "0001_initial": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("certificates")
        .addColumn("serial", "text", (c) => c.primaryKey())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("profile", "text", (c) => c.notNull())
        .addColumn("subject", "text", (c) => c.notNull())
        .addColumn("sans", "text", (c) => c.notNull())
        .addColumn("key_type", "text", (c) => c.notNull())
        .addColumn("not_before", "text", (c) => c.notNull())
        .addColumn("not_after", "text", (c) => c.notNull())
        .addColumn("status", "text", (c) => c.notNull())
        .addColumn("revoked_at", "text")
        .addColumn("revocation_reason", "text")
        .addColumn("fingerprint", "text", (c) => c.notNull())
        .addColumn("issuer_serial", "text")
        .addColumn("pem", "text", (c) => c.notNull())
        .addColumn("cert_path", "text")
        .addColumn("key_path", "text")
        .addColumn("p12_path", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      const index = (name: string, column: string) =>
        db.schema.createIndex(name).on("certificates").column(column);
      await index("certificates_name_idx", "name").execute();
      await index("certificates_status_idx", "status").execute();
      await index("certificates_not_after_idx", "not_after").execute();
      await index("certificates_fingerprint_idx", "fingerprint").unique().execute();
      await index("certificates_issuer_serial_idx", "issuer_serial").execute();

      await db.schema
        .createTable("audit_events")
        .addColumn("seq", "integer", (c) => c.primaryKey())
        .addColumn("at", "text", (c) => c.notNull())
        .addColumn("actor", "text", (c) => c.notNull())
        .addColumn("action", "text", (c) => c.notNull())
        .addColumn("subject", "text")
        .addColumn("details", "text", (c) => c.notNull())
        .addColumn("prev_hash", "text", (c) => c.notNull())
        .addColumn("hash", "text", (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("counters")
        .addColumn("name", "text", (c) => c.primaryKey())
        .addColumn("value", "integer", (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("settings")
        .addColumn("key", "text", (c) => c.primaryKey())
        .addColumn("value", "text", (c) => c.notNull())
        .execute();
    },
  },
  "0002_tokens": {
    async up(db: Kysely<unknown>) {
      // One-time enrollment tokens (ca/tokens.ts). Only SHA-256 of the secret is kept. `ttl_ms` is
      // bigint: PostgreSQL's integer is 32-bit, and a 30-day lifetime in ms (2.6e9) overflows it.
      await db.schema
        .createTable("enrollment_tokens")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("secret_hash", "text", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("profile", "text", (c) => c.notNull())
        .addColumn("sans", "text", (c) => c.notNull())
        .addColumn("ttl_ms", "bigint")
        .addColumn("ou", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("expires_at", "text", (c) => c.notNull())
        .addColumn("used_at", "text")
        .addColumn("used_by_serial", "text")
        .execute();
      await db.schema
        .createIndex("enrollment_tokens_name_idx")
        .on("enrollment_tokens")
        .column("name")
        .execute();
    },
  },
  "0003_console_indexes": {
    async up(db: Kysely<unknown>) {
      // The admin console's queries (console-queries.ts). Each sort column ends in serial, the
      // tie-break, so a page in either direction is read in index order without sorting the table;
      // (status, not_after) serves the views and the overview's counts as range reads; audit
      // filters by actor or action read newest first through (actor|action, seq).
      const index = (name: string, table: string, columns: string[]) =>
        db.schema.createIndex(name).on(table).columns(columns).execute();
      await index("certificates_status_not_after_idx", "certificates", ["status", "not_after"]);
      await index("certificates_name_serial_idx", "certificates", ["name", "serial"]);
      await index("certificates_not_after_serial_idx", "certificates", ["not_after", "serial"]);
      await index("certificates_not_before_serial_idx", "certificates", ["not_before", "serial"]);
      await index("certificates_created_at_serial_idx", "certificates", ["created_at", "serial"]);
      await index("audit_events_actor_seq_idx", "audit_events", ["actor", "seq"]);
      await index("audit_events_action_seq_idx", "audit_events", ["action", "seq"]);
      // Each of these is the leading column of one above, which serves every lookup it served
      // (findCertificates by name, status, expiry): dropped, so issuing writes no more indexes than needed.
      for (const old of ["certificates_name_idx", "certificates_status_idx", "certificates_not_after_idx"]) {
        await db.schema.dropIndex(old).execute();
      }
      // SQLite only: every column a console filter or sort reads, so a text search or a filtered
      // page scans this index (about a third of the table's size, no PEMs) instead of the table.
      // Not on PostgreSQL: a B-tree entry there may not exceed ~2.7 kB, which a certificate with
      // many SANs would, and its planner chooses well from statistics without it.
      if (db.getExecutor().adapter instanceof SqliteAdapter) {
        await index("certificates_console_idx", "certificates", [
          "status",
          "not_after",
          "name",
          "subject",
          "sans",
          "fingerprint",
          "profile",
          "key_type",
          "not_before",
          "created_at",
          "serial",
        ]);
      }
    },
  },
};

export const migrationProvider: MigrationProvider = {
  getMigrations: async () => migrations,
};

/** Brings the schema up to date; throws MtlsError E_STORE naming the migration that failed. */
export async function migrateToLatest<DB>(db: Kysely<DB>): Promise<void> {
  const migrator = new Migrator({
    db,
    provider: migrationProvider,
    migrationTableName: "mtls_migration",
    migrationLockTableName: "mtls_migration_lock",
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === "Error")?.migrationName;
    const what = failed ? `migration ${failed} failed` : "could not migrate the database";
    throw new MtlsError("E_STORE", `${what}: ${error instanceof Error ? error.message : String(error)}`, {
      cause: error,
    });
  }
}
