import type { Command } from "commander";
import { requireCa } from "../config/state.js";
import { MtlsError } from "../errors.js";
import { openSqliteStore } from "../store/index.js";
import { addStateOption, isoDay, out, pathsFrom, type StateOpts, table } from "./common.js";

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
    const store = await openSqliteStore(paths.database);
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
    const store = await openSqliteStore(paths.database);
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
}
