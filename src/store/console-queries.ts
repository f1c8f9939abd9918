import {
  type Compilable,
  CompiledQuery,
  type Expression,
  type ExpressionBuilder,
  type Kysely,
  type QueryResult,
  type SqlBool,
  SqliteAdapter,
  sql,
} from "kysely";
import { MtlsError } from "../errors.js";
import { rowToAuditEvent, rowToCertificateSummary, SUMMARY_COLUMNS, toIso } from "./rows.js";
import type { Database } from "./schema.js";
import { guard } from "./store-error.js";
import type {
  AuditEvent,
  AuditPageQuery,
  CertificateSearch,
  CertificateStats,
  CertificateSummary,
  CertificateView,
} from "./types.js";

/**
 * The admin console's reads: a paged, searchable, sortable certificate table, the overview's
 * counts and expiry chart, and the audit log newest first. Everything is filtered, counted and
 * sorted in SQL, so a page costs one indexed or scanning query plus one count, never the whole
 * table in memory. The statements are the same on SQLite and PostgreSQL but for two things, both
 * for speed at 100,000 rows: how text is matched without regard to case (textCondition) and, on
 * SQLite, which index a filtered page reads (searchCertificates). Times are ISO text of fixed
 * width (schema.ts), so comparing them as text compares the instants.
 */

const DAY_MS = 86_400_000;
export const MAX_PAGE = 500;
export const MAX_AUDIT_PAGE = 1000;
export const MAX_STATS_DAYS = 3660;

type Eb = ExpressionBuilder<Database, "certificates">;

const SORT_COLUMNS = {
  name: "name",
  notAfter: "not_after",
  notBefore: "not_before",
  serial: "serial",
  profile: "profile",
  keyType: "key_type",
  createdAt: "created_at",
} as const;

const VIEWS: readonly CertificateView[] = [
  "all",
  "valid",
  "expiring7",
  "expiring30",
  "expired",
  "revoked",
  "pending",
];

const isCount = (n: unknown, min: number, max: number): n is number =>
  Number.isInteger(n) && (n as number) >= min && (n as number) <= max;

const plusDays = (date: Date, days: number) => new Date(date.getTime() + days * DAY_MS);

/** `\`, `%` and `_` in user input stand for themselves (used with ESCAPE '\'). */
export function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, "\\$&");
}

/** The conditions of a view, relative to `now`. */
function viewConditions(eb: Eb, view: CertificateView, now: Date): Expression<SqlBool>[] {
  const nowIso = toIso(now, "now");
  const validUntil = (days: number) => [
    eb("status", "=", "valid"),
    eb("not_after", ">", nowIso),
    eb("not_after", "<=", toIso(plusDays(now, days), "now")),
  ];
  switch (view) {
    case "all":
      return [];
    case "valid":
      return [eb("status", "=", "valid"), eb("not_after", ">", nowIso)];
    case "expiring7":
      return validUntil(7);
    case "expiring30":
      return validUntil(30);
    case "expired":
      return [eb("status", "=", "valid"), eb("not_after", "<=", nowIso)];
    case "revoked":
      return [eb("status", "=", "revoked")];
    case "pending":
      return [eb("status", "=", "pending")];
  }
}

/** The SQLite index that holds every column a console filter or sort reads (migration 0003). */
export const CONSOLE_INDEX = "certificates_console_idx";

/** Sorts with an index of their own (0001/0003): an unfiltered page walks it and stops. */
const INDEXED_SORTS = new Set<CertificateSearch["sort"]>([
  "name",
  "notAfter",
  "notBefore",
  "createdAt",
  "serial",
]);

/** The index of each sort column that has one (migration 0003): the column, then serial, the tie-break. */
const WALK_INDEXES: Partial<Record<NonNullable<CertificateSearch["sort"]>, string>> = {
  name: "certificates_name_serial_idx",
  notAfter: "certificates_not_after_serial_idx",
  notBefore: "certificates_not_before_serial_idx",
  createdAt: "certificates_created_at_serial_idx",
};

/**
 * Whether walking a sort index to row `upTo` (with about rows/matches lookups per wanted row, each
 * a table read about ten times an index entry's cost, as measured at 100,000 rows) beats reading
 * all `matches` entries of the console index and sorting them.
 */
export function walkIsCheaper(upTo: number, matches: number, rows: number): boolean {
  const lookups = (upTo * Math.max(rows, matches)) / Math.max(matches, 1);
  return lookups * 10 < matches;
}

