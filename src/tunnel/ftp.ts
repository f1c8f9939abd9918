/**
 * FTP through mTLS tunnels (`--protocol ftp` on both ends): the protocol pieces.
 *
 * FTP opens a new TCP connection for every listing and transfer, to a port announced on the control
 * connection, so a plain TCP tunnel carries the control connection and nothing else. Here both ends
 * understand just enough FTP to carry passive-mode data connections over mTLS as well:
 *
 *   FTP client ──plain── tunnel client ══mTLS══ tunnel server ──plain── FTP server (backend)
 *
 * Control connection
 *   The tunnel client opens the mTLS connection as for any TCP tunnel, then sends one preamble line,
 *   `MTLS-FTP/1 CONTROL`. The tunnel server (after verifying and authorizing the certificate, as for
 *   any connection) connects to the backend and answers `MTLS-FTP/1 OK`; from then on the control
 *   connection is carried byte for byte, except for the lines below. The preamble makes a mismatch
 *   loud: a server end in tcp mode forwards the preamble to the FTP server, whose answer is not the
 *   acknowledgement, and a server end in ftp mode waiting for a preamble that a tcp-mode client end
 *   never sends gives up after the handshake timeout; both log what to fix.
 *
 * Passive replies (server end)
 *   Every 227 (PASV) and 229 (EPSV) reply of the backend is consumed by the server end, whole (a
 *   multi-line one included), and replaced by one line in a private form:
 *       227 MTLS-FTP-DATA <token> (for an mtls tunnel client with --protocol ftp)
 *       229 MTLS-FTP-DATA <token> (for an mtls tunnel client with --protocol ftp)
 *   where <token> is 128 random bits (base64url). The announced (host, port) is recorded under that
 *   token for THIS control session only, and the reply is accepted only when
 *     - it is the final reply to an outstanding PASV (227) or EPSV (229) command of this session
 *       (replies are matched to commands in order: one final reply per command, plus the greeting),
 *       so an unsolicited or injected 227 opens nothing;
 *     - a 227 names the very address the control connection to the backend goes to (a 229 names no
 *       host: that address is used); another host is refused and logged, so the tunnel never becomes
 *       a way to reach other machines (the FTP "bounce" problem, in passive form);
 *     - the port is 1024 or above: no passive data port is privileged, while SSH or SMTP on the
 *       backend's host are.
 *   A refused passive reply reaches the FTP client as `425 ...` with the reason. The private form
 *   is deliberately not a valid 227/229: an FTP client that somehow receives it (a client end
 *   without --protocol ftp) fails to parse it instead of connecting anywhere.
 *
 * Passive replies (client end)
 *   The client end tracks reply boundaries too and rewrites a single-line reply in the private form:
 *   it opens an ephemeral listener on the local address the FTP client reached it on, and answers
 *   `227 Entering Passive Mode (127,0,0,1,p1,p2).` or `229 Entering Extended Passive Mode (|||p|)`.
 *   The listener takes one connection, from the FTP client's IP address, within the data timeout
 *   (30 s), then closes. For that connection it opens a NEW mTLS connection to the server end, with
 *   the same TLS context (hence the same certificate) as the control connection, and sends
 *   `MTLS-FTP/1 DATA <token>`.
 *
 * Data connections (server end)
 *   A data connection is a tunnel connection like any other (verification, revocation, policy,
 *   limits, audit, metrics, revocation cuts it) whose preamble names a token. It is carried only if
 *   the token is one this tunnel issued and has not withdrawn, it has not been used yet (single use),
 *   it is younger than the data timeout, it comes with the SAME client certificate (SHA-256
 *   fingerprint) as the control connection and through the same route, and that control connection
 *   is still open. Then the server end connects to the announced backend host:port, answers
 *   `MTLS-FTP/1 OK` and pipes (pipe.ts: backpressure, half-close). Otherwise it answers
 *   `MTLS-FTP/1 NO <reason>` and closes; the client end logs that reason. A certificate other than
 *   the control connection's does not use the token up (a stolen token must not deny the rightful
 *   transfer), it is only refused and logged. At most 8 announcements per control session are
 *   outstanding; older ones are withdrawn.
 *
 * Active mode
 *   PORT, EPRT and LPRT (and LPSV, whose 228 reply is not rewritten) are answered by the server end
 *   itself, never forwarded: `502 Active mode is not supported through mtls; use passive mode
 *   (PASV/EPSV)`. The server end is the one place this is enforced, since the client end runs on the
 *   user's machine. The 502 is queued behind the replies still due for earlier commands, so replies
 *   keep their order when a client pipelines commands.
 *
 * Parsing
 *   Lines end at LF (CR kept, as the FTP server sees them) and are reassembled across TCP segments;
 *   a line is at most 8 KiB: a longer command is answered `500` and the connection closed, a longer
 *   reply line closes it with `421`. Commands are recognized after Telnet IAC sequences are removed,
 *   case-insensitively. At most 256 commands may wait for their replies; past that the server end
 *   stops reading commands (backpressure) rather than remembering more. Everything that is not a
 *   passive reply, a refused command or a preamble is carried byte for byte.
 *
 * Idle timeout
 *   A control connection is quiet during a long transfer: traffic on a data connection also counts
 *   as activity of its control connection, so --idle-timeout does not cut a session mid-transfer.
 *
 * Residual risk, for operators: a backend that lets a client inject whole reply lines (say a file
 * name with CR LF shown by STAT) could make the server end accept a forged passive reply naming
 * another unprivileged port on the backend's own host. vsftpd replaces unprintable characters in
 * listings; restrict the backend's passive port range and firewall the rest as usual.
 */
