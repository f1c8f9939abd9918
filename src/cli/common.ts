import { resolve } from "node:path";
import type { Command } from "commander";
import { readFileOrThrow } from "../config/files.js";
import { resolveStateDir, resolveStore, type StatePaths, statePaths } from "../config/state.js";
import { MtlsError } from "../errors.js";

/** Options every command accepts. */
export interface StateOpts {
  state?: string;
  store?: string;
  passphraseFile?: string;
  pinFile?: string;
}

export function addStateOption(cmd: Command): Command {
  return cmd
    .option("--state <dir>", "state directory (default $MTLS_STATE or ./.mtls)")
    .option(
      "--store <url>",
      "keep the CA's records in PostgreSQL, postgres://... (default $MTLS_STORE, else STATE/mtls.db)",
    );
}

/** The --allow-* flags of the tunnel server and the gateway: one rule each, deny unless one allows. */
export function addAllowOptions(cmd: Command): Command {
  return cmd
    .option("--allow-cn <cn>", "allow certificates with this subject CN (repeatable)", collect)
    .option("--allow-ou <ou>", "allow certificates with this OU (repeatable)", collect)
    .option("--allow-dns <name>", "allow certificates with this DNS SAN (repeatable)", collect)
    .option(
      "--allow-uri <uri>",
      "allow this URI SAN; spiffe://acme.test/user/* patterns (repeatable)",
      collect,
    )
    .option("--allow-email <address>", "allow this e-mail SAN (repeatable)", collect)
    .option(
      "--allow-fingerprint <sha256>",
      "allow the certificate with this SHA-256 fingerprint (repeatable)",
      collect,
    )
    .option("--allow-spki <pin>", "allow this public key (SHA-256 of the SPKI, base64) (repeatable)", collect)
    .option("--allow-all", "allow any certificate the CA issued");
}

export function addPassphraseOption(cmd: Command): Command {
  return cmd.option("--passphrase-file <file>", "file holding the CA key passphrase (else $MTLS_PASSPHRASE)");
}

/**
 * --passphrase-file and --pin-file, for commands that sign with the CA key (issue, revoke, crl,
 * token): the PIN is the PKCS#11 token's, when `mtls init --ca-key pkcs11:...` put the key there.
 */
export function addCaKeyOptions(cmd: Command): Command {
  return addPassphraseOption(cmd).option(
    "--pin-file <file>",
    "the token's user PIN, when the CA key is in a PKCS#11 token (else $MTLS_PKCS11_PIN)",
  );
}

/** What openCa needs from --passphrase-file and --pin-file. */
export function caKeyFrom(opts: StateOpts): { passphraseFile?: string; pinFile?: string } {
  return {
    ...(opts.passphraseFile ? { passphraseFile: opts.passphraseFile } : {}),
    ...(opts.pinFile ? { pinFile: opts.pinFile } : {}),
  };
}

export function pathsFrom(opts: StateOpts): StatePaths {
  return statePaths(resolveStateDir(opts.state), resolveStore(opts.store));
}

/** Collects a repeatable option into an array. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** What the CLI writes: results to stdout, notes and warnings to stderr. */
export const out = (text: string): void => {
  process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
};
export const note = (text: string): void => {
  process.stderr.write(`${text}\n`);
};

export function readSecretFile(path: string, what: string): string {
  const value = readFileOrThrow(resolve(path), what)
    .toString("utf8")
    .replace(/\r?\n$/, "");
  if (!value) throw new MtlsError("E_USAGE", `${what} ${path} is empty`);
  return value;
}

/** Who is acting, for the audit log. */
export function cliActor(): string {
  return `cli:${process.env.USER ?? process.env.LOGNAME ?? `uid-${process.getuid?.() ?? "?"}`}`;
}

export function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  "))
    .join("\n");
}

export const isoDay = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, "Z");
