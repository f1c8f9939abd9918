import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import type { TLSSocket } from "node:tls";
import type { CertInfo } from "../pki/certinfo.js";
import type { PeerIdentity } from "../policy/types.js";
import { identityFromCert, peerCertificateChain } from "./identity.js";
import type {
  PeerVerification,
  RefusalReason,
  RevocationStatus,
  VerifyPeer,
  VerifyPeerOptions,
} from "./types.js";

/**
 * OpenSSL's verification results (as Node reports them in `socket.authorizationError`) by the
 * reason mtls counts. Anything not listed is a handshake_error with the code in the detail.
 */
const REASON_BY_CODE: Record<string, RefusalReason> = {
  UNABLE_TO_GET_ISSUER_CERT: "unknown_ca",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unknown_ca",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "unknown_ca",
  SELF_SIGNED_CERT_IN_CHAIN: "unknown_ca",
  DEPTH_ZERO_SELF_SIGNED_CERT: "unknown_ca",
  CERT_SIGNATURE_FAILURE: "unknown_ca",
  CERT_UNTRUSTED: "unknown_ca",
  CERT_REJECTED: "unknown_ca",
  INVALID_CA: "unknown_ca",
  CERT_HAS_EXPIRED: "expired",
  CERT_NOT_YET_VALID: "expired",
  CERT_REVOKED: "revoked",
  INVALID_PURPOSE: "bad_purpose",
  // Node's own checkServerIdentity on a client socket (servername / host vs the server's SANs).
  ERR_TLS_CERT_ALTNAME_INVALID: "bad_name",
};

const EKU_FOR = { client: "clientAuth", server: "serverAuth" } as const;

const NO_REVOCATION: RevocationStatus = { status: "unknown", source: "none" };

/** The code in `socket.authorizationError`: Node puts a string there although its types say Error. */
function authorizationCode(socket: TLSSocket): string {
  const err = socket.authorizationError as unknown;
  if (typeof err === "string") return err;
  if (err && typeof err === "object") {
    const e = err as { code?: unknown; message?: unknown };
    return String(e.code ?? e.message ?? "UNKNOWN");
  }
  return "UNKNOWN";
}

/**
 * Decides whether the peer of a finished handshake may pass, for endpoints created with
 * `rejectUnauthorized: false` (so that a refusal has a reason we can log and count): OpenSSL's
 * verdict first, then the leaf's extended key usage for the purpose, the names a client expects of
 * its server, and revocation. Never throws; every refusal carries a reason and a detail line.
 */
