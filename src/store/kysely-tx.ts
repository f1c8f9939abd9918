import { type Compilable, CompiledQuery, type DialectAdapter, type Kysely, type QueryResult } from "kysely";
import { MtlsError } from "../errors.js";
import { canonicalJson, computeAuditHash, GENESIS_HASH, type HashedAuditEvent } from "./audit-chain.js";
import {
  type CertificatePatch,
  certificateToRow,
  patchToRow,
  rowToCertificate,
  rowToToken,
  toIso,
  tokenToRow,
} from "./rows.js";
import type { Database } from "./schema.js";
import { guard } from "./store-error.js";
import type {
  AuditEvent,
  AuditEventInput,
  CertificateFilter,
  CertificateRecord,
  EnrollmentTokenRecord,
  RevocationReason,
  RevokedEntry,
  StoreTx,
  TokenFilter,
} from "./types.js";

/** Compiled SQL of the hot statements, per dialect (adapter): SQLite and PostgreSQL differ. */
const HOT_SQL = new WeakMap<DialectAdapter, Map<string, string>>();

const asList = <T>(value: T | T[] | undefined): T[] | undefined =>
  value === undefined ? undefined : Array.isArray(value) ? value : [value];

/**
 * The Store's queries, over a Kysely handle that is either a transaction or (for single statements)
 * the database itself. Portable SQL only: what runs here runs on SQLite and PostgreSQL alike.
 * `appendAudit` reads and then writes, so it must be called on a transaction (KyselyStore does).
 */
export class KyselyStoreTx implements StoreTx {
  /**
   * `afterAppendAudit` runs right after each appended event, on the same transaction (so whatever it
   * does commits or rolls back with the event): the PostgreSQL store's NOTIFY of revocations.
   */
  constructor(
    private readonly db: Kysely<Database>,
    private readonly afterAppendAudit?: (db: Kysely<Database>, event: AuditEvent) => Promise<void>,
  ) {}

