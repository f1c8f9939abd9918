import { MtlsError } from "../errors.js";
import type { AuditEvent, Store } from "../store/index.js";

/** How audit events are exported: JSON lines (one event per line) or CSV with a header row. */
export type AuditFormat = "jsonl" | "csv";

export const AUDIT_FORMATS: readonly AuditFormat[] = ["jsonl", "csv"];

export const AUDIT_CONTENT_TYPE: Record<AuditFormat, string> = {
  jsonl: "application/x-ndjson; charset=utf-8",
  csv: "text/csv; charset=utf-8",
};

const CSV_COLUMNS = ["seq", "at", "actor", "action", "subject", "details", "prevHash", "hash"] as const;

/** One event as a JSON object with an ISO time (the form `mtls audit list --json` prints). */
export function auditEventJson(e: AuditEvent): Record<string, unknown> {
  return {
    seq: e.seq,
    at: e.at.toISOString(),
    actor: e.actor,
    action: e.action,
    subject: e.subject,
    details: e.details,
    prevHash: e.prevHash,
    hash: e.hash,
  };
}

/**
 * RFC 4180 quoting, and a leading `'` for cells a spreadsheet would run as a formula (`=`, `+`,
 * `-`, `@`, tab, CR): an audit export opened in Excel must not execute what a client put in a name.
 */
export function csvCell(value: string): string {
  const safe = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\r\n']/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

export const csvHeader = (): string => `${CSV_COLUMNS.join(",")}\r\n`;

export function formatAuditEvent(e: AuditEvent, format: AuditFormat): string {
  if (format === "jsonl") return `${JSON.stringify(auditEventJson(e))}\n`;
  const cells = [
    String(e.seq),
    e.at.toISOString(),
    e.actor,
    e.action,
    e.subject ?? "",
    JSON.stringify(e.details),
    e.prevHash,
    e.hash,
  ];
  return `${cells.map(csvCell).join(",")}\r\n`;
}

export function parseAuditFormat(text: string | undefined, fallback: AuditFormat = "jsonl"): AuditFormat {
  if (text === undefined || text === "") return fallback;
  const f = text.toLowerCase() === "ndjson" || text.toLowerCase() === "json" ? "jsonl" : text.toLowerCase();
  if (!(AUDIT_FORMATS as readonly string[]).includes(f))
    throw new MtlsError("E_USAGE", `unknown audit format "${text}" (jsonl or csv)`);
  return f as AuditFormat;
}

/**
 * Reads audit events after `afterSeq` in pages, oldest first, up to `limit` (all when undefined).
 * A generator, so an export of a large log never holds it all in memory.
 */
export async function* auditEvents(
  store: Store,
  opts: { afterSeq?: number; limit?: number; pageSize?: number } = {},
): AsyncGenerator<AuditEvent> {
  const page = opts.pageSize ?? 1000;
  let after = opts.afterSeq ?? 0;
  let left = opts.limit ?? Number.POSITIVE_INFINITY;
  while (left > 0) {
    const want = Math.min(page, left);
    const events = await store.listAudit({ afterSeq: after, limit: want });
    for (const e of events) yield e;
    left -= events.length;
    const last = events[events.length - 1];
    if (!last || events.length < want) return;
    after = last.seq;
  }
}
