import { AsyncLocalStorage, AsyncResource } from "node:async_hooks";
import { CompiledQuery, type IsolationLevel, type Kysely, type Transaction } from "kysely";
import { MtlsError } from "../errors.js";
import { verifyChainAsync } from "./audit-chain.js";
import { certificateStats, listAuditPage, searchCertificates } from "./console-queries.js";
import { KyselyStoreTx } from "./kysely-tx.js";
import { type CertificatePatch, rowToAuditEvent } from "./rows.js";
import type { Database } from "./schema.js";
import { guard, storeError } from "./store-error.js";
import type {
  AuditEvent,
  AuditEventInput,
  AuditPageQuery,
  AuditVerification,
  CertificateFilter,
  CertificateRecord,
  CertificateSearch,
  CertificateStats,
  CertificateSummary,
  EnrollmentTokenRecord,
  RevokedEntry,
  Store,
  StoreTx,
  TokenFilter,
} from "./types.js";

export interface KyselyStoreOptions {
  /** Default "serializable" (SQLite ignores it: its transactions are always serializable). */
  isolationLevel?: IsolationLevel;
  /** Runs first in every transaction, e.g. the PostgreSQL store's advisory writer lock (see appendAudit). */
  onBegin?: (trx: Transaction<Database>) => Promise<void>;
  /** Events read per query by verifyAudit (default 1000). */
  auditPageSize?: number;
  /**
   * Runs after every appended audit event inside its transaction (before the commit), e.g. the
   * PostgreSQL store's `pg_notify` of a revocation, which the server then delivers only if and when
   * the transaction commits.
   */
  afterAppendAudit?: (trx: Kysely<Database>, event: AuditEvent) => Promise<void>;
  /**
   * Group commit, for a database with one connection (SQLite): transactions that queue while one
   * runs share the next transaction and its one commit (one fsync at synchronous=FULL). Each
   * member runs alone in a SAVEPOINT, so one that throws is rolled back without the others; every
   * caller's promise settles only after the shared COMMIT returned, i.e. once its writes are as
   * durable as a transaction of its own would be. Default false: one transaction per call.
   */
  groupCommit?: boolean;
}

/** Most members in one shared transaction, so one commit's latency and size stay bounded. */
export const MAX_GROUP = 256;

interface Member {
  fn: (tx: StoreTx) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/** Thrown out of a shared transaction to roll it back whole; never reaches a caller. */
const GROUP_ABORT = new Error("roll back the shared transaction");

const SAVEPOINT = CompiledQuery.raw("savepoint mtls_member");
const RELEASE = CompiledQuery.raw("release savepoint mtls_member");
const ROLLBACK_TO = CompiledQuery.raw("rollback to savepoint mtls_member");

/**
 * The Store over any Kysely<Database> whose schema is migrated (migrations.ts): the dialect decides
 * SQLite or PostgreSQL, nothing here does. Each method outside `transaction()` runs on its own.
 * Inside `transaction(fn)` use only the `tx` given to `fn`: calling the store itself there is
 * refused with E_STORE, because on SQLite's single connection it would wait forever for the
 * transaction it is part of, and on PostgreSQL it would silently run outside it.
 */
export class KyselyStore implements Store {
  readonly #db: Kysely<Database>;
  readonly #ops: KyselyStoreTx;
  readonly #isolationLevel: IsolationLevel;
  readonly #onBegin: KyselyStoreOptions["onBegin"];
  readonly #pageSize: number;
  readonly #insideTransaction = new AsyncLocalStorage<true>();
  readonly #groupCommit: boolean;
  readonly #afterAppendAudit: KyselyStoreOptions["afterAppendAudit"];
  #queue: Member[] = [];
  #draining = false;
  #closed = false;

  constructor(db: Kysely<Database>, options: KyselyStoreOptions = {}) {
    this.#db = db;
    this.#ops = new KyselyStoreTx(db);
    this.#isolationLevel = options.isolationLevel ?? "serializable";
    this.#onBegin = options.onBegin;
    this.#pageSize = options.auditPageSize ?? 1000;
    this.#groupCommit = options.groupCommit ?? false;
    this.#afterAppendAudit = options.afterAppendAudit;
  }

  /** The underlying Kysely instance, for dialect-specific tooling and tests (e.g. tampering with rows). */
  get kysely(): Kysely<Database> {
    return this.#db;
  }

