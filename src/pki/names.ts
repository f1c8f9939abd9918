import "reflect-metadata";
import { isIP } from "node:net";
import { Name } from "@peculiar/x509";
import { MtlsError } from "../errors.js";
import { derSequence, derTlv } from "./der.js";

/** A subject alternative name as mtls writes it everywhere: `dns:web.acme.test`, `uri:spiffe://…`. */
export type SanType = "dns" | "ip" | "email" | "uri";
export interface San {
  type: SanType;
  value: string;
}

const LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function validateDnsName(input: string): string {
  const name = input.toLowerCase();
  const labels = name.split(".");
  const [first, ...rest] = labels;
  const ok =
    name.length > 0 &&
    name.length <= 253 &&
    (first === "*" ? rest.length >= 2 : LABEL_RE.test(first ?? "")) &&
    rest.every((l) => LABEL_RE.test(l));
  if (!ok) throw new MtlsError("E_BAD_SAN", `invalid DNS name "${input}"`);
  return name;
}

export function validateEmail(input: string): string {
  const at = input.lastIndexOf("@");
  const local = input.slice(0, at);
  const domain = input.slice(at + 1);
  if (at < 1 || local.length > 64 || /[\s@<>()[\]\\,;:"]/.test(local) || !/^[\x21-\x7e]+$/.test(local)) {
    throw new MtlsError("E_BAD_SAN", `invalid e-mail address "${input}"`);
  }
  try {
    return `${local}@${validateDnsName(domain)}`;
  } catch {
    throw new MtlsError("E_BAD_SAN", `invalid e-mail address "${input}"`);
  }
}

/** URIs must be absolute; SPIFFE IDs must follow the SPIFFE ID rules (lowercase trust domain, a path, nothing else). */
export function validateUri(input: string): string {
  let url: URL;
  try {
    url = new URL(input);
  } catch {
    throw new MtlsError("E_BAD_SAN", `invalid URI "${input}"`);
  }
  if (/\s/.test(input) || !/^[a-z][a-z0-9+.-]*:/i.test(input)) {
    throw new MtlsError("E_BAD_SAN", `invalid URI "${input}"`);
  }
  if (url.protocol === "spiffe:") {
    const m = /^spiffe:\/\/([a-z0-9._-]+)(\/[A-Za-z0-9._/-]*)?$/.exec(input);
    const path = m?.[2] ?? "";
    if (
      !m ||
      path.endsWith("/") ||
      path.split("/").some((seg, i) => i > 0 && (seg === "" || seg === "." || seg === ".."))
    ) {
      throw new MtlsError("E_BAD_SAN", `invalid SPIFFE ID "${input}" (expected spiffe://trust-domain/path)`);
    }
  }
  return input;
}

export function validateIp(input: string): string {
  if (isIP(input) === 0) throw new MtlsError("E_BAD_SAN", `invalid IP address "${input}"`);
  return input;
}

export function makeSan(type: SanType, value: string): San {
  switch (type) {
    case "dns":
      return { type, value: validateDnsName(value) };
    case "ip":
      return { type, value: validateIp(value) };
    case "email":
      return { type, value: validateEmail(value) };
    case "uri":
      return { type, value: validateUri(value) };
  }
}

export const formatSan = (san: San): string => `${san.type}:${san.value}`;

/** Parses "dns:x", "ip:x", "email:x", "uri:x" (as stored and printed). */
export function parseSan(text: string): San {
  const i = text.indexOf(":");
  const type = text.slice(0, i);
  if (i < 0 || !["dns", "ip", "email", "uri"].includes(type)) {
    throw new MtlsError(
      "E_BAD_SAN",
      `invalid subject alternative name "${text}" (expected dns:, ip:, email: or uri:)`,
    );
  }
  return makeSan(type as SanType, text.slice(i + 1));
}

export interface SubjectFields {
  commonName?: string;
  organization?: string;
  organizationalUnit?: string[];
  country?: string;
}

const ATTR_OID = {
  C: [0x06, 0x03, 0x55, 0x04, 0x06],
  O: [0x06, 0x03, 0x55, 0x04, 0x0a],
  OU: [0x06, 0x03, 0x55, 0x04, 0x0b],
  CN: [0x06, 0x03, 0x55, 0x04, 0x03],
} as const;

/** PrintableString when every character allows it (what CAs customarily write), else UTF8String. */
function directoryString(value: string): Uint8Array {
  return /^[A-Za-z0-9 '()+,\-./:=?]*$/.test(value)
    ? derTlv(0x13, Buffer.from(value, "ascii"))
    : derTlv(0x0c, Buffer.from(value, "utf8"));
}

const rdn = (type: keyof typeof ATTR_OID, value: string) =>
  derTlv(0x31, derSequence(new Uint8Array(ATTR_OID[type]), directoryString(value)));

/** DER of a distinguished name, most significant first: C, O, OU…, CN; one attribute per RDN. */
export function buildName(fields: SubjectFields): Uint8Array {
  const rdns: Uint8Array[] = [];
  if (fields.country) {
    if (!/^[A-Z]{2}$/.test(fields.country))
      throw new MtlsError("E_BAD_INPUT", `invalid country code "${fields.country}"`);
    rdns.push(rdn("C", fields.country));
  }
  if (fields.organization) rdns.push(rdn("O", checkAttr("organization", fields.organization)));
  for (const ou of fields.organizationalUnit ?? [])
    rdns.push(rdn("OU", checkAttr("organizational unit", ou)));
  if (fields.commonName) rdns.push(rdn("CN", checkAttr("common name", fields.commonName)));
  return derSequence(...rdns);
}

function checkAttr(what: string, value: string): string {
  // RFC 5280 upper bounds: 64 characters for CN, O and OU.
  const hasControl = [...value].some((ch) => (ch.codePointAt(0) ?? 0) < 0x20 || ch === "\u007f");
  if (value.length === 0 || value.length > 64 || hasControl) {
    throw new MtlsError("E_BAD_INPUT", `invalid ${what} "${value}" (1 to 64 printable characters)`);
  }
  return value;
}

/**
 * The subject buildName() encodes, as RFC 4514 text in the order it is written (the form
 * CertInfo.subject takes), without encoding and parsing it.
 */
export function formatName(fields: SubjectFields): string {
  const parts: string[] = [];
  if (fields.country) parts.push(`C=${escapeRdnValue(fields.country)}`);
  if (fields.organization) parts.push(`O=${escapeRdnValue(fields.organization)}`);
  for (const ou of fields.organizationalUnit ?? []) parts.push(`OU=${escapeRdnValue(ou)}`);
  if (fields.commonName) parts.push(`CN=${escapeRdnValue(fields.commonName)}`);
  return parts.join(", ");
}

/** RFC 4514 §2.4: escape , + " \ < > ; anywhere, # and space at the start, space at the end. */
function escapeRdnValue(value: string): string {
  return value
    .replace(/[,+"\\<>;]/g, "\\$&")
    .replace(/^([# ])/, "\\$1")
    .replace(/ $/, "\\ ");
}

export function nameToString(der: Uint8Array): string {
  return new Name(der as BufferSource).toString();
}
