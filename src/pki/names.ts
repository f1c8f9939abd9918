import "reflect-metadata";
import { isIP } from "node:net";
import { Name } from "@peculiar/x509";
import { MtlsError } from "../errors.js";

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

/** DER of a distinguished name, most significant first: C, O, OU…, CN. */
export function buildName(fields: SubjectFields): Uint8Array {
  const rdns: Record<string, string[]>[] = [];
  if (fields.country) {
    if (!/^[A-Z]{2}$/.test(fields.country))
      throw new MtlsError("E_BAD_INPUT", `invalid country code "${fields.country}"`);
    rdns.push({ C: [fields.country] });
  }
  if (fields.organization) rdns.push({ O: [checkAttr("organization", fields.organization)] });
  for (const ou of fields.organizationalUnit ?? []) rdns.push({ OU: [checkAttr("organizational unit", ou)] });
  if (fields.commonName) rdns.push({ CN: [checkAttr("common name", fields.commonName)] });
  return new Uint8Array(new Name(rdns).toArrayBuffer());
}

function checkAttr(what: string, value: string): string {
  // RFC 5280 upper bounds: 64 characters for CN, O and OU.
  const hasControl = [...value].some((ch) => (ch.codePointAt(0) ?? 0) < 0x20 || ch === "\u007f");
  if (value.length === 0 || value.length > 64 || hasControl) {
    throw new MtlsError("E_BAD_INPUT", `invalid ${what} "${value}" (1 to 64 printable characters)`);
  }
  return value;
}

export function nameToString(der: Uint8Array): string {
  return new Name(der).toString();
}