  /**
   * Runs `fn` on the tables themselves in one transaction, for bulk tools (backup, restore,
   * migrate: transfer.ts). `snapshot: true` reads one consistent snapshot without holding up
   * writers (REPEATABLE READ on PostgreSQL); otherwise the transaction begins like transaction()'s
   * (on PostgreSQL after the writer lock), so no other transaction of any node interleaves.
   */
  async tablesTransaction<T>(
    fn: (trx: Transaction<Database>) => Promise<T>,
    opts: { snapshot?: boolean } = {},
  ): Promise<T> {
    this.#assertOutsideTransaction("tablesTransaction");
    let thrownByFn: { error: unknown } | undefined;
    try {
      return await this.#db
        .transaction()
        .setIsolationLevel(opts.snapshot ? "repeatable read" : this.#isolationLevel)
        .execute(async (trx) => {
          if (!opts.snapshot) await this.#onBegin?.(trx);
          try {
            return await fn(trx);
          } catch (error) {
            thrownByFn = { error };
            throw error;
          }
        });
    } catch (err) {
      if (thrownByFn !== undefined && err === thrownByFn.error) throw err;
      if (err instanceof MtlsError) throw err;
      throw storeError("transaction failed", err);
    }
  }

  async transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    this.#assertOutsideTransaction("transaction");
    if (this.#groupCommit) {
      return new Promise<T>((resolve, reject) => {
        // fn runs later, from whichever call drains the queue: in its caller's async context, marked
        // as inside a transaction.
        const bound = AsyncResource.bind((tx: StoreTx) => this.#insideTransaction.run(true, () => fn(tx)));
        this.#queue.push({ fn: bound, resolve: resolve as Member["resolve"], reject });
        if (!this.#draining) void this.#drain();
      });
    }
    let thrownByFn: { error: unknown } | undefined;
    try {
      return await this.#db
        .transaction()
        .setIsolationLevel(this.#isolationLevel)
        .execute(async (trx) => {
          await this.#onBegin?.(trx);
          return this.#insideTransaction.run(true, async () => {
            try {
              return await fn(new KyselyStoreTx(trx, this.#afterAppendAudit));
            } catch (error) {
              thrownByFn = { error };
              throw error;
            }
          });
        });
    } catch (err) {
      // fn's own error comes back unchanged (it was rolled back); begin/commit/rollback failures are E_STORE.
      if (thrownByFn !== undefined && err === thrownByFn.error) throw err;
      if (err instanceof MtlsError) throw err;
      throw storeError("transaction failed", err);
    }
  }

  /**
   * Runs queued transactions until the queue is empty, as few database transactions as possible.
   * The first member of a transaction runs without a savepoint (when it throws, the transaction
   * holds nothing else and is rolled back whole: one caller at a time costs what it always did);
   * members that join while it is open each run inside a savepoint. New calls keep joining the open
   * transaction until none is waiting (or MAX_GROUP ran), then it commits and their promises settle.
   */
  async #drain(): Promise<void> {
    this.#draining = true;
    try {
      while (this.#queue.length > 0) await this.#runGroup();
    } finally {
      this.#draining = false;
    }
  }

  async #runGroup(): Promise<void> {
    const done: { member: Member; value: unknown }[] = [];
    // The member taken from the queue and not yet settled or done, and the error its fn threw.
    let current: { member: Member; error?: unknown } | undefined;
    let taken = 0;
    try {
      await this.#db
        .transaction()
        .setIsolationLevel(this.#isolationLevel)
        .execute(async (trx) => {
          await this.#onBegin?.(trx);
          const tx = new KyselyStoreTx(trx, this.#afterAppendAudit);
          while (taken < MAX_GROUP && this.#queue.length > 0) {
            const member = this.#queue.shift() as Member;
            const first = taken++ === 0;
            const taking: { member: Member; error?: unknown } = { member };
            current = taking;
            if (!first) await trx.executeQuery(SAVEPOINT);
            try {
              done.push({ member, value: await member.fn(tx) });
              current = undefined;
            } catch (error) {
              taking.error = error;
              // The transaction holds nothing but this member's writes: roll it back whole.
              if (first) throw GROUP_ABORT;
              await trx.executeQuery(ROLLBACK_TO);
              current = undefined;
              member.reject(error);
            }
            if (!first) await trx.executeQuery(RELEASE);
          }
        });
    } catch (err) {
      // Rolled back whole: nothing any member of this transaction wrote is stored. fn's own error
      // comes back unchanged; a failed begin, savepoint, commit or rollback is E_STORE.
      const failure = err instanceof MtlsError ? err : storeError("transaction failed", err);
      const c = current as { member: Member; error?: unknown } | undefined;
      if (c) c.member.reject(err === GROUP_ABORT ? c.error : failure);
      // Nothing was taken (BEGIN failed): the first caller gets the error, as it would have alone,
      // and the next one tries again; the queue always shrinks.
      else if (taken === 0) this.#queue.shift()?.reject(failure);
      for (const { member } of done) member.reject(failure);
      return;
    }
    for (const { member, value } of done) member.resolve(value);
  }

  async insertCertificate(rec: CertificateRecord): Promise<void> {
    this.#assertOutsideTransaction("insertCertificate");
    return this.#ops.insertCertificate(rec);
  }

  async updateCertificate(serial: string, patch: CertificatePatch): Promise<void> {
    this.#assertOutsideTransaction("updateCertificate");
    return this.#ops.updateCertificate(serial, patch);
  }

  async getCertificate(serial: string): Promise<CertificateRecord | undefined> {
    this.#assertOutsideTransaction("getCertificate");
    return this.#ops.getCertificate(serial);
  }

  async findCertificates(filter?: CertificateFilter): Promise<CertificateRecord[]> {
    this.#assertOutsideTransaction("findCertificates");
    return this.#ops.findCertificates(filter);
  }

  async listRevoked(
    issuerSerial: string,
    notAfterAfter: Date,
    opts?: { names?: boolean },
  ): Promise<RevokedEntry[]> {
    this.#assertOutsideTransaction("listRevoked");
    return this.#ops.listRevoked(issuerSerial, notAfterAfter, opts);
  }

  /** Reads the last hash and inserts in one transaction of its own. */
  async appendAudit(event: AuditEventInput): Promise<AuditEvent> {
    return this.transaction((tx) => tx.appendAudit(event));
  }

  async nextCounter(name: string): Promise<number> {
    this.#assertOutsideTransaction("nextCounter");
    return this.#ops.nextCounter(name);
  }

  async getSetting(key: string): Promise<string | undefined> {
    this.#assertOutsideTransaction("getSetting");
    return this.#ops.getSetting(key);
  }

  async setSetting(key: string, value: string): Promise<void> {
    this.#assertOutsideTransaction("setSetting");
    return this.#ops.setSetting(key, value);
  }

  async insertToken(rec: EnrollmentTokenRecord): Promise<void> {
    this.#assertOutsideTransaction("insertToken");
    return this.#ops.insertToken(rec);
  }

  async getToken(id: string): Promise<EnrollmentTokenRecord | undefined> {
    this.#assertOutsideTransaction("getToken");
    return this.#ops.getToken(id);
  }

  async markTokenUsed(id: string, at: Date, serial: string): Promise<boolean> {
    this.#assertOutsideTransaction("markTokenUsed");
    return this.#ops.markTokenUsed(id, at, serial);
  }

  async findTokens(filter?: TokenFilter): Promise<EnrollmentTokenRecord[]> {
    this.#assertOutsideTransaction("findTokens");
    return this.#ops.findTokens(filter);
  }

  /**
   * Events with seq > afterSeq (default 0), in seq order; all of them unless `limit` is given; with
   * `actions`, only events of those actions (an empty list matches nothing).
   */
  async listAudit(
    opts: { afterSeq?: number; limit?: number; actions?: string[] } = {},
  ): Promise<AuditEvent[]> {
    this.#assertOutsideTransaction("listAudit");
    const { afterSeq = 0, limit, actions } = opts;
    if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) {
      throw new MtlsError("E_BAD_INPUT", `audit list limit must be a positive integer, not ${limit}`);
    }
    if (actions?.length === 0) return [];
    return guard("could not read the audit log", async () => {
      let query = this.#db.selectFrom("audit_events").selectAll().where("seq", ">", afterSeq);
      if (actions !== undefined) query = query.where("action", "in", actions);
      query = query.orderBy("seq");
      if (limit !== undefined) query = query.limit(limit);
      return (await query.execute()).map(rowToAuditEvent);
    });
  }

  /** max(seq): one probe of the primary key's index. */
  async lastAuditSeq(): Promise<number> {
    this.#assertOutsideTransaction("lastAuditSeq");
    return guard("could not read the audit log", async () => {
      const row = await this.#db
        .selectFrom("audit_events")
        .select((eb) => eb.fn.max("seq").as("seq"))
        .executeTakeFirst();
      return row?.seq == null ? 0 : Number(row.seq);
    });
  }

  async searchCertificates(q: CertificateSearch): Promise<{ rows: CertificateSummary[]; total: number }> {
    this.#assertOutsideTransaction("searchCertificates");
    return searchCertificates(this.#db, q);
  }

  async certificateStats(now: Date, days?: number): Promise<CertificateStats> {
    this.#assertOutsideTransaction("certificateStats");
    return certificateStats(this.#db, now, days);
  }

  async listAuditPage(q: AuditPageQuery): Promise<AuditEvent[]> {
    this.#assertOutsideTransaction("listAuditPage");
    return listAuditPage(this.#db, q);
  }

  /** Walks the whole chain a page at a time, so memory use does not grow with the log. */
  async verifyAudit(): Promise<AuditVerification> {
    this.#assertOutsideTransaction("verifyAudit");
    return verifyChainAsync(this.#auditPages());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await guard("could not close the database", () => this.#db.destroy());
  }

  async *#auditPages(): AsyncGenerator<AuditEvent> {
    let afterSeq = 0;
    for (;;) {
      const page = await this.listAudit({ afterSeq, limit: this.#pageSize });
      yield* page;
      const last = page.at(-1);
      if (last === undefined || page.length < this.#pageSize) return;
      afterSeq = last.seq;
    }
  }

  #assertOutsideTransaction(method: string): void {
    if (this.#insideTransaction.getStore()) {
      throw new MtlsError(
        "E_STORE",
        `store.${method}() called inside store.transaction(): use the transaction's tx argument instead`,
      );
    }
  }
}
