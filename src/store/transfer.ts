import { createHash } from "node:crypto";
import { createReadStream, existsSync, renameSync, rmSync } from "node:fs";
import { open } from "node:fs/promises";
import { createInterface } from "node:readline";
import type { Transaction } from "kysely";
import { MtlsError } from "../errors.js";
import { computeAuditHash, GENESIS_HASH } from "./audit-chain.js";
import { KyselyStore } from "./kysely-store.js";
import { migrationProvider } from "./migrations.js";
import { rowToAuditEvent } from "./rows.js";
import type { Database } from "./schema.js";
import type { AuditVerification, Store } from "./types.js";

/**
 * Copying a whole store, row for row: SQLite to PostgreSQL (`mtls store migrate`), to a file and
 * back (`mtls store backup` / `restore`). Rows travel exactly as stored (times as ISO text, JSON as
 * text, the audit log with its hashes), so the copy's hash chain is the original's and verifies.
 *
 * The backup file is JSON lines: a header, one line per row, and a trailer with the row counts and
 * the SHA-256 of every byte before it:
 *   {"format":"mtls-store-backup","version":1,"createdAt":"…","migrations":["0001_initial",…]}
 *   {"table":"certificates","row":{"serial":"…",…}}
 *   {"end":true,"counts":{"certificates":2,…},"sha256":"…"}
 */

export const BACKUP_FORMAT = "mtls-store-backup";
export const BACKUP_VERSION = 1;

/** The tables copied, in this order (the order also suits a future foreign key to certificates). */
export const TABLES = ["settings", "counters", "certificates", "enrollment_tokens", "audit_events"] as const;
export type TableName = (typeof TABLES)[number];

/** Each table's primary key: rows are read in its order, a page at a time. */
const KEY: Record<TableName, string> = {
  settings: "key",
  counters: "name",
  certificates: "serial",
  enrollment_tokens: "id",
  audit_events: "seq",
};

/** Columns that are numbers, whatever the driver returns (node-postgres gives bigint as text). */
const NUMERIC: Partial<Record<TableName, string[]>> = {
  counters: ["value"],
  enrollment_tokens: ["ttl_ms"],
  audit_events: ["seq"],
};

type Row = Record<string, unknown>;
export interface TableRow {
  table: TableName;
  row: Row;
}
export type TableCounts = Record<TableName, number>;

export interface TransferResult {
  counts: TableCounts;
  /** The imported audit log's verification, read back from the target after the commit. */
  audit: AuditVerification;
}

const PAGE = 1000;
/** Rows per INSERT: 19 columns × 200 stays far below SQLite's and PostgreSQL's parameter limits. */
const BATCH = 200;

const zeroCounts = (): TableCounts => Object.fromEntries(TABLES.map((t) => [t, 0])) as TableCounts;

function kyselyStore(store: Store, what: string): KyselyStore {
  if (!(store instanceof KyselyStore)) {
    throw new MtlsError("E_STORE", `${what}: only the SQLite and PostgreSQL stores can be copied`);
  }
  return store;
}

function normalise(table: TableName, row: Row): Row {
  const out: Row = { ...row };
  for (const column of NUMERIC[table] ?? []) {
    if (out[column] !== null && out[column] !== undefined) out[column] = Number(out[column]);
  }
  return out;
}

/**
 * Every row of every table, from one consistent snapshot of `store` (writers elsewhere are not
 * held up), read a page at a time. `sink` receives them in TABLES order, each table in key order.
 */
export async function exportRows(
  store: Store,
  sink: (item: TableRow) => Promise<void> | void,
): Promise<TableCounts> {
  const counts = zeroCounts();
  await kyselyStore(store, "cannot export").tablesTransaction(
    async (trx) => {
      for (const table of TABLES) {
        const key = KEY[table];
        let after: unknown;
        for (;;) {
          // biome-ignore lint/suspicious/noExplicitAny: one loop over five tables of different row types
          let query = (trx as Transaction<any>).selectFrom(table).selectAll().orderBy(key).limit(PAGE);
          if (after !== undefined) query = query.where(key, ">", after);
          const rows = (await query.execute()) as Row[];
          for (const row of rows) {
            await sink({ table, row: normalise(table, row) });
            counts[table] += 1;
          }
          if (rows.length < PAGE) break;
          after = (rows.at(-1) as Row)[key];
        }
      }
    },
    { snapshot: true },
  );
  return counts;
}

