import { existsSync, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import { openCa } from "../ca/index.js";
import { readFileOrThrow, writeFileAtomic } from "../config/files.js";
import { MtlsError } from "../errors.js";
import { parseCertificates } from "../pki/certinfo.js";
import { parseCrls, parseReason } from "../pki/crl.js";
import {
  addCaKeyOptions,
  addStateOption,
  caKeyFrom,
  cliActor,
  out,
  pathsFrom,
  type StateOpts,
} from "./common.js";

interface RevokeOpts extends StateOpts {
  reason: string;
}

interface CrlOpts extends StateOpts {
  out?: string;
  der?: boolean;
  rootKey?: string;
  force?: boolean;
}

export function registerRevoke(program: Command): void {
  const cmd = program
    .command("revoke")
    .description(
      "revoke certificates by name (every valid one), serial or certificate file, and publish CRLs",
    )
    .argument("<what>", "name, serial (hex) or certificate file")
    .option(
      "--reason <reason>",
      "unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn, ...",
      "unspecified",
    );
  addStateOption(cmd);
  addCaKeyOptions(cmd);
  cmd.action(async (what: string, opts: RevokeOpts) => {
    const reason = parseReason(opts.reason);
    const ca = await openCa(pathsFrom(opts), caKeyFrom(opts));
    try {
      let serials: string[];
      if (existsSync(what) && !/^[0-9a-f:]+$/i.test(what)) {
        const [cert] = parseCertificates(readFileOrThrow(what, "certificate"));
        if (!cert) throw new MtlsError("E_BAD_INPUT", `${what} holds no certificate`);
        const rec = await ca.store.getCertificate(cert.serial);
        if (!rec || rec.fingerprint !== cert.fingerprint) {
          throw new MtlsError("E_NOT_FOUND", `${what} was not issued by this CA (serial ${cert.serial})`);
        }
        serials = [cert.serial];
      } else {
        const found = await ca.resolve(what, { includeRevoked: true });
        if (found.length === 0)
          throw new MtlsError("E_NOT_FOUND", `no certificate named or numbered "${what}"`);
        const live = found.filter((r) => r.status === "valid");
        if (live.length === 0) {
          out(`"${what}" is already revoked`);
          return;
        }
        serials = live.map((r) => r.serial);
      }
      const done = await ca.revoke(serials, reason, cliActor());
      for (const r of done) out(`revoked "${r.name}" serial ${r.serial} (${reason})`);
      out(`CRL published: ${ca.paths.crl}`);
    } finally {
      await ca.store.close();
    }
  });
}

export function registerCrl(program: Command): void {
  const cmd = program
    .command("crl")
    .description("sign fresh CRLs: the intermediate's then the root's, PEM (--der: the intermediate's only)")
    .option("--out <file>", "write here (default: standard output)")
    .option("--der", "DER, the intermediate's CRL only")
    .option("--root-key <file>", "the offline root key, to re-sign the root CRL")
    .option("--force", "replace an existing --out file");
  addStateOption(cmd);
  addCaKeyOptions(cmd);
  cmd.action(async (opts: CrlOpts) => {
    if (opts.der && !opts.out) throw new MtlsError("E_USAGE", "--der needs --out FILE (binary output)");
    const ca = await openCa(pathsFrom(opts), caKeyFrom(opts));
    try {
      const crls = await ca.publishCrls(
        cliActor(),
        opts.rootKey ? { rootKeyFile: resolve(opts.rootKey) } : {},
      );
      if (!opts.out) {
        out(crls.pem);
        return;
      }
      mkdirSync(dirname(resolve(opts.out)), { recursive: true });
      // Re-publishing over our own previous CRL is the normal case; anything else needs --force.
      const overwrite = opts.force || holdsOwnCrl(opts.out, [ca.root.subject, ca.intermediate.subject]);
      writeFileAtomic(opts.out, opts.der ? crls.intermediate : crls.pem, { overwrite });
      out(
        `wrote ${opts.der ? "the intermediate CRL (DER)" : "the intermediate and root CRLs (PEM)"} to ${resolve(opts.out)}`,
      );
    } finally {
      await ca.store.close();
    }
  });
}

function holdsOwnCrl(file: string, issuers: string[]): boolean {
  if (!existsSync(file)) return false;
  try {
    const crls = parseCrls(readFileOrThrow(file, "CRL"));
    return crls.length > 0 && crls.every((c) => issuers.includes(c.issuer));
  } catch {
    return false;
  }
}
