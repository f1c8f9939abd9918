/**
 * Server identity checks (RFC 9525, which replaces RFC 6125): the name the client meant to reach
 * against the certificate's subjectAltName. The subject's CN is never consulted (RFC 9525 §6.3 leaves
 * it to legacy clients; we are not one): a certificate without a matching dNSName or iPAddress SAN
 * does not match, even if its CN equals the server name.
 */

export type ServerName =
  | { kind: "dns"; name: string }
  | { kind: "ip"; bytes: Uint8Array }
  | { kind: "invalid" };

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function parseIpv4(text: string): Uint8Array | null {
  if (!IPV4.test(text)) return null;
  return new Uint8Array(text.split(".").map(Number));
}

/** An IPv6 literal (RFC 4291 §2.2 text forms, optionally in brackets, no zone id) as 16 bytes. */
function parseIpv6(input: string): Uint8Array | null {
  const text = input.startsWith("[") && input.endsWith("]") ? input.slice(1, -1) : input;
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i] as string;
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIpv4(piece);
        if (!v4) return null;
        out.push(((v4[0] as number) << 8) | (v4[1] as number), ((v4[2] as number) << 8) | (v4[3] as number));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(piece)) return null;
        out.push(Number.parseInt(piece, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0] as string);
  const tail = halves.length === 2 ? groups(halves[1] as string) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

/** Classifies the name the client connects to: an IPv4/IPv6 literal, a DNS name (lower-cased, no trailing dot), or neither. */
export function parseServerName(serverName: string): ServerName {
  const v4 = parseIpv4(serverName);
  if (v4) return { kind: "ip", bytes: v4 };
  if (serverName.includes(":")) {
    const v6 = parseIpv6(serverName);
    return v6 ? { kind: "ip", bytes: v6 } : { kind: "invalid" };
  }
  const name = (serverName.endsWith(".") ? serverName.slice(0, -1) : serverName).toLowerCase();
  const labels = name.split(".");
  // A-labels only (the caller converts IDNs, as URL does); no wildcards, no empty labels; an all-numeric
  // last label would make it an IPv4 address in URL terms (e.g. "127.1"), never a host name.
  if (name.length === 0 || name.length > 253 || !/^[a-z0-9_.-]+$/.test(name)) return { kind: "invalid" };
  if (
    labels.some((l) => l.length === 0 || l.length > 63) ||
    /^\d+$/.test(labels[labels.length - 1] as string)
  ) {
    return { kind: "invalid" };
  }
  return { kind: "dns", name };
}

/**
 * True when the SAN dNSName `pattern` covers the DNS name `host` (already lower-case). A wildcard is
 * honoured only as the entire left-most label followed by at least two labels ("*.example.com"), and
 * stands for exactly one non-empty label: "*.example.com" covers "a.example.com", not "a.b.example.com"
 * nor "example.com"; partial wildcards ("f*.example.com") and wildcards elsewhere never match.
 */
export function dnsNameMatches(pattern: string, host: string): boolean {
  let p = pattern.toLowerCase();
  if (p.endsWith(".")) p = p.slice(0, -1);
  if (p.length === 0 || p.split(".").some((l) => l.length === 0)) return false;
  if (p.startsWith("*.")) {
    const rest = p.slice(2);
    if (rest.includes("*") || !rest.includes(".")) return false;
    const dot = host.indexOf(".");
    return dot > 0 && host.slice(dot + 1) === rest;
  }
  return !p.includes("*") && p === host;
}

/** Name-constraint subtree match for dNSName (RFC 5280 §4.2.1.10): "example.com" covers itself and
 * every subdomain, ".example.com" only subdomains, "" everything. */
export function dnsWithinSubtree(name: string, base: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, "");
  const b = base.toLowerCase();
  if (b === "") return true;
  if (b.startsWith(".")) return n.endsWith(b);
  return n === b || n.endsWith(`.${b}`);
}