async function isEmpty(trx: Transaction<Database>): Promise<TableName | undefined> {
  for (const table of TABLES) {
    // biome-ignore lint/suspicious/noExplicitAny: see exportRows
    const row = await (trx as Transaction<any>)
      .selectFrom(table)
      .select(KEY[table])
      .limit(1)
      .executeTakeFirst();
    if (row !== undefined) return table;
  }
  return undefined;
}

/**
 * Writes rows into `target` in one transaction: all of them or, when anything fails (including the
 * source, e.g. a backup whose checksum does not match), none. The target must be empty unless
 * `force`, which first deletes every row it holds. The audit events must form one unbroken chain
 * from the genesis hash (E_AUDIT_TAMPERED otherwise): a copy never carries a broken log forward
 * unnoticed.
 */
export async function importRows(
  target: Store,
  rows: AsyncIterable<TableRow>,
  opts: { force?: boolean; where?: string } = {},
): Promise<TransferResult> {
  const where = opts.where ?? "the target store";
  const store = kyselyStore(target, "cannot import");
  const counts = zeroCounts();
  await store.tablesTransaction(async (trx) => {
    const occupied = await isEmpty(trx);
    if (occupied !== undefined && !opts.force) {
      throw new MtlsError(
        "E_EXISTS",
        `${where} is not empty (table ${occupied} has rows); use --force to replace everything in it`,
      );
    }
    if (occupied !== undefined) {
      // biome-ignore lint/suspicious/noExplicitAny: see exportRows
      for (const table of TABLES) await (trx as Transaction<any>).deleteFrom(table).execute();
    }
    let prevHash = GENESIS_HASH;
    let batch: Row[] = [];
    let batchTable: TableName | undefined;
    const flush = async () => {
      if (batchTable !== undefined && batch.length > 0) {
        // biome-ignore lint/suspicious/noExplicitAny: see exportRows
        await (trx as Transaction<any>).insertInto(batchTable).values(batch).execute();
      }
      batch = [];
    };
    for await (const { table, row } of rows) {
      if (!TABLES.includes(table))
        throw new MtlsError("E_BAD_INPUT", `unknown table "${table}" in the input`);
      if (table === "audit_events") {
        const event = rowToAuditEvent(row as never);
        const expected = counts.audit_events + 1;
        if (
          event.seq !== expected ||
          event.prevHash !== prevHash ||
          computeAuditHash(prevHash, event) !== event.hash
        ) {
          throw new MtlsError(
            "E_AUDIT_TAMPERED",
            `audit event ${event.seq} does not verify (expected event ${expected} linked to the one before); nothing was imported`,
          );
        }
        prevHash = event.hash;
      }
      if (table !== batchTable || batch.length >= BATCH) {
        await flush();
        batchTable = table;
      }
      batch.push(row);
      counts[table] += 1;
    }
    await flush();
  });
  return { counts, audit: await target.verifyAudit() };
}

/** Rows in flight between the source's snapshot and the target's transaction (copyStore). */
const COPY_QUEUE = 2000;

/** Thrown into the source's read when the target stopped taking rows; never reaches a caller. */
const STOP = new Error("the copy stopped");

/**
 * Copies everything from `source` into `target` (empty unless `force`). The source is read from one
 * snapshot while the target writes in one transaction, at most COPY_QUEUE rows apart, so memory
 * stays bounded whatever the size of the store.
 */
export async function copyStore(
  source: Store,
  target: Store,
  opts: { force?: boolean; where?: string } = {},
): Promise<TransferResult> {
  const queue: TableRow[] = [];
  let finished = false;
  let stopped = false;
  let failed: { error: unknown } | undefined;
  let wakeReader: (() => void) | undefined;
  let wakeWriter: (() => void) | undefined;
  const wake = (which: "reader" | "writer") => {
    const fn = which === "reader" ? wakeReader : wakeWriter;
    if (which === "reader") wakeReader = undefined;
    else wakeWriter = undefined;
    fn?.();
  };
  const reading = exportRows(source, async (item) => {
    if (stopped) throw STOP;
    queue.push(item);
    wake("writer");
    while (queue.length >= COPY_QUEUE && !stopped) {
      await new Promise<void>((resolve) => {
        wakeReader = resolve;
      });
    }
    if (stopped) throw STOP;
  }).then(
    () => {
      finished = true;
      wake("writer");
    },
    (error: unknown) => {
      failed = { error };
      wake("writer");
    },
  );
  async function* rows(): AsyncGenerator<TableRow> {
    for (;;) {
      const item = queue.shift();
      if (item !== undefined) {
        wake("reader");
        yield item;
        continue;
      }
      if (failed !== undefined) throw failed.error;
      if (finished) return;
      await new Promise<void>((resolve) => {
        wakeWriter = resolve;
      });
    }
  }
  try {
    return await importRows(target, rows(), opts);
  } finally {
    stopped = true;
    wake("reader");
    await reading;
  }
}

