import "reflect-metadata";
import { createHash } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import { SubjectPublicKeyInfo } from "@peculiar/asn1-x509";
import {
  AuthorityInfoAccessExtension,
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  CRLDistributionPointsExtension,
  ExtendedKeyUsageExtension,
  Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
} from "@peculiar/x509";
import type { San } from "./names.js";

/** The DER of one X.509 extension, ready to go into a TBSCertificate. */
export type ExtensionDer = Uint8Array;

export const EKU = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  ocspSigning: "1.3.6.1.5.5.7.3.9",
} as const;

export const KEY_USAGE = KeyUsageFlags;

const der = (ext: Extension): ExtensionDer => new Uint8Array(ext.rawData);

/** RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's bytes, as hex. */
export function keyIdentifier(spki: Uint8Array): string {
  const info = AsnConvert.parse(spki, SubjectPublicKeyInfo);
  return createHash("sha1").update(new Uint8Array(info.subjectPublicKey)).digest("hex");
}

export const basicConstraints = (ca: boolean, pathLen?: number): ExtensionDer =>
  der(new BasicConstraintsExtension(ca, pathLen, true));

export const keyUsage = (flags: number): ExtensionDer => der(new KeyUsagesExtension(flags, true));

export const extendedKeyUsage = (oids: string[]): ExtensionDer =>
  der(new ExtendedKeyUsageExtension(oids, false));

export const subjectKeyIdentifier = (spki: Uint8Array): ExtensionDer =>
  der(new SubjectKeyIdentifierExtension(keyIdentifier(spki)));

export const authorityKeyIdentifier = (issuerSpki: Uint8Array): ExtensionDer =>
  der(new AuthorityKeyIdentifierExtension(keyIdentifier(issuerSpki)));

/** SAN is critical only when the subject is empty (RFC 5280 §4.2.1.6). */
export function subjectAltName(sans: San[], subjectEmpty = false): ExtensionDer {
  const names = sans.map((s) => ({ type: s.type === "uri" ? ("url" as const) : s.type, value: s.value }));
  return der(new SubjectAlternativeNameExtension(names, subjectEmpty));
}

export const crlDistributionPoints = (urls: string[]): ExtensionDer =>
  der(new CRLDistributionPointsExtension(urls));

export const authorityInfoAccess = (ocsp: string[], caIssuers: string[]): ExtensionDer =>
  der(new AuthorityInfoAccessExtension({ ocsp, caIssuers }));

/** id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): the OCSP responder's own certificate is not checked. */
export const ocspNoCheck = (): ExtensionDer =>
  der(new Extension("1.3.6.1.5.5.7.48.1.5", false, new Uint8Array([0x05, 0x00])));