import { randomBytes } from "node:crypto";
import { isIPv4 } from "node:net";
import type { Duplex } from "node:stream";

/** The longest line (LF included) accepted on a control connection. */
export const FTP_MAX_LINE = 8192;
/** How long an announced data port waits for its data connection (both ends). */
export const FTP_DATA_TIMEOUT_MS = 30_000;
/** Announcements a control session may have outstanding; older ones are withdrawn. */
export const FTP_MAX_GRANTS_PER_SESSION = 8;
/** Commands that may wait for their replies before the server end stops reading more. */
export const FTP_MAX_OUTSTANDING = 256;
/** The longest preamble or acknowledgement line. */
export const FTP_MAX_PREAMBLE = 256;

export const ACTIVE_MODE_REPLY =
  "502 Active mode is not supported through mtls; use passive mode (PASV/EPSV)\r\n";
const LPSV_REPLY = "502 LPSV is not supported through mtls; use PASV or EPSV\r\n";

/** Commands the server end answers itself, with the reply it gives. */
export const REFUSED_COMMANDS: ReadonlyMap<string, string> = new Map([
  ["PORT", ACTIVE_MODE_REPLY],
  ["EPRT", ACTIVE_MODE_REPLY],
  ["LPRT", ACTIVE_MODE_REPLY],
  ["LPSV", LPSV_REPLY],
]);

// ---------------------------------------------------------------------------------------------
// Preamble: the first line of every mTLS connection of an FTP tunnel, and its answer.

export const PREAMBLE_CONTROL = "MTLS-FTP/1 CONTROL\r\n";
export const PREAMBLE_OK = "MTLS-FTP/1 OK\r\n";
export const preambleData = (token: string): string => `MTLS-FTP/1 DATA ${token}\r\n`;
export const preambleRefusal = (reason: string, detail: string): string =>
  `MTLS-FTP/1 NO ${reason} ${detail.replace(/[\r\n]+/g, " ").slice(0, 180)}\r\n`;

/**
 * What the server end tells the peer about a refused preamble: the reason and a fixed sentence.
 * The details (whose session, which certificate, which address) go to its own log only, since the
 * peer may be someone holding a stolen token.
 */
export const REFUSAL_TEXT: Readonly<Record<string, string>> = {
  no_preamble: "no mtls FTP preamble came: start the tunnel client with --protocol ftp",
  bad_preamble: "that is not the mtls FTP preamble: start the tunnel client with --protocol ftp",
  unknown_token: "no such data port (withdrawn, or never announced)",
  token_used: "this data port was used already",
  token_expired: "this data port was announced too long ago",
  wrong_certificate: "not the certificate of the control connection that announced this data port",
  wrong_route: "not the server name of the control connection that announced this data port",
  control_closed: "the control connection that announced this data port has closed",
  target_unreachable: "the FTP server cannot be reached",
  target_timeout: "the FTP server cannot be reached",
};

