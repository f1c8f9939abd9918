import type { PeerIdentity } from "./types.js";

/** What logs and upstreams are told of a verified peer: never its key, never its certificate body. */
export interface IdentitySummary {
  subject: string;
  /** "dns:x", "ip:x", "email:x", "uri:x", in that order. */
  sans: string[];
  serial: string;
  fingerprint: string;
}

/** The summary of an identity, for audit lines (tunnels, gateway) and the gateway's X-Client-Identity. */
export function summarizeIdentity(id: PeerIdentity): IdentitySummary {
  return {
    subject: id.subject,
    sans: [
      ...id.dnsNames.map((v) => `dns:${v}`),
      ...id.ips.map((v) => `ip:${v}`),
      ...id.emails.map((v) => `email:${v}`),
      ...id.uris.map((v) => `uri:${v}`),
    ],
    serial: id.serial,
    fingerprint: id.fingerprint,
  };
}