const migrationNames = async () => Object.keys(await migrationProvider.getMigrations()).sort();

/**
 * Writes a backup of `store` to `file`: through a temporary file renamed into place, owner-only
 * (0600), so there is never a half-written backup under that name. Refuses to replace an existing
 * file unless `force`.
 */
export async function backupStore(
  store: Store,
  file: string,
  opts: { force?: boolean; now?: Date } = {},
): Promise<TableCounts> {
  if (existsSync(file) && !opts.force) {
    throw new MtlsError("E_EXISTS", `${file} already exists (use --force to replace it)`);
  }
  const temp = `${file}.${process.pid}.tmp`;
  const hash = createHash("sha256");
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(temp, "wx", 0o600);
    const fh = handle;
    let buffer = "";
    const write = async (obj: unknown, hashed = true) => {
      const line = `${JSON.stringify(obj)}\n`;
      if (hashed) hash.update(line);
      buffer += line;
      if (buffer.length >= 1 << 20) {
        await fh.write(buffer);
        buffer = "";
      }
    };
    await write({
      format: BACKUP_FORMAT,
      version: BACKUP_VERSION,
      createdAt: (opts.now ?? new Date()).toISOString(),
      migrations: await migrationNames(),
    });
    const counts = await exportRows(store, (item) => write(item));
    await write({ end: true, counts, sha256: hash.digest("hex") }, false);
    await fh.write(buffer);
    await fh.sync();
    await fh.close();
    handle = undefined;
    renameSync(temp, file);
    return counts;
  } catch (err) {
    await handle?.close().catch(() => {});
    rmSync(temp, { force: true });
    if (err instanceof MtlsError) throw err;
    throw new MtlsError("E_IO", `could not write the backup ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * The rows of a backup file, checked as they stream: the header must be ours, and the trailer's
 * counts and SHA-256 must match what came before it. Any mismatch throws (E_BAD_INPUT) before the
 * last row is handed over is committed, so importRows rolls everything back.
 */
export async function* readBackup(file: string): AsyncGenerator<TableRow> {
  if (!existsSync(file)) throw new MtlsError("E_NOT_FOUND", `no backup file ${file}`);
  const bad = (why: string) => new MtlsError("E_BAD_INPUT", `${file} is not a usable mtls backup: ${why}`);
  const hash = createHash("sha256");
  const counts = zeroCounts();
  const known = new Set(await migrationNames());
  let header = false;
  let trailer: { counts?: unknown; sha256?: unknown } | undefined;
  let lineNo = 0;
  const lines = createInterface({ input: createReadStream(file, { encoding: "utf8" }), crlfDelay: Infinity });
  for await (const line of lines) {
    lineNo += 1;
    if (trailer !== undefined) throw bad(`line ${lineNo} follows the end marker`);
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw bad(`line ${lineNo} is not JSON`);
    }
    if (!header) {
      if (obj.format !== BACKUP_FORMAT) throw bad("no mtls backup header on line 1");
      if (obj.version !== BACKUP_VERSION)
        throw bad(`format version ${String(obj.version)} is not ${BACKUP_VERSION}`);
      const unknown = (Array.isArray(obj.migrations) ? obj.migrations : []).filter(
        (m) => !known.has(String(m)),
      );
      if (unknown.length > 0) {
        throw bad(`it was made by a newer mtls (schema ${unknown.join(", ")}); restore it with that version`);
      }
      header = true;
      hash.update(`${line}\n`);
      continue;
    }
    if (obj.end === true) {
      trailer = obj;
      continue;
    }
    hash.update(`${line}\n`);
    const table = obj.table as TableName;
    if (!TABLES.includes(table) || typeof obj.row !== "object" || obj.row === null) {
      throw bad(`line ${lineNo} is not a table row`);
    }
    counts[table] += 1;
    yield { table, row: obj.row as Row };
  }
  if (!header) throw bad("the file is empty");
  if (trailer === undefined) throw bad("the end marker is missing (truncated?)");
  if (trailer.sha256 !== hash.digest("hex")) throw bad("its SHA-256 does not match (changed or damaged)");
  if (JSON.stringify(trailer.counts) !== JSON.stringify(counts)) throw bad("its row counts do not match");
}

/** Restores a backup file into `target` (empty unless `force`): all of it, or nothing. */
export function restoreStore(
  target: Store,
  file: string,
  opts: { force?: boolean; where?: string } = {},
): Promise<TransferResult> {
  return importRows(target, readBackup(file), opts);
}
