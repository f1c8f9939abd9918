import type { Logger } from "pino";

/** The identity of a peer as an audit line records it (never its key, never its certificate body). */
export interface AuditIdentity {
  subject: string;
  sans: string[];
  serial: string;
  fingerprint: string;
}

/** One connection through a tunnel, from accept to close. */
export interface ConnectionAuditFields {
  tunnel: string;
  /** Where the connection came from: "203.0.113.7:51234", "[::1]:4000" or "unix:/run/x.sock". */
  peer: string;
  /** Where it went, when it got that far. */
  target?: string;
  /** The verified certificate of the TLS peer, when there was one. */
  identity?: AuditIdentity;
  allowed: boolean;
  /**
   * Refused: the refusal reason (no_certificate, unknown_ca, expired, revoked, not_allowed, ...).
   * Allowed: how the connection ended (closed, idle_timeout, max_lifetime, revoked, shutdown,
   * target_unreachable, error).
   */
  reason: string;
  /** Words for people: the policy's decision, the verification error, the socket error. */
  detail?: string;
  /** The policy rule that allowed it. */
  rule?: string;
  /** Server name the peer asked for (SNI). */
  serverName?: string;
  /**
   * FTP tunnels (`--protocol ftp`): whether this was a control or a data connection, and the number
   * (per tunnel end) of the control session it belongs to.
   */
  ftp?: { channel: "control" | "data"; session: number };
  /** Whether TLS resumed an earlier session. */
  resumed?: boolean;
  /** Bytes read from the listening side / written to it. */
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  /** When the connection was accepted. */
  startedAt: Date;
}

/** Writes one JSON line `{"event":"connection", ...}` (pino adds `time`, the moment it ended). */
export function connectionEvent(logger: Logger, fields: ConnectionAuditFields): void {
  const { startedAt, ...rest } = fields;
  const line = { event: "connection", ...rest, startedAt: startedAt.toISOString() };
  const msg = fields.allowed
    ? `connection ${fields.reason} after ${fields.durationMs} ms`
    : `connection refused: ${fields.reason}`;
  if (fields.allowed) logger.info(line, msg);
  else logger.warn(line, msg);
}
