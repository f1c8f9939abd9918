import type { Command } from "commander";
import { createToken, openCa, parseProfile, tokenStatus } from "../ca/index.js";
import { formatDuration, parseDuration } from "../config/duration.js";
import { makeSan, type San } from "../pki/names.js";
import {
  addPassphraseOption,
  addStateOption,
  cliActor,
  collect,
  isoDay,
  note,
  out,
  pathsFrom,
  type StateOpts,
  table,
} from "./common.js";

interface CreateOpts extends StateOpts {
  profile: string;
  dns?: string[];
  ip?: string[];
  email?: string[];
  uri?: string[];
  ou?: string[];
  ttl?: string;
  validFor: string;
  json?: boolean;
}

interface ListOpts extends StateOpts {
  all?: boolean;
  json?: boolean;
}

/** `mtls token create|list`: one-time enrollment tokens, made locally against --state. */
export function registerToken(program: Command): void {
  const token = program.command("token").description("one-time enrollment tokens for `POST /v1/enroll`");

  const create = token
    .command("create")
    .description("create a token that enrolls one certificate: mtls token create <name> --profile <p>")
    .argument("<name>", "the certificate's name and CN (the CSR's subject is ignored)")
    .requiredOption("--profile <profile>", "server, client or peer")
    .option("--dns <name>", "DNS name the certificate may carry (repeatable)", collect)
    .option("--ip <address>", "IP address it may carry (repeatable)", collect)
    .option("--email <address>", "e-mail address it may carry (repeatable)", collect)
    .option("--uri <uri>", "URI it may carry, e.g. a SPIFFE ID (repeatable)", collect)
    .option("--ou <unit>", "organizational unit (repeatable)", collect)
    .option("--ttl <duration>", "certificate lifetime, at most (default: server 90d, client 30d, peer 90d)")
    .option("--valid-for <duration>", "how long the token can be used (at most 7d)", "15m")
    .option("--json", "print the result as JSON");
  addStateOption(create);
  addPassphraseOption(create);
  create.action(async (name: string, opts: CreateOpts) => {
    const profile = parseProfile(opts.profile);
    const sans: San[] = [
      ...(opts.dns ?? []).map((v) => makeSan("dns", v)),
      ...(opts.ip ?? []).map((v) => makeSan("ip", v)),
      ...(opts.email ?? []).map((v) => makeSan("email", v)),
      ...(opts.uri ?? []).map((v) => makeSan("uri", v)),
    ];
    const ttlMs = opts.ttl ? parseDuration(opts.ttl, "--ttl") : undefined;
    const validForMs = parseDuration(opts.validFor, "--valid-for");
    const ca = await openCa(
      pathsFrom(opts),
      opts.passphraseFile ? { passphraseFile: opts.passphraseFile } : {},
    );
    try {
      const created = await createToken(
        ca,
        {
          name,
          profile,
          sans,
          ...(ttlMs ? { ttlMs } : {}),
          ...(opts.ou ? { organizationalUnit: opts.ou } : {}),
        },
        { validForMs, actor: cliActor() },
      );
      const sanTexts = sans.map((s) => `${s.type}:${s.value}`);
      if (opts.json) {
        out(
          JSON.stringify(
            {
              ...created,
              name,
              profile,
              sans: sanTexts,
              ttlMs: ttlMs ?? null,
              organizationalUnit: opts.ou ?? [],
            },
            null,
            2,
          ),
        );
        return;
      }
      // The token alone on stdout (for `$(mtls token create ...)`), what it grants on stderr.
      out(created.token);
      note(
        `mtls: token ${created.id} enrolls one ${profile} certificate "${name}"` +
          `${sanTexts.length ? ` (${sanTexts.join(", ")})` : ""}` +
          `${ttlMs ? ` for up to ${formatDuration(ttlMs)}` : ""}; usable once until ${isoDay(created.expiresAt)}`,
      );
    } finally {
      await ca.store.close();
    }
  });

  const list = token
    .command("list")
    .description("list enrollment tokens (never their secrets): unused ones unless --all")
    .option("--all", "include used and expired tokens")
    .option("--json", "print JSON");
  addStateOption(list);
  list.action(async (opts: ListOpts) => {
    const ca = await openCa(pathsFrom(opts));
    try {
      const now = ca.clock();
      const rows = (await ca.store.findTokens())
        .map((t) => ({ ...t, status: tokenStatus(t, now) }))
        .filter((t) => opts.all || t.status === "unused")
        .map(({ secretHash: _hidden, ...t }) => t);
      if (opts.json) {
        out(JSON.stringify(rows, null, 2));
        return;
      }
      if (rows.length === 0) {
        out(opts.all ? "no tokens" : "no unused tokens");
        return;
      }
      out(
        table([
          ["ID", "NAME", "PROFILE", "STATUS", "EXPIRES", "SANS"],
          ...rows.map((t) => [
            t.id,
            t.name,
            t.profile,
            t.status === "used" ? `used (${t.usedBySerial})` : t.status,
            isoDay(t.expiresAt),
            t.sans.join(", "),
          ]),
        ]),
      );
    } finally {
      await ca.store.close();
    }
  });
}