/** The table's size within a few rows, in constant time: SQLite's largest rowid (rows are never deleted). */
async function approximateRows(db: Kysely<Database>): Promise<number> {
  const { rows } = await sql<{ n: number | null }>`select max(rowid) as n from certificates`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

const isSqlite = (db: Kysely<Database>) => db.getExecutor().adapter instanceof SqliteAdapter;

/** ASCII letters only: what SQLite's LIKE folds, and what lower() folds under PostgreSQL's "C" collation. */
const asciiLower = (text: string) => text.replace(/[A-Z]+/g, (c) => c.toLowerCase());

/**
 * ASCII-case-insensitive substring of name, subject or the SANs' JSON text, or (for hex input,
 * colons ignored) a prefix of serial or fingerprint. SQLite's LIKE ignores ASCII case by itself.
 * PostgreSQL's LIKE does not, and its ILIKE (or lower()) under the database's collation costs
 * several times the scan itself; lower() under "C" folds ASCII cheaply, the same as SQLite.
 */
function textCondition(eb: Eb, text: string, sqlite: boolean): Expression<SqlBool> {
  const pattern = `%${escapeLike(asciiLower(text))}%`;
  // Without a letter in the text (digits, an address) case cannot matter: no folding needed.
  const fold = !sqlite && /[A-Za-z]/.test(text);
  const contains = (column: "name" | "subject" | "sans") =>
    fold
      ? sql<SqlBool>`lower(${sql.ref(column)} collate "C") like ${pattern} escape '\\'`
      : sql<SqlBool>`${sql.ref(column)} like ${pattern} escape '\\'`;
  const any: Expression<SqlBool>[] = [contains("name"), contains("subject"), contains("sans")];
  const hex = text.replace(/:/g, "").toLowerCase();
  if (/^[0-9a-f]+$/.test(hex)) {
    any.push(eb("serial", "like", `${hex}%`), eb("fingerprint", "like", `${hex}%`));
  }
  return eb.or(any);
}

function checkSearch(q: CertificateSearch): void {
  if (!isCount(q.limit, 1, MAX_PAGE)) {
    throw new MtlsError("E_BAD_INPUT", `page size must be an integer from 1 to ${MAX_PAGE}, not ${q.limit}`);
  }
  if (q.offset !== undefined && !isCount(q.offset, 0, Number.MAX_SAFE_INTEGER)) {
    throw new MtlsError("E_BAD_INPUT", `page offset must be a non-negative integer, not ${q.offset}`);
  }
  if (q.view !== undefined && !VIEWS.includes(q.view)) {
    throw new MtlsError("E_BAD_INPUT", `unknown certificate view ${JSON.stringify(q.view)}`);
  }
  if (q.sort !== undefined && q.sort !== "status" && !Object.hasOwn(SORT_COLUMNS, q.sort)) {
    throw new MtlsError("E_BAD_INPUT", `unknown sort column ${JSON.stringify(q.sort)}`);
  }
  if (q.direction !== undefined && q.direction !== "asc" && q.direction !== "desc") {
    throw new MtlsError(
      "E_BAD_INPUT",
      `sort direction must be asc or desc, not ${JSON.stringify(q.direction)}`,
    );
  }
}

/**
 * One page in two steps: the serials of the page (and, with a text filter, the total through
 * count(*) over (), so the scan runs once), then those rows' summaries by primary key.
 *
 * On SQLite a filtered page reads only certificates_console_idx, which holds every column a
 * filter or sort needs: a whole-table scan would read every PEM (most of each row), and SQLite's
 * planner, which keeps no statistics here, would otherwise walk a sort index and look up the row
 * for every entry (0.7 s for a rare text at 100,000 rows). Without any filter, a sort with an
 * index of its own walks that index and stops after the page. PostgreSQL plans from its
 * statistics and has no such index (see migration 0003).
 */
export function searchCertificates(
  db: Kysely<Database>,
  q: CertificateSearch,
): Promise<{ rows: CertificateSummary[]; total: number }> {
  checkSearch(q);
  const now = q.now;
  const nowIso = toIso(now, "now");
  if (q.profile !== undefined && q.profile.length === 0) return Promise.resolve({ rows: [], total: 0 });
  const sqlite = isSqlite(db);
  const text = q.text?.trim() ?? "";
  const filter = (eb: Eb) => {
    const parts = viewConditions(eb, q.view ?? "all", now);
    if (q.profile !== undefined) parts.push(eb("profile", "in", q.profile));
    if (text !== "") parts.push(textCondition(eb, text, sqlite));
    return eb.and(parts);
  };
  const hasFilter = (q.view ?? "all") !== "all" || q.profile !== undefined || text !== "";
  const direction = q.direction ?? "asc";
  const sort = q.sort ?? "name";
  const offset = q.offset ?? 0;
  return guard("could not search certificates", async () => {
    // "status" sorts by what the table shows: a valid certificate past its notAfter as "expired".
    const sortKey =
      sort === "status"
        ? sql<string>`case when status = 'valid' and not_after <= ${nowIso} then 'expired' else status end`
        : sql.ref<string>(SORT_COLUMNS[sort]);
    // Serials are unique: the tie-break makes the order, and so the pages, stable.
    let page: Compilable<{ serial: string; total?: number | string }>;
    if (text !== "") {
      // A text filter reads every row anyway: filter first (materialized, so PostgreSQL cannot
      // choose to walk a sort index and fetch every row at random, as it otherwise does when it
      // underestimates the matches), then sort only the matches, counting them on the way.
      page = db
        .with(
          (cte) => cte("m").materialized(),
          () =>
            db
              .selectFrom("certificates")
              .select(["serial", sortKey.as("k")])
              .where(filter),
        )
        .selectFrom("m")
        .select(["serial", sql<number | string>`count(*) over ()`.as("total")])
        .orderBy("k", direction)
        .orderBy("serial", direction)
        .limit(q.limit)
        .offset(offset);
    } else {
      let plain = db.selectFrom("certificates").select("serial");
      if (hasFilter) plain = plain.where(filter);
      if (sort !== "serial") plain = plain.orderBy(sortKey, direction);
      page = plain.orderBy("serial", direction).limit(q.limit).offset(offset);
    }
    const countAll = () => {
      let count = db.selectFrom("certificates").select((eb) => eb.fn.countAll<number | string>().as("n"));
      if (hasFilter) count = count.where(filter);
      return count.executeTakeFirstOrThrow().then((r) => Number(r.n));
    };
    let compiled = page.compile();
    let counted: number | undefined;
    if (sqlite && (hasFilter || !INDEXED_SORTS.has(sort))) {
      let index = CONSOLE_INDEX;
      const walk = WALK_INDEXES[sort];
      if (text === "" && hasFilter && walk !== undefined) {
        // A view or profile filter is counted cheaply first; when its matches are common enough,
        // walking the sort's own index (checking each row) reaches the page after a few lookups,
        // where reading every match from the console index would cost one entry per match.
        counted = await countAll();
        if (counted <= offset) return { rows: [], total: counted };
        if (walkIsCheaper(offset + q.limit, counted, await approximateRows(db))) index = walk;
      }
      compiled = CompiledQuery.raw(
        compiled.sql.replace('from "certificates"', `from "certificates" indexed by "${index}"`),
        compiled.parameters as unknown[],
      );
    }
    const [{ rows: found }, countedNow] = await Promise.all([
      db.executeQuery(compiled) as Promise<QueryResult<{ serial: string; total?: number | string }>>,
      text === "" && counted === undefined ? countAll() : undefined,
    ]);
    counted ??= countedNow;
    const first = found[0];
    const total =
      counted ?? (first !== undefined ? Number(first.total) : offset === 0 ? 0 : await countAll());
    if (found.length === 0) return { rows: [], total };
    const serials = found.map((r) => r.serial);
    const rows = await db
      .selectFrom("certificates")
      .select(SUMMARY_COLUMNS)
      .where("serial", "in", serials)
      .execute();
    const bySerial = new Map(rows.map((r) => [r.serial, r]));
    const out: CertificateSummary[] = [];
    // A row deleted between the two reads is left out; the Store never deletes certificates.
    for (const s of serials) {
      const row = bySerial.get(s);
      if (row !== undefined) out.push(rowToCertificateSummary(row));
    }
    return { rows: out, total };
  });
}

/**
 * Two index range reads over (status, not_after) and one GROUP BY status, not a scan per number:
 * counts by stored status, then the valid ones split at now, +7 and +30 days; and the chart, a
 * GROUP BY of notAfter's date over the valid certificates expiring within `days`.
 */
/**
 * The CA's own root and intermediate are not counted: the overview shows them apart, with their own
 * expiry. Every certificate they issued is (leaves, the OCSP responder's, the service's HTTPS one).
 */
const CA_PROFILES = ["ca-root", "ca-intermediate"];

export function certificateStats(db: Kysely<Database>, now: Date, days = 90): Promise<CertificateStats> {
  if (!isCount(days, 1, MAX_STATS_DAYS)) {
    throw new MtlsError(
      "E_BAD_INPUT",
      `stats days must be an integer from 1 to ${MAX_STATS_DAYS}, not ${days}`,
    );
  }
  const nowIso = toIso(now, "now");
  const in7 = toIso(plusDays(now, 7), "now");
  const in30 = toIso(plusDays(now, 30), "now");
  const endIso = toIso(plusDays(now, days), "now");
  return guard("could not count certificates", async () => {
    const byStoredStatus = db
      .selectFrom("certificates")
      .select((eb) => ["status", eb.fn.countAll<number | string>().as("n")])
      .where("profile", "not in", CA_PROFILES)
      .groupBy("status")
      .execute();
    const soon = db
      .selectFrom("certificates")
      .select([
        sql<number | string | null>`sum(case when not_after <= ${nowIso} then 1 else 0 end)`.as("expired"),
        sql<
          number | string | null
        >`sum(case when not_after > ${nowIso} and not_after <= ${in7} then 1 else 0 end)`.as("in7"),
        sql<number | string | null>`sum(case when not_after > ${nowIso} then 1 else 0 end)`.as("in30"),
      ])
      .where("status", "=", "valid")
      .where("profile", "not in", CA_PROFILES)
      .where("not_after", "<=", in30)
      .executeTakeFirstOrThrow();
    const day = sql<string>`substr(not_after, 1, 10)`;
    const chart = db
      .selectFrom("certificates")
      .select([day.as("day"), (eb) => eb.fn.countAll<number | string>().as("n")])
      .where("status", "=", "valid")
      .where("profile", "not in", CA_PROFILES)
      .where("not_after", ">", nowIso)
      .where("not_after", "<=", endIso)
      .groupBy(day)
      .execute();
    const [statuses, split, perDay] = await Promise.all([byStoredStatus, soon, chart]);
    const stored = new Map(statuses.map((r) => [r.status, Number(r.n)]));
    const expired = Number(split.expired ?? 0);
    const counts = new Map(perDay.map((r) => [r.day, Number(r.n)]));
    const expiriesByDay: CertificateStats["expiriesByDay"] = [];
    const lastDay = endIso.slice(0, 10);
    for (let t = Date.parse(`${nowIso.slice(0, 10)}T00:00:00.000Z`); ; t += DAY_MS) {
      const d = new Date(t).toISOString().slice(0, 10);
      if (d > lastDay) break;
      expiriesByDay.push({ day: d, count: counts.get(d) ?? 0 });
    }
    return {
      byStatus: {
        valid: (stored.get("valid") ?? 0) - expired,
        expiring7: Number(split.in7 ?? 0),
        expiring30: Number(split.in30 ?? 0),
        expired,
        revoked: stored.get("revoked") ?? 0,
        pending: stored.get("pending") ?? 0,
        aborted: stored.get("aborted") ?? 0,
      },
      expiriesByDay,
    };
  });
}

/** Newest first; with an actor or action, an index on (actor|action, seq) serves the page. */
export function listAuditPage(db: Kysely<Database>, q: AuditPageQuery): Promise<AuditEvent[]> {
  if (!isCount(q.limit, 1, MAX_AUDIT_PAGE)) {
    throw new MtlsError(
      "E_BAD_INPUT",
      `audit page size must be an integer from 1 to ${MAX_AUDIT_PAGE}, not ${q.limit}`,
    );
  }
  if (q.beforeSeq !== undefined && !isCount(q.beforeSeq, 1, Number.MAX_SAFE_INTEGER)) {
    throw new MtlsError("E_BAD_INPUT", `audit beforeSeq must be a positive integer, not ${q.beforeSeq}`);
  }
  return guard("could not read the audit log", async () => {
    let query = db.selectFrom("audit_events").selectAll();
    if (q.beforeSeq !== undefined) query = query.where("seq", "<", q.beforeSeq);
    if (q.actor !== undefined) query = query.where("actor", "=", q.actor);
    if (q.action !== undefined) query = query.where("action", "=", q.action);
    const rows = await query.orderBy("seq", "desc").limit(q.limit).execute();
    return rows.map(rowToAuditEvent);
  });
}
