import { MtlsError } from "../errors.js";
import type { CertificateAuthority } from "./authority.js";
import { validateLeafName } from "./profiles.js";

/** The CA's settings a person may read and change, by the names the CLI uses, with their store keys. */
export const CA_SETTING_KEYS = {
  name: "ca.name",
  "public-url": "ca.publicUrl",
  admins: "ca.admins",
} as const;
export type CaSettingName = keyof typeof CA_SETTING_KEYS;

/** Where `mtls ca serve` is reachable: http(s)://host[:port][/path]. The rule `mtls init` applies. */
export function validatePublicUrl(url: string): string {
  if (!/^https?:\/\/[^\s/]+/.test(url) || /\s/.test(url)) {
    throw new MtlsError("E_USAGE", `invalid public URL "${url}" (expected http(s)://host[:port][/path])`);
  }
  return url;
}

/** A comma-separated list of names as stored in `ca.admins`, without blanks. */
export function parseNameList(text: string | undefined): string[] {
  return (text ?? "")
    .split(",")
    .map((n) => n.trim())
    .filter((n) => n.length > 0);
}

/** The value of a CA setting (undefined when unset). */
export async function getCaSetting(
  ca: CertificateAuthority,
  name: CaSettingName,
): Promise<string | undefined> {
  const key = CA_SETTING_KEYS[name];
  if (!key)
    throw new MtlsError("E_USAGE", `unknown setting "${name}" (${Object.keys(CA_SETTING_KEYS).join(", ")})`);
  return ca.store.getSetting(key);
}

/**
 * Sets the URL that goes into every certificate issued from now on (CRL distribution point, OCSP and
 * caIssuers); `null` removes it. Certificates already issued keep theirs. A process that has the CA
 * open already (a running `mtls ca serve`) picks it up when it reopens the CA.
 */
export async function setPublicUrl(
  ca: CertificateAuthority,
  url: string | null,
  actor: string,
): Promise<void> {
  const value = url === null ? "" : validatePublicUrl(url);
  await setAudited(ca, "ca.publicUrl", value, actor);
  ca.settings.publicUrl = value || undefined;
}

/** Replaces the list of admin names (`ca.admins`): holders of valid client/peer certificates of these names. */
export async function setAdmins(ca: CertificateAuthority, names: string[], actor: string): Promise<string[]> {
  const list = [...new Set(names.map((n) => validateLeafName(n.trim())))];
  await setAudited(ca, "ca.admins", list.join(","), actor);
  return list;
}

async function setAudited(
  ca: CertificateAuthority,
  key: string,
  value: string,
  actor: string,
): Promise<void> {
  const now = ca.clock();
  await ca.store.transaction(async (tx) => {
    const previous = await tx.getSetting(key);
    await tx.setSetting(key, value);
    await tx.appendAudit({
      at: now,
      actor,
      action: "ca.setting",
      subject: null,
      details: { key, value, previous: previous ?? null },
    });
  });
}
