import type { CertInfo } from "../pki/certinfo.js";
import { certToPem } from "../pki/certinfo.js";
import { type PeerIdentity, summarizeIdentity } from "../policy/index.js";

/**
 * The headers that carry a client's identity to upstreams: RFC 9440 (`Client-Cert`,
 * `Client-Cert-Chain`), Envoy's `x-forwarded-client-cert` (XFCC), and mtls's compact
 * `X-Client-Identity`. Whatever a client sends under these names is always removed first, so an
 * upstream can trust them.
 */

export type IdentityHeaderFormat = "rfc9440" | "xfcc" | "both";

export const IDENTITY_HEADER_FORMATS: readonly IdentityHeaderFormat[] = ["rfc9440", "xfcc", "both"];

/** Removed from every client request, whatever their case and however often they appear. */
export const STRIPPED_HEADERS: ReadonlySet<string> = new Set([
  "client-cert",
  "client-cert-chain",
  "x-client-identity",
  "x-forwarded-client-cert",
  // Set by the gateway itself from the connection: never trusted from the client.
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
  "forwarded",
]);

/** An RFC 8941 byte sequence: `:BASE64:`. */
const sfBinary = (der: Uint8Array): string => `:${Buffer.from(der).toString("base64")}:`;

/** The JSON of X-Client-Identity, ASCII only (non-ASCII escaped as \uXXXX) so it is a valid header value. */
export function clientIdentityJson(id: PeerIdentity): string {
  const value = summarizeIdentity(id);
  return JSON.stringify(value).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** An XFCC value: quoted when it holds `,`, `;`, `=` or `"` (inner quotes escaped). */
function xfccValue(v: string): string {
  return /[,;="\s]/.test(v) ? `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"` : v;
}

/**
 * Envoy's x-forwarded-client-cert element for this client: `By` (the gateway's URI SAN, when it has
 * one), `Hash` (SHA-256 of the client certificate, hex), `Cert` and `Chain` (URL-encoded PEM, quoted as
 * Envoy writes them; Chain from the leaf up),
 * `Subject`, `URI` and `DNS` (one pair per SAN).
 */
export function xfccHeader(id: PeerIdentity, chain: readonly CertInfo[], by: string | undefined): string {
  const parts: string[] = [];
  if (by) parts.push(`By=${xfccValue(by)}`);
  parts.push(`Hash=${id.fingerprint}`);
  parts.push(`Cert="${encodeURIComponent(certToPem(id.der))}"`);
  if (chain.length > 1) {
    parts.push(`Chain="${encodeURIComponent(chain.map((c) => certToPem(c.der)).join(""))}"`);
  }
  parts.push(
    `Subject=${JSON.stringify(id.subject).replace(/[\u007f-\uffff]/g, (c) => encodeURIComponent(c))}`,
  );
  for (const uri of id.uris) parts.push(`URI=${xfccValue(uri)}`);
  for (const dns of id.dnsNames) parts.push(`DNS=${xfccValue(dns)}`);
  return parts.join(";");
}

/** The headers last made for an identity (a kept-alive connection sends the same ones every request). */
interface Made {
  chain: readonly CertInfo[];
  format: IdentityHeaderFormat;
  by: string | undefined;
  headers: Readonly<Record<string, string>>;
}

const made = new WeakMap<PeerIdentity, Made>();

const sameChain = (a: readonly CertInfo[], b: readonly CertInfo[]): boolean =>
  a.length === b.length && a.every((c, i) => c === b[i] || c.der === b[i]?.der);

/**
 * The identity headers for a verified client: `chain` is the peer chain leaf first (trust anchors
 * are left out of Client-Cert-Chain, as RFC 9440 allows). Made once per identity and reused while
 * the chain, format and `by` stay the same (the result is frozen: copy it, do not change it).
 */
export function identityHeaders(
  id: PeerIdentity,
  chain: readonly CertInfo[],
  format: IdentityHeaderFormat,
  by?: string,
): Readonly<Record<string, string>> {
  const hit = made.get(id);
  if (hit && hit.format === format && hit.by === by && sameChain(hit.chain, chain)) return hit.headers;
  const headers: Record<string, string> = {};
  if (format === "rfc9440" || format === "both") {
    headers["Client-Cert"] = sfBinary(id.der);
    const intermediates = chain.slice(1).filter((c) => !c.selfSigned);
    if (intermediates.length)
      headers["Client-Cert-Chain"] = intermediates.map((c) => sfBinary(c.der)).join(", ");
  }
  if (format === "xfcc" || format === "both") headers["X-Forwarded-Client-Cert"] = xfccHeader(id, chain, by);
  headers["X-Client-Identity"] = clientIdentityJson(id);
  const frozen = Object.freeze(headers);
  made.set(id, { chain: [...chain], format, by, headers: frozen });
  return frozen;
}