export type Preamble = { kind: "control" } | { kind: "data"; token: string };

const TOKEN_RE = /^[A-Za-z0-9_-]{22}$/;

/** The preamble a line (without its line end) holds, or undefined. */
export function parsePreamble(line: string): Preamble | undefined {
  if (line === "MTLS-FTP/1 CONTROL") return { kind: "control" };
  const m = /^MTLS-FTP\/1 DATA (\S+)$/.exec(line);
  if (m && TOKEN_RE.test(m[1] as string)) return { kind: "data", token: m[1] as string };
  return undefined;
}

/** The server end's answer to a preamble. */
export type PreambleAnswer = { ok: true } | { ok: false; reason: string; detail: string };

export function parsePreambleAnswer(line: string): PreambleAnswer | undefined {
  if (line === "MTLS-FTP/1 OK") return { ok: true };
  const m = /^MTLS-FTP\/1 NO ([a-z_]+)(?: (.*))?$/.exec(line);
  if (!m) return undefined;
  return { ok: false, reason: m[1] as string, detail: m[2] ?? (m[1] as string) };
}

export class ReadLineError extends Error {
  constructor(
    readonly reason: "timeout" | "too_long" | "closed",
    message: string,
  ) {
    super(message);
  }
}

/**
 * Reads one LF-terminated line of at most `max` bytes from `socket` and returns it without its
 * line end; whatever came after it is put back (unshift) for the next reader, and the socket is
 * left paused. Rejects with a ReadLineError on timeout, an over-long line, or end of stream.
 */
