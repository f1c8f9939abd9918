import { existsSync, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import { MtlsError } from "../errors.js";
import {
  backupStore,
  copyStore,
  describePostgresUrl,
  isPostgresUrl,
  openPostgresStore,
  openSqliteStore,
  openStore,
  restoreStore,
  type Store,
  type TableCounts,
  type TransferResult,
} from "../store/index.js";
import { addStateOption, out, pathsFrom, type StateOpts } from "./common.js";

interface MigrateOpts extends StateOpts {
  from?: string;
  to: string;
  force?: boolean;
}

interface FileOpts extends StateOpts {
  force?: boolean;
}

/** A store named on the command line: a postgres:// URL or a SQLite file (which must exist when read). */
async function openNamed(location: string, mustExist: boolean): Promise<{ store: Store; name: string }> {
  if (isPostgresUrl(location)) {
    return { store: await openPostgresStore(location), name: describePostgresUrl(location) };
  }
  const file = resolve(location);
  if (mustExist && !existsSync(file)) throw new MtlsError("E_NOT_FOUND", `no database file ${file}`);
  makeDir(dirname(file));
  return { store: await openSqliteStore(file), name: file };
}

/** The folder a new SQLite file goes into, created owner-only like a state directory. */
function makeDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new MtlsError("E_IO", `cannot create ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

const summary = (c: TableCounts): string =>
  `${c.certificates} certificates, ${c.enrollment_tokens} tokens, ${c.audit_events} audit events, ` +
  `${c.settings} settings, ${c.counters} counters`;

function report(verb: string, result: TransferResult, from: string, to: string): void {
  const { audit } = result;
  if (!audit.ok) {
    throw new MtlsError(
      "E_AUDIT_TAMPERED",
      `${verb} ${summary(result.counts)} into ${to}, but its audit log does not verify at event ${audit.brokenAt} (${audit.reason})`,
    );
  }
  out(`${verb} ${summary(result.counts)} from ${from} to ${to}`);
  out(`audit log OK: ${audit.count} events, hash chain intact`);
}

export function registerStore(program: Command): void {
  const store = program
    .command("store")
    .description("the CA's database: move it to PostgreSQL, back it up, restore it");

  store
    .command("migrate")
    .description("copy every record (certificates, tokens, audit log, settings) from one store to another")
    .option("--from <store>", "SQLite file or postgres:// URL to copy from (default STATE/mtls.db)")
    .requiredOption("--to <store>", "postgres:// URL (or SQLite file) to copy into; must be empty")
    .option("--force", "replace whatever the target already holds")
    .option(
      "--state <dir>",
      "state directory whose mtls.db is the default --from (default $MTLS_STATE or ./.mtls)",
    )
    .action(async (opts: MigrateOpts) => {
      const fromLocation = opts.from ?? pathsFrom({ ...opts, store: undefined }).database;
      const from = await openNamed(fromLocation, true);
      try {
        const to = await openNamed(opts.to, false);
        try {
          const result = await copyStore(from.store, to.store, {
            force: Boolean(opts.force),
            where: to.name,
          });
          report("copied", result, from.name, to.name);
          if (isPostgresUrl(opts.to)) {
            out("from now on, give every CA command and node that same URL: --store URL, or MTLS_STORE=URL");
          }
        } finally {
          await to.store.close();
        }
      } finally {
        await from.store.close();
      }
    });

  const backup = store
    .command("backup <file>")
    .description("write every record of the store to FILE (JSON lines with a SHA-256 checksum)")
    .option("--force", "replace an existing FILE");
  addStateOption(backup);
  backup.action(async (file: string, opts: FileOpts) => {
    const paths = pathsFrom(opts);
    if (paths.storeUrl === undefined && !existsSync(paths.database)) {
      throw new MtlsError(
        "E_NO_CA",
        `no database in ${paths.dir} (run \`mtls init\` or pass --state/--store)`,
      );
    }
    const target = resolve(file);
    const opened = await openStore(paths);
    try {
      const counts = await backupStore(opened, target, { force: Boolean(opts.force) });
      out(`backed up ${summary(counts)} to ${target}`);
    } finally {
      await opened.close();
    }
  });

  const restore = store
    .command("restore <file>")
    .description("load a backup into the store, which must be empty (all of it, or nothing)")
    .option("--force", "replace everything the store holds");
  addStateOption(restore);
  restore.action(async (file: string, opts: FileOpts) => {
    const paths = pathsFrom(opts);
    const where = paths.storeUrl !== undefined ? describePostgresUrl(paths.storeUrl) : paths.database;
    const source = resolve(file);
    if (!existsSync(source)) throw new MtlsError("E_NOT_FOUND", `no backup file ${source}`);
    if (paths.storeUrl === undefined) makeDir(paths.dir);
    const opened = await openStore(paths);
    try {
      report(
        "restored",
        await restoreStore(opened, source, { force: Boolean(opts.force), where }),
        source,
        where,
      );
    } finally {
      await opened.close();
    }
  });
}
