import type { AuditIdentity } from "../observe/index.js";
import { type PeerIdentity, summarizeIdentity } from "../policy/index.js";
import type { RefusalReason } from "../tls/index.js";
import { formatEndpoint } from "./address.js";

/** Every refusal reason, so dashboards see zeros rather than missing series. */
export const REFUSAL_REASONS: readonly RefusalReason[] = [
  "no_certificate",
  "unknown_ca",
  "expired",
  "revoked",
  "bad_purpose",
  "not_allowed",
  "handshake_timeout",
  "handshake_error",
  "bad_name",
];

export function auditIdentity(id: PeerIdentity): AuditIdentity {
  return summarizeIdentity(id);
}

/** "203.0.113.7:51234", "[::1]:4000", or "unix:<listening path>". */
export function peerOf(
  socket: { remoteAddress?: string | undefined; remotePort?: number | undefined },
  unixPath?: string,
): string {
  if (!socket.remoteAddress) return unixPath ? `unix:${unixPath}` : "unknown";
  return formatEndpoint(
    socket.remoteAddress.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, ""),
    socket.remotePort,
  );
}

/** The reason a failed handshake is counted under. */
export function handshakeFailureReason(err: NodeJS.ErrnoException): RefusalReason {
  if (err.code === "ERR_TLS_HANDSHAKE_TIMEOUT") return "handshake_timeout";
  const text = `${err.code ?? ""} ${err.message ?? ""}`.toLowerCase();
  if (text.includes("peer did not return a certificate") || text.includes("certificate required"))
    return "no_certificate";
  if (text.includes("certificate has expired") || text.includes("cert_has_expired")) return "expired";
  if (text.includes("certificate revoked") || text.includes("cert_revoked")) return "revoked";
  if (text.includes("unknown ca") || text.includes("unable to get") || text.includes("self signed"))
    return "unknown_ca";
  return "handshake_error";
}

/** The one-line description of a handshake error: OpenSSL's reason when there is one. */
export function describeTlsError(err: NodeJS.ErrnoException & { reason?: string }): string {
  return err.reason ?? err.code ?? err.message;
}
