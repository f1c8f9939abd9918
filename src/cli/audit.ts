import { createWriteStream, existsSync, renameSync, rmSync } from "node:fs";
import { resolve } from "node:path";
import type { Command } from "commander";
import { tempPathFor } from "../config/files.js";
import { requireCa } from "../config/state.js";
import { MtlsError } from "../errors.js";
import { openStore } from "../store/index.js";
import { addStateOption, isoDay, note, out, pathsFrom, type StateOpts, table } from "./common.js";

interface ExportOpts extends StateOpts {
  format: string;
  out?: string;
  after?: string;
  force?: boolean;
}

interface AuditOpts extends StateOpts {
  json?: boolean;
  limit?: string;
}

export function registerAudit(program: Command): void {
  const audit = program.command("audit").description("the hash-chained audit log");
  const verify = audit
    .command("verify")
    .description("check that no audit event was changed, removed or reordered");
  addStateOption(verify);
  verify.action(async (opts: StateOpts) => {
    const paths = pathsFrom(opts);
    requireCa(paths);
    const store = await openStore(paths);
    try {
      const result = await store.verifyAudit();
      if (!result.ok) {
        throw new MtlsError(
          "E_AUDIT_TAMPERED",
          `audit log tampered: event ${result.brokenAt} does not verify (${result.reason ?? "hash mismatch"}) after ${result.count} good events`,
        );
      }
      out(`audit log OK: ${result.count} events, hash chain intact`);
    } finally {
      await store.close();
    }
  });
  const list = audit
    .command("list")
    .description("show audit events, oldest first")
    .option("--json", "JSON lines")
    .option("--limit <n>", "at most this many (the newest)");
  addStateOption(list);
  list.action(async (opts: AuditOpts) => {
    const paths = pathsFrom(opts);
    requireCa(paths);
    const limit = opts.limit ? Number(opts.limit) : undefined;
    if (limit !== undefined && (!Number.isInteger(limit) || limit <= 0))
      throw new MtlsError("E_USAGE", `invalid --limit "${opts.limit}"`);
    const store = await openStore(paths);
    try {
      let events = [];
      for (let after = 0; ; ) {
        const page = await store.listAudit({ afterSeq: after, limit: 1000 });
        events.push(...page);
        if (page.length < 1000) break;
        after = page[page.length - 1]?.seq ?? after;
      }
      if (limit) events = events.slice(-limit);
      if (opts.json) {
        for (const e of events) out(JSON.stringify(e));
        return;
      }
      out(
        table([
          ["SEQ", "TIME", "ACTOR", "ACTION", "SUBJECT"],
          ...events.map((e) => [String(e.seq), isoDay(e.at), e.actor, e.action, e.subject ?? ""]),
        ]),
      );
    } finally {
      await store.close();
    }
  });
  const exp = audit
    .command("export")
    .description("write the whole audit log as JSON lines or CSV, and check its hash chain")
    .option("--format <format>", "jsonl or csv", "jsonl")
    .option("--out <file>", "write here (default: standard output)")
    .option("--after <seq>", "only events after this sequence number")
    .option("--force", "replace an existing --out file");
  addStateOption(exp);
  exp.action(async (opts: ExportOpts) => {
    const paths = pathsFrom(opts);
    requireCa(paths);
    const { auditEvents, csvHeader, formatAuditEvent, parseAuditFormat } = await import("../server/index.js");
    const format = parseAuditFormat(opts.format);
    const after = opts.after === undefined ? 0 : Number(opts.after);
    if (!Number.isSafeInteger(after) || after < 0)
      throw new MtlsError("E_USAGE", `invalid --after "${opts.after}"`);
    const target = opts.out ? resolve(opts.out) : undefined;
    if (target && existsSync(target) && !opts.force)
      throw new MtlsError("E_EXISTS", `${target} already exists (use --force to replace it)`);
    const store = await openStore(paths);
    let verified: Awaited<ReturnType<typeof store.verifyAudit>>;
    let count = 0;
    try {
      // Written to a temp file and renamed, so a failed export leaves no half file behind.
      const tmp = target ? tempPathFor(target) : undefined;
      const sink = tmp ? createWriteStream(tmp, { flags: "wx", mode: 0o600 }) : process.stdout;
      const write = (text: string) =>
        sink.write(text) ? Promise.resolve() : new Promise<void>((r) => sink.once("drain", () => r()));
      try {
        if (format === "csv") await write(csvHeader());
        for await (const e of auditEvents(store, { afterSeq: after })) {
          await write(formatAuditEvent(e, format));
          count++;
        }
        verified = await store.verifyAudit();
        if (tmp && target) {
          await new Promise<void>((res, rej) => {
            sink.once("error", rej);
            sink.end(() => res());
          });
          renameSync(tmp, target);
        }
      } catch (err) {
        if (tmp) {
          sink.destroy();
          rmSync(tmp, { force: true });
        }
        throw err;
      }
    } finally {
      await store.close();
    }
    if (target) note(`mtls: wrote ${count} audit events to ${target}`);
    if (!verified.ok) {
      throw new MtlsError(
        "E_AUDIT_TAMPERED",
        `exported, but the audit log is tampered: event ${verified.brokenAt} does not verify (${verified.reason ?? "hash mismatch"})`,
      );
    }
    note(`mtls: audit log verified: ${verified.count} events, hash chain intact`);
  });
}
