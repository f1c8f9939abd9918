import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import { openCa } from "../ca/index.js";
import { writeFileAtomic } from "../config/files.js";
import { MtlsError } from "../errors.js";
import { parseCertificates } from "../pki/certinfo.js";
import { pkcs8Of, privateKeyFromPem, spkiOf } from "../pki/keys.js";
import { toBuffer } from "../pki/pem.js";
import { buildPkcs12 } from "../pki/pkcs12.js";
import { addStateOption, cliActor, note, out, pathsFrom, readSecretFile, type StateOpts } from "./common.js";

interface ExportOpts extends StateOpts {
  format: string;
  out?: string;
  key?: string;
  p12PasswordFile?: string;
  p12Legacy?: boolean;
  force?: boolean;
}

const FORMATS = ["pem", "der", "chain", "p12"];

export function registerExport(program: Command): void {
  const cmd = program
    .command("export")
    .description(
      "export an issued certificate: pem (leaf + intermediate), der (leaf), chain (leaf to root) or p12",
    )
    .argument("<what>", "name or serial")
    .option("--format <format>", FORMATS.join(", "), "pem")
    .option("--out <file>", "write here (default: standard output, text formats only)")
    .option("--key <file>", "private key for p12 (default: the key file written by `mtls issue`)")
    .option("--p12-password-file <file>", "PKCS#12 password (else one is generated and printed once)")
    .option("--p12-legacy", "3DES/SHA-1 PKCS#12 for old Windows and macOS")
    .option("--force", "replace an existing --out file");
  addStateOption(cmd);
  cmd.action(async (what: string, opts: ExportOpts) => {
    if (!FORMATS.includes(opts.format))
      throw new MtlsError("E_USAGE", `unknown format "${opts.format}" (${FORMATS.join(", ")})`);
    if ((opts.format === "der" || opts.format === "p12") && !opts.out) {
      throw new MtlsError("E_USAGE", `--format ${opts.format} is binary: pass --out FILE`);
    }
    const ca = await openCa(pathsFrom(opts));
    try {
      const found = await ca.resolve(what, { includeRevoked: true });
      const rec = found.sort((a, b) => b.notAfter.getTime() - a.notAfter.getTime())[0];
      if (!rec) throw new MtlsError("E_NOT_FOUND", `no certificate named or numbered "${what}"`);
      if (rec.status === "revoked") note(`mtls: warning: "${rec.name}" (serial ${rec.serial}) is revoked`);
      const [leaf] = parseCertificates(rec.pem);
      if (!leaf) throw new MtlsError("E_STORE", `the inventory's copy of ${rec.serial} is unreadable`);
      let data: string | Uint8Array;
      let password: string | undefined;
      switch (opts.format) {
        case "der":
          data = leaf.der;
          break;
        case "chain":
          data = rec.pem + ca.intermediatePem + ca.rootPem;
          break;
        case "p12": {
          const keyFile = opts.key ?? rec.keyPath;
          if (!keyFile || !existsSync(keyFile)) {
            throw new MtlsError(
              "E_NOT_FOUND",
              `the private key of "${rec.name}" is not at hand${keyFile ? ` (${keyFile} is gone)` : " (it came from a CSR)"}: pass --key FILE`,
            );
          }
          const key = privateKeyFromPem(readFileSync(keyFile, "utf8"));
          if (!toBuffer(spkiOf(key)).equals(toBuffer(leaf.spki))) {
            throw new MtlsError(
              "E_BAD_INPUT",
              `${keyFile} is not the key of "${rec.name}" (serial ${rec.serial})`,
            );
          }
          password = opts.p12PasswordFile
            ? readSecretFile(opts.p12PasswordFile, "PKCS#12 password file")
            : randomBytes(12).toString("base64url");
          data = buildPkcs12({
            privateKey: pkcs8Of(key),
            certificates: [leaf.der, ca.intermediate.der],
            friendlyName: rec.name,
            password,
            legacy: opts.p12Legacy ?? false,
          });
          await ca.store.appendAudit({
            at: new Date(),
            actor: cliActor(),
            action: "cert.export",
            subject: rec.serial,
            details: { name: rec.name, format: "p12", legacy: opts.p12Legacy ?? false },
          });
          break;
        }
        default:
          data = rec.pem + ca.intermediatePem;
      }
      if (!opts.out) {
        out(typeof data === "string" ? data : toBuffer(data).toString("latin1"));
        return;
      }
      mkdirSync(dirname(resolve(opts.out)), { recursive: true });
      writeFileAtomic(opts.out, data, {
        mode: opts.format === "p12" ? 0o600 : 0o644,
        overwrite: opts.force ?? false,
      });
      out(`exported "${rec.name}" (serial ${rec.serial}) as ${opts.format} to ${resolve(opts.out)}`);
      if (password && !opts.p12PasswordFile) out(`PKCS#12 password (shown once): ${password}`);
    } finally {
      await ca.store.close();
    }
  });
}
