import { randomBytes } from "node:crypto";
import { statSync } from "node:fs";
import type { Command } from "commander";
import {
  type CertificateAuthority,
  type Delivered,
  issueToFiles,
  openCa,
  parseProfile,
  validateLeafName,
} from "../ca/index.js";
import { parseDuration } from "../config/duration.js";
import { readFileOrThrow } from "../config/files.js";
import { MtlsError } from "../errors.js";
import { parseCsr } from "../pki/csr.js";
import { parseKeyType } from "../pki/keys.js";
import { formatSan, makeSan, type San } from "../pki/names.js";
import type { CertificateRecord } from "../store/index.js";
import {
  addCaKeyOptions,
  addStateOption,
  caKeyFrom,
  cliActor,
  collect,
  isoDay,
  note,
  out,
  pathsFrom,
  readSecretFile,
  type StateOpts,
} from "./common.js";

interface SanOpts {
  dns?: string[];
  ip?: string[];
  email?: string[];
  uri?: string[];
}

interface IssueOpts extends StateOpts, SanOpts {
  ou?: string[];
  ttl?: string;
  keyType: string;
  out: string;
  p12?: boolean;
  p12Legacy?: boolean;
  p12PasswordFile?: string;
  force?: boolean;
  json?: boolean;
}

interface SignOpts extends StateOpts, SanOpts {
  profile: string;
  name?: string;
  ttl?: string;
  out: string;
  force?: boolean;
  json?: boolean;
}

function addSanOptions(cmd: Command): Command {
  return cmd
    .option("--dns <name>", "DNS name SAN (repeatable)", collect)
    .option("--ip <address>", "IP address SAN (repeatable)", collect)
    .option("--email <address>", "e-mail SAN (repeatable)", collect)
    .option("--uri <uri>", "URI SAN, e.g. a SPIFFE ID (repeatable)", collect);
}

function sansFrom(opts: SanOpts): San[] {
  return [
    ...(opts.dns ?? []).map((v) => makeSan("dns", v)),
    ...(opts.ip ?? []).map((v) => makeSan("ip", v)),
    ...(opts.email ?? []).map((v) => makeSan("email", v)),
    ...(opts.uri ?? []).map((v) => makeSan("uri", v)),
  ];
}

async function withCa<T>(opts: StateOpts, fn: (ca: CertificateAuthority) => Promise<T>): Promise<T> {
  const ca = await openCa(pathsFrom(opts), caKeyFrom(opts));
  try {
    return await fn(ca);
  } finally {
    await ca.store.close();
  }
}

export function registerIssue(program: Command): void {
  const cmd = program
    .command("issue")
    .description("issue a certificate and its key: mtls issue <server|client|peer> <name>")
    .argument("<profile>", "server (serverAuth), client (clientAuth) or peer (both)")
    .argument("<name>", "name the certificate is filed under; its CN and file name")
    .option("--ou <unit>", "organizational unit (repeatable)", collect)
    .option("--ttl <duration>", "lifetime, e.g. 30d, 12h (default: server 90d, client 30d, peer 90d)")
    .option("--key-type <type>", "ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096 or ed25519", "ec-p256")
    .option("--out <dir>", "folder for NAME.crt, NAME.key, NAME.p12 and ca.crt", ".")
    .option("--p12", "also write NAME.p12 (PKCS#12 for browsers and OS key stores)")
    .option("--p12-legacy", "write the PKCS#12 with 3DES/SHA-1 for old Windows and macOS")
    .option("--p12-password-file <file>", "PKCS#12 password (else one is generated and printed once)")
    .option("--force", "replace existing files")
    .option("--json", "print the result as JSON");
  addSanOptions(cmd);
  addStateOption(cmd);
  addCaKeyOptions(cmd);
  cmd.action(async (profileArg: string, name: string, opts: IssueOpts) => {
    const profile = parseProfile(profileArg);
    const keyType = parseKeyType(opts.keyType);
    const sans = sansFrom(opts);
    const ttlMs = opts.ttl ? parseDuration(opts.ttl, "--ttl") : undefined;
    const wantP12 = Boolean(opts.p12 || opts.p12Legacy);
    const p12Password = wantP12
      ? opts.p12PasswordFile
        ? readSecretFile(opts.p12PasswordFile, "PKCS#12 password file")
        : randomBytes(12).toString("base64url")
      : undefined;
    await withCa(opts, async (ca) => {
      const { issued, files } = await issueToFiles(
        ca,
        {
          profile,
          name,
          sans,
          keyType,
          actor: cliActor(),
          ...(opts.ou ? { organizationalUnit: opts.ou } : {}),
          ...(ttlMs ? { ttlMs } : {}),
        },
        {
          outDir: opts.out,
          force: opts.force ?? false,
          ...(p12Password ? { p12: { password: p12Password, legacy: opts.p12Legacy ?? false } } : {}),
        },
      );
      for (const w of issued.warnings) note(`mtls: warning: ${w}`);
      const c = issued.certificate;
      if (opts.json) {
        out(resultJson(issued.record, files, p12Password && !opts.p12PasswordFile ? { p12Password } : {}));
        return;
      }
      out(`issued ${profile} certificate "${name}"  serial ${c.serial}  until ${isoDay(c.notAfter)}`);
      if (c.sans.length) out(`  SANs: ${c.sans.map(formatSan).join(", ")}`);
      out(`  ${files.cert}`);
      if (files.key) out(`  ${files.key} (private key, 0600)`);
      if (files.p12) out(`  ${files.p12}${opts.p12Legacy ? " (legacy 3DES/SHA-1)" : ""}`);
      out(`  ${files.ca} (root CA: the trust anchor)`);
      if (p12Password && !opts.p12PasswordFile) out(`PKCS#12 password (shown once): ${p12Password}`);
    });
  });
}