export function readLine(socket: Duplex, max: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    const finish = (err: ReadLineError | undefined, line?: string, rest?: Buffer) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.off("close", onEnd);
      socket.pause();
      if (rest && rest.length > 0) socket.unshift(rest);
      if (err) reject(err);
      else resolve(line as string);
    };
    const onData = (chunk: Buffer) => {
      const lf = chunk.indexOf(0x0a);
      const take = lf < 0 ? chunk : chunk.subarray(0, lf);
      parts.push(take);
      size += take.length;
      if (size + (lf < 0 ? 0 : 1) > max) {
        finish(new ReadLineError("too_long", `a line longer than ${max} bytes`));
        return;
      }
      if (lf >= 0) {
        const line = Buffer.concat(parts).toString("latin1").replace(/\r$/, "");
        finish(undefined, line, chunk.subarray(lf + 1));
      }
    };
    const onEnd = () => finish(new ReadLineError("closed", "the connection ended before a full line"));
    const timer = setTimeout(
      () => finish(new ReadLineError("timeout", `no full line within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("close", onEnd);
  });
}

// ---------------------------------------------------------------------------------------------
// Lines, replies and commands.

/** Splits a byte stream into lines (LF included, CR kept), across chunks, bounding their length. */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;

  constructor(readonly maxLine = FTP_MAX_LINE) {}

  /**
   * The lines `chunk` completes, in order. `overflow` is true when a line grew past maxLine: the
   * lines before it are returned and the splitter should not be fed any more.
   */
  push(chunk: Buffer): { lines: Buffer[]; overflow: boolean } {
    const lines: Buffer[] = [];
    let start = 0;
    for (;;) {
      const lf = chunk.indexOf(0x0a, start);
      if (lf < 0) break;
      const piece = chunk.subarray(start, lf + 1);
      const line = this.size > 0 ? Buffer.concat([...this.parts, piece]) : piece;
      this.parts = [];
      this.size = 0;
      if (line.length > this.maxLine) return { lines, overflow: true };
      lines.push(line);
      start = lf + 1;
    }
    if (start < chunk.length) {
      const rest = chunk.subarray(start);
      this.parts.push(rest);
      this.size += rest.length;
      if (this.size > this.maxLine) return { lines, overflow: true };
    }
    return { lines, overflow: false };
  }

  /** The unterminated rest, taken out (at end of stream). */
  rest(): Buffer {
    const b = Buffer.concat(this.parts);
    this.parts = [];
    this.size = 0;
    return b;
  }
}

export interface ReplyLineInfo {
  /** The reply's code; undefined for a line outside any reply (not "ddd" + SP, "-" or line end). */
  code: number | undefined;
  /** The reply's first line. */
  first: boolean;
  /** The reply's last line: the reply is complete. */
  last: boolean;
}

/**
 * Follows reply boundaries (RFC 959 4.2): "ddd text" is a whole reply; "ddd-text" opens a
 * multi-line reply that ends at the first line starting with the same "ddd ".
 */
export class ReplyTracker {
  private open: string | undefined;

  /** Inside a multi-line reply. */
  get inReply(): boolean {
    return this.open !== undefined;
  }

  next(line: Buffer): ReplyLineInfo {
    const head = line.toString("latin1", 0, Math.min(4, line.length));
    if (this.open !== undefined) {
      const code = Number(this.open);
      if (head.startsWith(this.open) && isReplyEnd(head.charCodeAt(3))) {
        this.open = undefined;
        return { code, first: false, last: true };
      }
      return { code, first: false, last: false };
    }
    if (!/^\d{3}$/.test(head.slice(0, 3))) return { code: undefined, first: true, last: true };
    const sep = head.charCodeAt(3);
    const code = Number(head.slice(0, 3));
    if (sep === 0x2d) {
      this.open = head.slice(0, 3);
      return { code, first: true, last: false };
    }
    if (isReplyEnd(sep)) return { code, first: true, last: true };
    return { code: undefined, first: true, last: true };
  }
}

/** SP, CR or LF after the code ends a reply ("ddd\r\n" is seen in the wild). */
function isReplyEnd(c: number): boolean {
  return c === 0x20 || c === 0x0d || c === 0x0a;
}

/** Removes Telnet IAC sequences (RFC 854): IAC IAC is a literal 0xff, IAC WILL/WONT/DO/DONT x, IAC x. */
export function stripTelnet(line: Buffer): Buffer {
  if (!line.includes(0xff)) return line;
  const out: number[] = [];
  for (let i = 0; i < line.length; i++) {
    const b = line[i] as number;
    if (b !== 0xff) {
      out.push(b);
      continue;
    }
    const c = line[i + 1];
    if (c === 0xff) {
      out.push(0xff);
      i++;
    } else if (c !== undefined && c >= 251 && c <= 254) i += 2;
    else i++;
  }
  return Buffer.from(out);
}

/** The command's verb, upper case ("PORT"): the leading letters after Telnet sequences and blanks. */
export function commandVerb(line: Buffer): string {
  const s = stripTelnet(line).toString("latin1");
  const m = /^[ \t]*([A-Za-z]{1,16})/.exec(s);
  return m ? (m[1] as string).toUpperCase() : "";
}

export interface PassiveAddress {
  /** Dotted IPv4 address (227); absent for 229, which names no host. */
  host?: string;
  port: number;
}

/**
 * The address in a 227 reply: the first "h1,h2,h3,h4,p1,p2" after the code, parentheses or not
 * (RFC 1123 4.1.2.6 asks clients to scan for it).
 */
export function parse227(reply: string): PassiveAddress | undefined {
  const m = /(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})/.exec(reply.slice(3));
  if (!m) return undefined;
  const n = m.slice(1, 7).map(Number);
  if (n.some((v) => v > 255)) return undefined;
  const port = (n[4] as number) * 256 + (n[5] as number);
  if (port === 0) return undefined;
  return { host: n.slice(0, 4).join("."), port };
}

/** The port in a 229 reply: "(<d><d><d>port<d>)" with any printable non-digit delimiter (RFC 2428). */
export function parse229(reply: string): PassiveAddress | undefined {
  const m = /\(([!-/:-~])\1\1(\d{1,5})\1\)/.exec(reply.slice(3));
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { port };
}

export function format227(host: string, port: number): string {
  if (!isIPv4(host)) throw new Error(`a 227 reply needs an IPv4 address, not ${host}`);
  return `227 Entering Passive Mode (${host.split(".").join(",")},${port >> 8},${port & 255}).\r\n`;
}

export function format229(port: number): string {
  return `229 Entering Extended Passive Mode (|||${port}|)\r\n`;
}

/** The private form of a passive reply, sent by the server end to the client end. */
export function privateReply(code: 227 | 229, token: string): string {
  return `${code} MTLS-FTP-DATA ${token} (for an mtls tunnel client with --protocol ftp)\r\n`;
}

const PRIVATE_REPLY_RE = /^(227|229) MTLS-FTP-DATA ([A-Za-z0-9_-]{22}) /;

/** The code and token of a private-form reply line, or undefined. */
export function parsePrivateReply(line: string): { code: 227 | 229; token: string } | undefined {
  const m = PRIVATE_REPLY_RE.exec(line);
  if (!m) return undefined;
  return { code: Number(m[1]) as 227 | 229, token: m[2] as string };
}

/** "::ffff:127.0.0.1" → "127.0.0.1"; other addresses unchanged. */
export function plainIp(address: string | undefined): string | undefined {
  return address?.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "");
}

// ---------------------------------------------------------------------------------------------
// The server end's record of announced data ports.

/** What a grant is bound to: one control session of the server end. */
export interface GrantOwner {
  readonly id: number;
  /** SHA-256 fingerprint of the control connection's client certificate. */
  readonly fingerprint: string;
  /** The route (its server name, lower case; "" for the default route) the control connection took. */
  readonly route: string;
  /** False once the control connection has closed. */
  readonly open: boolean;
}

export interface DataGrant {
  token: string;
  owner: GrantOwner;
  host: string;
  port: number;
  expiresAt: number;
  used: boolean;
}

export type RedeemRefusal =
  | "unknown_token"
  | "token_used"
  | "token_expired"
  | "wrong_certificate"
  | "wrong_route"
  | "control_closed";

export type Redeemed = { ok: true; grant: DataGrant } | { ok: false; reason: RedeemRefusal; detail: string };

/**
 * Announced data ports by token. A token is redeemed once, within `ttlMs`, with the certificate and
 * route of the control session that announced it. Nothing runs on a timer: expired and used grants
 * are swept when new ones are issued, and a session's grants go when the session closes.
 */
export class DataGrants {
  private readonly grants = new Map<string, DataGrant>();

  constructor(
    private readonly clock: () => Date = () => new Date(),
    readonly ttlMs = FTP_DATA_TIMEOUT_MS,
    readonly perSession = FTP_MAX_GRANTS_PER_SESSION,
  ) {}

  get size(): number {
    return this.grants.size;
  }

  issue(owner: GrantOwner, host: string, port: number): string {
    const now = this.clock().getTime();
    const mine: DataGrant[] = [];
    for (const g of this.grants.values()) {
      if (g.expiresAt <= now) this.grants.delete(g.token);
      else if (g.owner === owner && !g.used) mine.push(g);
    }
    // Map order is insertion order: the oldest first.
    while (mine.length >= this.perSession) this.grants.delete((mine.shift() as DataGrant).token);
    const token = randomBytes(16).toString("base64url");
    this.grants.set(token, { token, owner, host, port, expiresAt: now + this.ttlMs, used: false });
    return token;
  }

  redeem(token: string, fingerprint: string, route: string): Redeemed {
    const g = this.grants.get(token);
    if (!g)
      return { ok: false, reason: "unknown_token", detail: "no such data-port announcement (or withdrawn)" };
    const who = `control session ${g.owner.id}`;
    if (g.used)
      return { ok: false, reason: "token_used", detail: `the data port of ${who} was already used` };
    if (!g.owner.open) {
      this.grants.delete(token);
      return { ok: false, reason: "control_closed", detail: `${who} has closed` };
    }
    if (this.clock().getTime() >= g.expiresAt) {
      this.grants.delete(token);
      return {
        ok: false,
        reason: "token_expired",
        detail: `the data port of ${who} was announced more than ${this.ttlMs} ms ago`,
      };
    }
    if (fingerprint.toLowerCase() !== g.owner.fingerprint.toLowerCase()) {
      return {
        ok: false,
        reason: "wrong_certificate",
        detail: `certificate ${fingerprint} is not the one of ${who} (${g.owner.fingerprint})`,
      };
    }
    if (route !== g.owner.route)
      return { ok: false, reason: "wrong_route", detail: `not the server name of ${who}` };
    g.used = true;
    return { ok: true, grant: g };
  }

  /** Withdraws every grant of a session (its control connection closed). */
  drop(owner: GrantOwner): void {
    for (const g of this.grants.values()) if (g.owner === owner) this.grants.delete(g.token);
  }
}
