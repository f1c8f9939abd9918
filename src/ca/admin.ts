import { randomBytes } from "node:crypto";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../config/files.js";
import type { CertificateRecord } from "../store/index.js";
import type { CertificateAuthority } from "./authority.js";
import { issueToFiles } from "./deliver.js";
import { DEFAULT_TTL_MS, validateLeafName } from "./profiles.js";
import { CA_SETTING_KEYS, parseNameList, setAdmins } from "./settings.js";

/**
 * The admin role of the CA service (docs/api.md): a valid, unexpired client or peer certificate of
 * this CA whose inventory name is listed in the `ca.admins` setting.
 */

/** The name `mtls init` gives the first admin. */
export const DEFAULT_ADMIN_NAME = "admin";

/** The names listed in `ca.admins`. */
export async function adminNames(ca: CertificateAuthority): Promise<string[]> {
  return parseNameList(await ca.store.getSetting(CA_SETTING_KEYS.admins));
}

/** Whether a certificate may act as admin at ca.clock(): re-read from the store, so a revocation counts at once. */
export async function isAdmin(ca: CertificateAuthority, rec: CertificateRecord): Promise<boolean> {
  const current = await ca.store.getCertificate(rec.serial);
  if (!current || current.fingerprint !== rec.fingerprint) return false;
  if (!usableAdminCert(ca, current)) return false;
  return (await adminNames(ca)).includes(current.name);
}

function usableAdminCert(ca: CertificateAuthority, rec: CertificateRecord): boolean {
  const now = ca.clock();
  return (
    rec.status === "valid" &&
    (rec.profile === "client" || rec.profile === "peer") &&
    rec.issuerSerial === ca.intermediate.serial &&
    rec.notBefore <= now &&
    now < rec.notAfter
  );
}

export interface EnsureAdminOptions {
  /** Who asked, for the audit log. */
  actor: string;
  /** Name of the admin certificate to create (default "admin"). */
  name?: string;
  /** Where to write NAME.crt, NAME.key, NAME.p12 and NAME.p12.password (default STATE/admin). */
  dir?: string;
  /** Lifetime of a new admin certificate (default: the client profile's, 30 days, or the intermediate's rest). */
  ttlMs?: number;
}

export interface AdminIdentity {
  name: string;
  serial: string;
  /** True when this call issued a new certificate (and wrote the files below). */
  created: boolean;
  files?: { cert: string; key: string; p12: string; password: string; ca: string };
}

/**
 * Makes sure the CA has an admin that can log in. When a name in `ca.admins` has a valid certificate,
 * nothing changes. Otherwise, if a valid client certificate named `name` exists, that name is added
 * to `ca.admins`; else a client certificate `name` is issued into `dir` (NAME.crt leaf + intermediate,
 * NAME.key 0600, NAME.p12 with a generated password in NAME.p12.password 0600; files of an earlier,
 * no longer valid admin are replaced) and its name is added to `ca.admins`.
 */
export async function ensureAdmin(
  ca: CertificateAuthority,
  opts: EnsureAdminOptions,
): Promise<AdminIdentity> {
  const name = validateLeafName(opts.name ?? DEFAULT_ADMIN_NAME);
  const names = await adminNames(ca);
  for (const n of names) {
    const live = (await ca.store.findCertificates({ name: n, status: "valid" })).filter((r) =>
      usableAdminCert(ca, r),
    );
    const newest = live.at(-1);
    if (newest) return { name: n, serial: newest.serial, created: false };
  }
  const withName = [...names.filter((n) => n !== name), name];
  const existing = (await ca.store.findCertificates({ name, status: "valid" }))
    .filter((r) => usableAdminCert(ca, r))
    .at(-1);
  if (existing) {
    await setAdmins(ca, withName, opts.actor);
    return { name, serial: existing.serial, created: false };
  }

  const dir = opts.dir ?? join(ca.paths.dir, "admin");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // By default no longer than the intermediate lives (a young CA with a short-lived intermediate).
  const ttlMs =
    opts.ttlMs ?? Math.min(DEFAULT_TTL_MS.client, ca.intermediate.notAfter.getTime() - ca.clock().getTime());
  const password = randomBytes(18).toString("base64url");
  const passwordFile = join(dir, `${name}.p12.password`);
  // The password first: a crash after it leaves a password without its PKCS#12, never the reverse.
  writeFileAtomic(passwordFile, `${password}\n`, { mode: 0o600, overwrite: true });
  let delivered: Awaited<ReturnType<typeof issueToFiles>>;
  try {
    delivered = await issueToFiles(
      ca,
      { profile: "client", name, sans: [], ttlMs, actor: opts.actor },
      { outDir: dir, force: true, p12: { password } },
    );
  } catch (err) {
    rmSync(passwordFile, { force: true });
    throw err;
  }
  await setAdmins(ca, withName, opts.actor);
  const { files } = delivered;
  return {
    name,
    serial: delivered.issued.record.serial,
    created: true,
    files: {
      cert: files.cert,
      key: files.key as string,
      p12: files.p12 as string,
      password: passwordFile,
      ca: files.ca,
    },
  };
}