  /**
   * Runs a hot statement without rebuilding and recompiling Kysely's query tree each time, which
   * costs more than SQLite executing it: the SQL compiled the first time is reused with the new
   * parameters. Only when the compiled parameters are exactly `params` in order, so the cached
   * SQL is known to take them in that order; otherwise the query simply runs as built.
   */
  async #hot<R>(name: string, build: () => Compilable<R>, params: unknown[]): Promise<QueryResult<R>> {
    const adapter = this.db.getExecutor().adapter;
    let byName = HOT_SQL.get(adapter);
    if (!byName) {
      byName = new Map();
      HOT_SQL.set(adapter, byName);
    }
    const sql = byName.get(name);
    if (sql !== undefined) return this.db.executeQuery<R>(CompiledQuery.raw(sql, params));
    const compiled = build().compile();
    const sameParams =
      compiled.parameters.length === params.length && compiled.parameters.every((p, i) => p === params[i]);
    if (sameParams) byName.set(name, compiled.sql);
    return this.db.executeQuery<R>(compiled);
  }

  insertCertificate(rec: CertificateRecord): Promise<void> {
    return guard(`could not insert certificate ${rec.serial}`, async () => {
      const row = certificateToRow(rec);
      await this.#hot(
        "insertCertificate",
        () => this.db.insertInto("certificates").values(row),
        Object.values(row),
      );
    });
  }

  updateCertificate(serial: string, patch: CertificatePatch): Promise<void> {
    return guard(`could not update certificate ${serial}`, async () => {
      const row = patchToRow(patch);
      const found =
        Object.keys(row).length === 0
          ? (await this.getCertificate(serial)) !== undefined
          : (
              await this.db
                .updateTable("certificates")
                .set(row)
                .where("serial", "=", serial)
                .executeTakeFirst()
            ).numUpdatedRows > 0n;
      if (!found) throw new MtlsError("E_NOT_FOUND", `no certificate with serial ${serial}`);
    });
  }

  getCertificate(serial: string): Promise<CertificateRecord | undefined> {
    return guard(`could not read certificate ${serial}`, async () => {
      const row = await this.db
        .selectFrom("certificates")
        .selectAll()
        .where("serial", "=", serial)
        .executeTakeFirst();
      return row === undefined ? undefined : rowToCertificate(row);
    });
  }

  /** Matching certificates, oldest first (createdAt, then serial). An empty array filter matches nothing. */
  findCertificates(filter: CertificateFilter = {}): Promise<CertificateRecord[]> {
    return guard("could not search certificates", async () => {
      const statuses = asList(filter.status);
      const profiles = asList(filter.profile);
      if (statuses?.length === 0 || profiles?.length === 0) return [];
      let query = this.db.selectFrom("certificates").selectAll();
      if (filter.name !== undefined) query = query.where("name", "=", filter.name);
      if (statuses !== undefined) query = query.where("status", "in", statuses);
      if (profiles !== undefined) query = query.where("profile", "in", profiles);
      if (filter.expiringBefore !== undefined) {
        query = query.where("not_after", "<=", toIso(filter.expiringBefore, "expiringBefore"));
      }
      if (filter.issuerSerial !== undefined) query = query.where("issuer_serial", "=", filter.issuerSerial);
      const rows = await query.orderBy("created_at").orderBy("serial").execute();
      return rows.map(rowToCertificate);
    });
  }

  /**
   * Three columns per row and no ORDER BY: the CRL of a large CA reads 100,000 rows in ~0.1 s.
   * `names` adds the name column (the revocation feed's snapshot), still without PEM or SANs.
   */
  listRevoked(
    issuerSerial: string,
    notAfterAfter: Date,
    opts: { names?: boolean } = {},
  ): Promise<RevokedEntry[]> {
    return guard(`could not list the revoked certificates of ${issuerSerial}`, async () => {
      const after = toIso(notAfterAfter, "notAfterAfter");
      const names = opts.names === true;
      const columns: ("serial" | "revoked_at" | "revocation_reason" | "name")[] = [
        "serial",
        "revoked_at",
        "revocation_reason",
        ...(names ? (["name"] as const) : []),
      ];
      const { rows } = await this.#hot(
        names ? "listRevokedNamed" : "listRevoked",
        () =>
          this.db
            .selectFrom("certificates")
            .select(columns)
            .where("issuer_serial", "=", issuerSerial)
            .where("status", "=", "revoked")
            .where("not_after", ">", after),
        [issuerSerial, "revoked", after],
      );
      const out: RevokedEntry[] = new Array(rows.length);
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i] as {
          serial: string;
          revoked_at: string | null;
          revocation_reason: string | null;
          name?: string;
        };
        out[i] = {
          serial: r.serial,
          revokedAt: r.revoked_at === null ? null : new Date(r.revoked_at),
          reason: r.revocation_reason as RevocationReason | null,
          ...(names ? { name: r.name as string } : {}),
        };
      }
      return out;
    });
  }

  /**
   * Links the event to the newest one. Reading the last hash and inserting happen in the caller's
   * transaction; on SQLite that transaction began with BEGIN IMMEDIATE, so it already holds the
   * write lock and appends from any process queue up. Whatever the dialect, `seq` is the primary
   * key, so two appends that read the same last event cannot both commit: the chain never forks.
   * PostgreSQL (postgres.ts): each transaction begins by taking an advisory writer lock and runs
   * at READ COMMITTED, so the last event is read after every earlier append committed and writers
   * of all nodes queue, as BEGIN IMMEDIATE makes them do on SQLite. (Under SERIALIZABLE the
   * snapshot would be frozen before the lock and concurrent appends would fail instead of waiting.)
   */
  appendAudit(input: AuditEventInput): Promise<AuditEvent> {
    return guard("could not append to the audit log", async () => {
      const at = toIso(input.at, "at");
      const detailsJson = canonicalJson(input.details ?? {});
      const [last] = (
        await this.#hot(
          "lastAuditEvent",
          () => this.db.selectFrom("audit_events").select(["seq", "hash"]).orderBy("seq", "desc").limit(1),
          [1],
        )
      ).rows;
      const event: HashedAuditEvent = {
        seq: last === undefined ? 1 : Number(last.seq) + 1,
        at: new Date(at),
        actor: input.actor,
        action: input.action,
        subject: input.subject ?? null,
        details: JSON.parse(detailsJson) as Record<string, unknown>,
      };
      const prevHash = last?.hash ?? GENESIS_HASH;
      const hash = computeAuditHash(prevHash, event);
      const row = {
        seq: event.seq,
        at,
        actor: event.actor,
        action: event.action,
        subject: event.subject,
        details: detailsJson,
        prev_hash: prevHash,
        hash,
      };
      await this.#hot(
        "insertAuditEvent",
        () => this.db.insertInto("audit_events").values(row),
        Object.values(row),
      );
      const appended: AuditEvent = { ...event, prevHash, hash };
      await this.afterAppendAudit?.(this.db, appended);
      return appended;
    });
  }

  /** One atomic UPSERT ... RETURNING (SQLite >= 3.35, PostgreSQL >= 9.5). */
  nextCounter(name: string): Promise<number> {
    return guard(`could not advance counter ${name}`, async () => {
      const row = await this.db
        .insertInto("counters")
        .values({ name, value: 1 })
        .onConflict((oc) =>
          oc.column("name").doUpdateSet((eb) => ({ value: eb(eb.ref("counters.value"), "+", 1) })),
        )
        .returning("value")
        .executeTakeFirstOrThrow();
      return Number(row.value);
    });
  }

  getSetting(key: string): Promise<string | undefined> {
    return guard(`could not read setting ${key}`, async () => {
      const row = await this.db
        .selectFrom("settings")
        .select("value")
        .where("key", "=", key)
        .executeTakeFirst();
      return row?.value;
    });
  }

  setSetting(key: string, value: string): Promise<void> {
    return guard(`could not write setting ${key}`, async () => {
      await this.db
        .insertInto("settings")
        .values({ key, value })
        .onConflict((oc) => oc.column("key").doUpdateSet((eb) => ({ value: eb.ref("excluded.value") })))
        .execute();
    });
  }

  insertToken(rec: EnrollmentTokenRecord): Promise<void> {
    return guard(`could not insert token ${rec.id}`, async () => {
      await this.db.insertInto("enrollment_tokens").values(tokenToRow(rec)).execute();
    });
  }

  getToken(id: string): Promise<EnrollmentTokenRecord | undefined> {
    return guard(`could not read token ${id}`, async () => {
      const row = await this.db
        .selectFrom("enrollment_tokens")
        .selectAll()
        .where("id", "=", id)
        .executeTakeFirst();
      return row === undefined ? undefined : rowToToken(row);
    });
  }

  /**
   * One conditional UPDATE: of two racing calls only one changes the row. On SQLite the second
   * transaction waits for the first (BEGIN IMMEDIATE) and then sees used_at set; on PostgreSQL
   * (READ COMMITTED) the second UPDATE waits for the first's row lock and re-checks the WHERE once
   * it commits, inside or outside a transaction. Neither lets both win.
   */
  markTokenUsed(id: string, at: Date, serial: string): Promise<boolean> {
    return guard(`could not mark token ${id} used`, async () => {
      const result = await this.db
        .updateTable("enrollment_tokens")
        .set({ used_at: toIso(at, "usedAt"), used_by_serial: serial })
        .where("id", "=", id)
        .where("used_at", "is", null)
        .executeTakeFirst();
      return result.numUpdatedRows > 0n;
    });
  }

  findTokens(filter: TokenFilter = {}): Promise<EnrollmentTokenRecord[]> {
    return guard("could not search tokens", async () => {
      let query = this.db.selectFrom("enrollment_tokens").selectAll();
      if (filter.name !== undefined) query = query.where("name", "=", filter.name);
      if (filter.used === true) query = query.where("used_at", "is not", null);
      if (filter.used === false) query = query.where("used_at", "is", null);
      const rows = await query.orderBy("created_at").orderBy("id").execute();
      return rows.map(rowToToken);
    });
  }
}