export function registerSign(program: Command): void {
  const cmd = program
    .command("sign")
    .description("sign a PKCS#10 certificate signing request")
    .argument("<csr>", "CSR file (PEM or DER)")
    .option("--profile <profile>", "server, client or peer", "client")
    .option("--name <name>", "name to file it under (default: the CSR's CN)")
    .option("--ttl <duration>", "lifetime, e.g. 30d (default per profile)")
    .option("--out <file>", "certificate file to write (a folder: NAME.crt in it)", ".")
    .option("--force", "replace an existing file")
    .option("--json", "print the result as JSON");
  addSanOptions(cmd);
  addStateOption(cmd);
  addCaKeyOptions(cmd);
  cmd.action(async (csrFile: string, opts: SignOpts) => {
    const profile = parseProfile(opts.profile);
    const csr = await parseCsr(readFileOrThrow(csrFile, "CSR"));
    const name = opts.name ?? csr.commonName;
    if (!name) throw new MtlsError("E_BAD_CSR", "the CSR has no common name: pass --name");
    if (!opts.name) {
      try {
        validateLeafName(name);
      } catch {
        throw new MtlsError(
          "E_USAGE",
          `the CSR's common name "${name}" cannot be used as a name: pass --name`,
        );
      }
    }
    const extra = sansFrom(opts);
    const sans = [...csr.sans, ...extra.filter((e) => !csr.sans.some((s) => formatSan(s) === formatSan(e)))];
    const ttlMs = opts.ttl ? parseDuration(opts.ttl, "--ttl") : undefined;
    const isDir = isDirectory(opts.out);
    for (const oid of csr.ignoredExtensions)
      note(`mtls: note: the CSR's extension ${oid} is not copied (the profile decides)`);
    await withCa(opts, async (ca) => {
      const { issued, files } = await issueToFiles(
        ca,
        { profile, name, sans, spki: csr.spki, actor: cliActor(), ...(ttlMs ? { ttlMs } : {}) },
        {
          outDir: isDir ? opts.out : ".",
          ...(isDir ? {} : { certFile: opts.out }),
          force: opts.force ?? false,
        },
      );
      for (const w of issued.warnings) note(`mtls: warning: ${w}`);
      const c = issued.certificate;
      if (opts.json) {
        out(resultJson(issued.record, files));
        return;
      }
      out(`signed ${profile} certificate "${name}"  serial ${c.serial}  until ${isoDay(c.notAfter)}`);
      out(`  ${files.cert}`);
      out(`  ${files.ca} (root CA: the trust anchor)`);
    });
  });
}

/** What `issue --json` and `sign --json` print. */
function resultJson(
  rec: CertificateRecord,
  files: Delivered["files"],
  extra: Record<string, string> = {},
): string {
  const { serial, subject, sans, notAfter, fingerprint } = rec;
  return JSON.stringify({ serial, subject, sans, notAfter, fingerprint, files, ...extra }, null, 2);
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
