import type { Command } from "commander";
import { parseDuration } from "../config/duration.js";
import { requireCa, type StatePaths } from "../config/state.js";
import { type CertificateFilter, type CertificateRecord, openStore } from "../store/index.js";
import { addStateOption, isoDay, out, pathsFrom, type StateOpts, table } from "./common.js";

export interface ListOpts extends StateOpts {
  json?: boolean;
  expiring?: string;
  revoked?: boolean;
  all?: boolean;
  name?: string;
}

export function registerList(program: Command): void {
  const cmd = program
    .command("list")
    .description("list issued certificates (valid ones unless told otherwise)")
    .option("--json", "print JSON")
    .option("--expiring <duration>", "only valid certificates that expire within this time, e.g. 14d")
    .option("--revoked", "only revoked certificates")
    .option("--all", "every certificate, including revoked, expired, aborted and the CA's own")
    .option("--name <name>", "only certificates filed under this name");
  addStateOption(cmd);
  cmd.action(async (opts: ListOpts) => listCertificates(pathsFrom(opts), opts));
}

export async function listCertificates(paths: StatePaths, opts: ListOpts): Promise<void> {
  requireCa(paths);
  const now = new Date();
  const filter: CertificateFilter = {};
  if (opts.name) filter.name = opts.name;
  if (opts.revoked) filter.status = "revoked";
  else if (!opts.all) filter.status = "valid";
  if (!opts.all) filter.profile = ["server", "client", "peer", "ocsp"];
  if (opts.expiring)
    filter.expiringBefore = new Date(now.getTime() + parseDuration(opts.expiring, "--expiring"));
  const store = await openStore(paths);
  let rows: CertificateRecord[];
  try {
    rows = await store.findCertificates(filter);
  } finally {
    await store.close();
  }
  if (!opts.all && !opts.revoked) rows = rows.filter((r) => r.notAfter > now);
  rows.sort((a, b) => a.notAfter.getTime() - b.notAfter.getTime());
  if (opts.json) {
    out(
      JSON.stringify(
        rows.map(({ pem: _pem, ...r }) => ({ ...r, expired: r.notAfter <= now })),
        null,
        2,
      ),
    );
    return;
  }
  if (rows.length === 0) {
    out("no certificates");
    return;
  }
  const header = ["NAME", "PROFILE", "STATUS", "NOT AFTER", "SERIAL", "SANS"];
  out(
    table([
      header,
      ...rows.map((r) => [
        r.name,
        r.profile,
        r.status === "valid" && r.notAfter <= now
          ? "expired"
          : r.status === "revoked"
            ? `revoked (${r.revocationReason})`
            : r.status,
        isoDay(r.notAfter),
        r.serial,
        r.sans.join(", "),
      ]),
    ]),
  );
}
