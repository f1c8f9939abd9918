import { AsyncLocalStorage } from "node:async_hooks";
import type { IsolationLevel, Kysely, Transaction } from "kysely";
import { MtlsError } from "../errors.js";
import { verifyChainAsync } from "./audit-chain.js";
import { KyselyStoreTx } from "./kysely-tx.js";
import { type CertificatePatch, rowToAuditEvent } from "./rows.js";
import type { Database } from "./schema.js";
import { guard, storeError } from "./store-error.js";
import type {
  AuditEvent,
  AuditEventInput,
  AuditVerification,
  CertificateFilter,
  CertificateRecord,
  EnrollmentTokenRecord,
  RevokedEntry,
  Store,
  StoreTx,
  TokenFilter,
} from "./types.js";

export interface KyselyStoreOptions {
  /** Default "serializable" (SQLite ignores it: its transactions are always serializable). */
  isolationLevel?: IsolationLevel;
  /** Runs first in every transaction, e.g. PostgreSQL's `LOCK TABLE` to queue writers (see appendAudit). */
  onBegin?: (trx: Transaction<Database>) => Promise<void>;
  /** Events read per query by verifyAudit (default 1000). */
  auditPageSize?: number;
}

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
  #closed = false;

  constructor(db: Kysely<Database>, options: KyselyStoreOptions = {}) {
    this.#db = db;
    this.#ops = new KyselyStoreTx(db);
    this.#isolationLevel = options.isolationLevel ?? "serializable";
    this.#onBegin = options.onBegin;
    this.#pageSize = options.auditPageSize ?? 1000;
  }

  /** The underlying Kysely instance, for dialect-specific tooling and tests (e.g. tampering with rows). */
  get kysely(): Kysely<Database> {
    return this.#db;
  }

  async transaction<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    this.#assertOutsideTransaction("transaction");
    let thrownByFn: { error: unknown } | undefined;
    try {
      return await this.#db
        .transaction()
        .setIsolationLevel(this.#isolationLevel)
        .execute(async (trx) => {
          await this.#onBegin?.(trx);
          return this.#insideTransaction.run(true, async () => {
            try {
              return await fn(new KyselyStoreTx(trx));
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

  async listRevoked(issuerSerial: string, notAfterAfter: Date): Promise<RevokedEntry[]> {
    this.#assertOutsideTransaction("listRevoked");
    return this.#ops.listRevoked(issuerSerial, notAfterAfter);
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

  /** Events with seq > afterSeq (default 0), in seq order; all of them unless `limit` is given. */
  async listAudit(opts: { afterSeq?: number; limit?: number } = {}): Promise<AuditEvent[]> {
    this.#assertOutsideTransaction("listAudit");
    const { afterSeq = 0, limit } = opts;
    if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) {
      throw new MtlsError("E_BAD_INPUT", `audit list limit must be a positive integer, not ${limit}`);
    }
    return guard("could not read the audit log", async () => {
      let query = this.#db.selectFrom("audit_events").selectAll().where("seq", ">", afterSeq).orderBy("seq");
      if (limit !== undefined) query = query.limit(limit);
      return (await query.execute()).map(rowToAuditEvent);
    });
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
