import { MtlsError } from "../errors.js";
import * as ext from "../pki/extensions.js";
import type { KeyType } from "../pki/keys.js";
import type { San } from "../pki/names.js";

/** What a leaf certificate may be issued as. */
export const LEAF_PROFILES = ["server", "client", "peer"] as const;
export type LeafProfile = (typeof LEAF_PROFILES)[number];

export function parseProfile(text: string): LeafProfile {
  if (!(LEAF_PROFILES as readonly string[]).includes(text)) {
    throw new MtlsError("E_PROFILE", `unknown profile "${text}" (one of ${LEAF_PROFILES.join(", ")})`);
  }
  return text as LeafProfile;
}

/** Default lifetimes: clients short (renewed automatically), servers and peers a quarter. */
export const DEFAULT_TTL_MS: Record<LeafProfile, number> = {
  server: 90 * 86_400_000,
  client: 30 * 86_400_000,
  peer: 90 * 86_400_000,
};

/** URLs published by `mtls ca serve` when the CA was given a public URL. */
export function caUrls(publicUrl: string) {
  const base = publicUrl.replace(/\/+$/, "");
  return {
    crl: `${base}/crl`,
    rootCrl: `${base}/crl/root`,
    ocsp: `${base}/ocsp`,
    intermediateCert: `${base}/ca/intermediate.crt`,
    rootCert: `${base}/ca/root.crt`,
  };
}

export interface LeafExtensionInput {
  profile: LeafProfile;
  spki: Uint8Array;
  keyType: KeyType;
  issuerSpki: Uint8Array;
  sans: San[];
  publicUrl?: string | undefined;
}

/** The extensions of a leaf (PKI-PROFILE "Leaf certificates"); nothing a requester asked for beyond SANs. */
export function leafExtensions(input: LeafExtensionInput): Uint8Array[] {
  const { profile, sans } = input;
  if (profile === "server" && !sans.some((s) => s.type === "dns" || s.type === "ip")) {
    throw new MtlsError(
      "E_PROFILE",
      "a server certificate needs at least one DNS name or IP address (--dns, --ip)",
    );
  }
  const uris = sans.filter((s) => s.type === "uri" && s.value.startsWith("spiffe:"));
  if (uris.length > 1)
    throw new MtlsError("E_BAD_SAN", "a SPIFFE identity carries exactly one spiffe:// URI");
  let usage = ext.KEY_USAGE.digitalSignature;
  // RSA key transport (TLS 1.2 RSA key exchange) needs keyEncipherment on server keys.
  if (profile !== "client" && input.keyType.startsWith("rsa")) usage |= ext.KEY_USAGE.keyEncipherment;
  const ekus = {
    server: [ext.EKU.serverAuth],
    client: [ext.EKU.clientAuth],
    peer: [ext.EKU.serverAuth, ext.EKU.clientAuth],
  }[profile];
  const list = [
    ext.basicConstraints(false),
    ext.keyUsage(usage),
    ext.extendedKeyUsage(ekus),
    ext.subjectKeyIdentifier(input.spki),
    ext.authorityKeyIdentifier(input.issuerSpki),
  ];
  if (sans.length) list.push(ext.subjectAltName(sans));
  if (input.publicUrl) {
    const urls = caUrls(input.publicUrl);
    list.push(
      ext.crlDistributionPoints([urls.crl]),
      ext.authorityInfoAccess([urls.ocsp], [urls.intermediateCert]),
    );
  }
  return list;
}

export function warningsFor(profile: LeafProfile, keyType: KeyType): string[] {
  return keyType === "ed25519"
    ? [
        `Ed25519 ${profile} certificates are refused by Chromium and macOS in TLS; prefer ec-p256 for browsers`,
      ]
    : [];
}

/** Leaf names become file names and identities: keep them to a safe alphabet. */
export function validateLeafName(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(name)) {
    throw new MtlsError(
      "E_USAGE",
      `invalid name "${name}" (1-64 characters: letters, digits, '.', '_', '@', '-'; not starting with a symbol)`,
    );
  }
  return name;
}
