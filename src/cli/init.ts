import { resolve } from "node:path";
import type { Command } from "commander";
import { initCa } from "../ca/index.js";
import { parseDuration } from "../config/duration.js";
import { resolvePassphrase } from "../config/passphrase.js";
import { hasCa } from "../config/state.js";
import { formatPkcs11Uri, parsePkcs11Uri, requirePin, resolveModulePath } from "../keys/index.js";
import { parseKeyType } from "../pki/keys.js";
import {
  addPassphraseOption,
  addStateOption,
  cliActor,
  isoDay,
  note,
  out,
  pathsFrom,
  type StateOpts,
} from "./common.js";

interface InitOpts extends StateOpts {
  name: string;
  keyType: string;
  publicUrl?: string;
  rootKeyOut?: string;
  force?: boolean;
  rootTtl: string;
  intermediateTtl: string;
  /** false with --no-admin */
  admin: boolean;
  adminTtl?: string;
  caKey?: string;
  pkcs11Module?: string;
  pinFile?: string;
}

export function registerInit(program: Command): void {
  const cmd = program
    .command("init")
    .description("create a root and an intermediate CA in the state directory")
    .option("--name <org>", 'organization name, e.g. "Acme Corp"', "mtls")
    .option(
      "--key-type <type>",
      "CA key type: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519",
      "ec-p256",
    )
    .option(
      "--public-url <url>",
      "where `mtls ca serve` will be reachable: adds CRL and OCSP URLs to certificates",
    )
    .option(
      "--root-key-out <file>",
      "write the root key here (encrypted) and keep it out of the state directory",
    )
    .option("--root-ttl <duration>", "root CA lifetime", "10y")
    .option("--intermediate-ttl <duration>", "intermediate CA lifetime", "5y")
    .option("--admin-ttl <duration>", "lifetime of the admin client certificate (default 30d)")
    .option("--no-admin", "do not issue the admin client certificate into STATE/admin")
    .option("--force", "replace an existing CA (the old one is moved to STATE/backup-*)")
    .option(
      "--ca-key <pkcs11-uri>",
      "keep the intermediate's key in a PKCS#11 token, e.g. 'pkcs11:token=mtls;object=intermediate' (used if present, else generated there)",
    )
    .option("--pkcs11-module <path>", "PKCS#11 module for --ca-key, e.g. /usr/lib/softhsm/libsofthsm2.so")
    .option("--pin-file <file>", "the token's user PIN for --ca-key (else MTLS_PKCS11_PIN)");
  addStateOption(cmd);
  addPassphraseOption(cmd);
  cmd.action(async (opts: InitOpts) => {
    const paths = pathsFrom(opts);
    const keyType = parseKeyType(opts.keyType);
    const rootTtlMs = parseDuration(opts.rootTtl, "--root-ttl");
    const intermediateTtlMs = parseDuration(opts.intermediateTtl, "--intermediate-ttl");
    const adminTtlMs = opts.adminTtl ? parseDuration(opts.adminTtl, "--admin-ttl") : undefined;
    const caKey = opts.caKey ? tokenKeyFrom(opts, cmd.getOptionValueSource("keyType") === "cli") : undefined;
    const replacing = hasCa(paths);
    let found = resolvePassphrase(opts.passphraseFile ? { file: opts.passphraseFile } : {}, paths.passphrase);
    // A passphrase file left by the CA being replaced is not reused: the new CA gets a new one.
    if (found && replacing && found.origin === paths.passphrase) found = undefined;
    const result = await initCa({
      paths,
      name: opts.name,
      keyType,
      ...(opts.publicUrl ? { publicUrl: opts.publicUrl } : {}),
      ...(opts.rootKeyOut ? { rootKeyOut: resolve(opts.rootKeyOut) } : {}),
      force: opts.force ?? false,
      rootTtlMs,
      intermediateTtlMs,
      admin: opts.admin === false ? false : adminTtlMs ? { ttlMs: adminTtlMs } : {},
      actor: cliActor(),
      ...(found ? { passphrase: found.passphrase } : {}),
      ...(caKey ? { caKey } : {}),
    });
    if (result.backup) note(`mtls: the previous CA was moved to ${result.backup}`);
    if (result.generatedPassphraseFile) {
      note(
        `mtls: generated a passphrase for the CA keys in ${result.generatedPassphraseFile} (mode 0600); ` +
          "move it somewhere safer and use --passphrase-file or MTLS_PASSPHRASE for real protection",
      );
    }
    out(`CA "${opts.name}" created in ${paths.dir}`);
    out(
      `  root:         ${result.root.subject}  serial ${result.root.serial}  until ${isoDay(result.root.notAfter)}`,
    );
    out(`               sha256 ${result.root.fingerprint}`);
    out(
      `  intermediate: ${result.intermediate.subject}  serial ${result.intermediate.serial}  until ${isoDay(result.intermediate.notAfter)}`,
    );
    out(
      opts.rootKeyOut
        ? `  root key:     ${resolve(opts.rootKeyOut)} (offline; keep it safe)`
        : `  root key:     ${paths.rootKey}`,
    );
    if (result.intermediateKey) {
      out(
        `  CA key:       ${result.intermediateKey.uri} (${result.intermediateKey.generated ? "generated in the token" : "existing key in the token"})`,
      );
    }
    out(`  trust anchor: ${paths.rootCert}`);
    const files = result.admin?.files;
    if (files) {
      out(
        `  admin:        ${files.cert} + ${files.key} (client certificate "${result.admin?.name}", in ca.admins)`,
      );
      out(`                ${files.p12} (password in ${files.password})`);
    }
  });
}

/** The --ca-key URI (refused with a PIN in it), its module and PIN (from --pin-file or MTLS_PKCS11_PIN). */
function tokenKeyFrom(opts: InitOpts, keyTypeExplicit: boolean) {
  const uri = parsePkcs11Uri(opts.caKey as string);
  const pin = requirePin(opts.pinFile ? { file: opts.pinFile } : {}, uri);
  const module = resolveModulePath(opts.pkcs11Module, uri);
  return { module, uri: formatPkcs11Uri(uri), pin, keyTypeExplicit };
}