export const verifyPeer: VerifyPeer = async (socket, opts) => {
  let chain: CertInfo[];
  try {
    chain = peerCertificateChain(socket, { leafOnly: opts.peerChain === "leaf" });
  } catch (err) {
    return refuse("handshake_error", `unparseable peer certificate: ${(err as Error).message}`);
  }
  if (chain.length === 0 && socket.isSessionReused()) {
    // A resumed client session: Node shows no peer certificate. The session was authenticated
    // when it was made; check that certificate again if the caller kept it.
    if (!opts.resumedPeerChain?.length) {
      return refuse(
        "handshake_error",
        `resumed TLS session without the ${opts.purpose}'s certificate (keep the chain of the connection that got the session and pass it as resumedPeerChain)`,
      );
    }
    chain = opts.resumedPeerChain;
  }
  const leaf = chain[0];
  if (!leaf) {
    return refuse("no_certificate", `the ${opts.purpose} presented no certificate`);
  }
  const identity = identityFromCert(leaf);
  const who = `${leaf.subject} (serial ${leaf.serial})`;

  if (!socket.authorized) {
    const code = authorizationCode(socket);
    const reason = REASON_BY_CODE[code] ?? "handshake_error";
    return refuse(reason, `${who}: ${describeCode(code, leaf)}`, identity);
  }

  const eku = EKU_FOR[opts.purpose];
  if (!leaf.extKeyUsage.includes(eku)) {
    const has = leaf.extKeyUsage.length ? `EKU ${leaf.extKeyUsage.join(", ")}` : "no extended key usage";
    return refuse(
      "bad_purpose",
      `${who} is not a ${opts.purpose} certificate (${has}; ${eku} needed)`,
      identity,
    );
  }

  const now = (opts.clock ?? (() => new Date()))();
  if (now < leaf.notBefore || now > leaf.notAfter) {
    // OpenSSL checked at the handshake; a resumed session may outlive the certificate.
    return refuse(
      "expired",
      `${who} is valid from ${leaf.notBefore.toISOString()} to ${leaf.notAfter.toISOString()}`,
      identity,
    );
  }

  if (opts.purpose === "server") {
    const nameProblem = checkExpectedNames(leaf, opts);
    if (nameProblem) return refuse("bad_name", `${who} ${nameProblem}`, identity);
  }

  let revocation = NO_REVOCATION;
  if (opts.revocation) {
    try {
      revocation = await opts.revocation.check(leaf, chain[1]);
    } catch (err) {
      // A checker reports what it cannot find out as "unknown"; a throw is a fault: fail closed.
      return refuse(
        "handshake_error",
        `${who}: revocation check failed: ${(err as Error).message}`,
        identity,
      );
    }
    if (revocation.status === "revoked") {
      const when = revocation.revokedAt ? ` at ${revocation.revokedAt.toISOString()}` : "";
      const why = revocation.reason ? ` (${revocation.reason})` : "";
      return refuse("revoked", `${who} was revoked${when}${why} [${revocation.source}]`, identity);
    }
  }
  return { ok: true, identity, leaf, revocation, chain };
};

function refuse(reason: RefusalReason, detail: string, identity?: PeerIdentity): PeerVerification {
  return identity ? { ok: false, reason, detail, identity } : { ok: false, reason, detail };
}

function describeCode(code: string, leaf: CertInfo): string {
  switch (code) {
    case "CERT_HAS_EXPIRED":
      return `certificate expired (notAfter ${leaf.notAfter.toISOString()}) [${code}]`;
    case "CERT_NOT_YET_VALID":
      return `certificate not yet valid (notBefore ${leaf.notBefore.toISOString()}) [${code}]`;
    case "CERT_REVOKED":
      return `certificate revoked (CRL) [${code}]`;
    case "INVALID_PURPOSE":
      return `certificate not valid for this purpose (EKU: ${leaf.extKeyUsage.join(", ") || "none"}) [${code}]`;
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return `certificate names do not match the server name [${code}]`;
    default:
      return REASON_BY_CODE[code] === "unknown_ca"
        ? `not issued by a trusted CA (issuer ${leaf.issuer}) [${code}]`
        : `certificate verification failed [${code}]`;
  }
}

/** For a server peer: undefined when it carries one of the expected names, else what is wrong. */
function checkExpectedNames(leaf: CertInfo, opts: VerifyPeerOptions): string | undefined {
  const dns = opts.expectDns ?? [];
  const uris = opts.expectUri ?? [];
  if (dns.length === 0 && uris.length === 0) return undefined;
  const x509 = new X509Certificate(leaf.der);
  for (const name of dns) {
    const hit = isIP(name)
      ? x509.checkIP(name)
      : x509.checkHost(name, { subject: "never", wildcards: true, partialWildcards: false });
    if (hit !== undefined) return undefined;
  }
  const peerUris = leaf.sans.filter((s) => s.type === "uri").map((s) => normalizeUri(s.value));
  if (uris.some((u) => peerUris.includes(normalizeUri(u)))) return undefined;
  const expected = [...dns.map((d) => `DNS ${d}`), ...uris.map((u) => `URI ${u}`)].join(" or ");
  const carried = leaf.sans.map((s) => `${s.type} ${s.value}`).join(", ") || "no subject alternative names";
  return `carries none of the expected names (${expected}); it has ${carried}`;
}

/** Scheme and authority are case-insensitive; the rest compares exactly. */
function normalizeUri(uri: string): string {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*)(.*)$/s.exec(uri);
  return m ? (m[1] as string).toLowerCase() + (m[2] as string) : uri;
}
