/**
 * Strict, bounded parsing of an HTTP/1.1 response head (RFC 9112 section 4-5) and of the framing it
 * announces (section 6.3). Reads lines through a Connection, so it is incremental over whatever chunks
 * the transport delivers; it never buffers more than the head limit.
 */
import { type Connection, protocolError } from "./connection.js";

export interface HeadLimits {
  /** Status line + field lines, CRLFs included. */
  maxHeaderBytes: number;
  maxHeaders: number;
}

export interface ResponseHead {
  /** Minor version: 1 for HTTP/1.1, 0 for HTTP/1.0. */
  minor: number;
  status: number;
  statusText: string;
  /** Field lines in order, names lowercased, values trimmed. */
  fields: Array<[string, string]>;
}

export type Framing =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

/** tchar per RFC 9110 5.6.2. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TCHAR[c.charCodeAt(0)] = 1;
}

export function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || TCHAR[c] !== 1) return false;
  }
  return true;
}

function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    s += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return s;
}

/** field-value / reason-phrase bytes: HTAB, SP, VCHAR, obs-text; no other control character. */
function badValueByte(bytes: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = bytes[i] as number;
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true;
  }
  return false;
}

/** Parses one field line into [lowercased name, trimmed value]. */
function parseField(line: Uint8Array, what: string): [string, string] {
  const first = line[0];
  if (first === 0x20 || first === 0x09) throw protocolError(`${what}: obsolete line folding`);
  const colon = line.indexOf(0x3a);
  if (colon <= 0) throw protocolError(`${what}: field line without a name and colon`);
  const name = latin1(line.subarray(0, colon));
  if (!isToken(name)) throw protocolError(`${what}: invalid field name ${JSON.stringify(name)}`);
  let a = colon + 1;
  let b = line.length;
  while (a < b && (line[a] === 0x20 || line[a] === 0x09)) a++;
  while (b > a && (line[b - 1] === 0x20 || line[b - 1] === 0x09)) b--;
  if (badValueByte(line, a, b)) throw protocolError(`${what}: control character in field ${name}`);
  return [name.toLowerCase(), latin1(line.subarray(a, b))];
}

/**
 * Reads field lines up to the empty line, within `budget` bytes and `maxFields` lines. Used for the
 * head and for chunked trailers. Returns the fields and the bytes used.
 */
export async function readFields(
  conn: Connection,
  budget: number,
  maxFields: number,
  what: string,
): Promise<Array<[string, string]>> {
  const fields: Array<[string, string]> = [];
  let left = budget;
  for (;;) {
    if (left < 2) throw protocolError(`${what}: larger than ${budget} bytes`);
    const line = await conn.readLine(left - 2, what);
    if (line === null) throw protocolError(`${what}: connection closed in the header section`);
    left -= line.length + 2;
    if (line.length === 0) return fields;
    if (fields.length >= maxFields) throw protocolError(`${what}: more than ${maxFields} fields`);
    fields.push(parseField(line, what));
  }
}

/**
 * Reads one response head (interim or final). Resolves null if the connection ended before its first
 * byte (the caller decides whether that is retryable).
 */
export async function readResponseHead(conn: Connection, limits: HeadLimits): Promise<ResponseHead | null> {
  const what = "response head";
  const line = await conn.readLine(limits.maxHeaderBytes - 2, "status line");
  if (line === null) return null;
  // HTTP/1.x SP 3DIGIT [SP reason-phrase]
  const m = /^HTTP\/1\.([0-9]) ([0-9]{3})(?: (.*))?$/s.exec(latin1(line));
  if (!m) throw protocolError(`malformed status line ${JSON.stringify(latin1(line.subarray(0, 64)))}`);
  const status = Number(m[2]);
  if (status < 100 || status > 599) throw protocolError(`status code ${status} out of range`);
  const reason = m[3] ?? "";
  if (badValueByte(line, line.length - reason.length, line.length)) {
    throw protocolError("control character in the reason phrase");
  }
  const fields = await readFields(conn, limits.maxHeaderBytes - line.length - 2, limits.maxHeaders, what);
  return { minor: Number(m[1]), status, statusText: reason, fields };
}

/** All values of a field, comma-separated lists split, trimmed, empty members dropped. */
export function listValues(head: ResponseHead, name: string): string[] {
  const out: string[] = [];
  for (const [n, v] of head.fields) {
    if (n !== name) continue;
    for (const part of v.split(",")) {
      const t = part.trim();
      if (t) out.push(t);
    }
  }
  return out;
}

/**
 * How the body of this response is delimited (RFC 9112 6.3). `smuggling` is true when both
 * Transfer-Encoding and Content-Length are present: Transfer-Encoding wins, but the connection must
 * not be reused.
 */
export function responseFraming(
  head: ResponseHead,
  requestMethod: string,
): { framing: Framing; smuggling: boolean } {
  const s = head.status;
  if (requestMethod === "HEAD" || (s >= 100 && s < 200) || s === 204 || s === 304) {
    return { framing: { kind: "none" }, smuggling: false };
  }
  const te = listValues(head, "transfer-encoding").map((v) => v.toLowerCase());
  const hasCl = head.fields.some(([n]) => n === "content-length");
  if (te.length > 0) {
    if (head.minor === 0) throw protocolError("Transfer-Encoding in an HTTP/1.0 response");
    if (te.length !== 1 || te[0] !== "chunked") {
      throw protocolError(`unsupported Transfer-Encoding ${JSON.stringify(te.join(", "))}`);
    }
    return { framing: { kind: "chunked" }, smuggling: hasCl };
  }
  if (hasCl) {
    const values = listValues(head, "content-length");
    if (values.length === 0) throw protocolError("empty Content-Length");
    const first = values[0] as string;
    for (const v of values) {
      if (!/^[0-9]{1,15}$/.test(v)) throw protocolError(`invalid Content-Length ${JSON.stringify(v)}`);
      if (Number(v) !== Number(first)) throw protocolError("conflicting Content-Length values");
    }
    return { framing: { kind: "length", length: Number(first) }, smuggling: false };
  }
  return { framing: { kind: "close" }, smuggling: false };
}

/** Whether the server lets the connection stay open after this response. */
export function serverKeepsAlive(head: ResponseHead): boolean {
  const conn = listValues(head, "connection").map((v) => v.toLowerCase());
  if (conn.includes("close")) return false;
  return head.minor >= 1 || conn.includes("keep-alive");
}

/** The server's idle timeout from `Keep-Alive: timeout=N`, in ms, if it sent one. */
export function keepAliveTimeoutMs(head: ResponseHead): number | undefined {
  for (const v of listValues(head, "keep-alive")) {
    const m = /^timeout\s*=\s*([0-9]{1,6})$/i.exec(v);
    if (m) return Number(m[1]) * 1000;
  }
  return undefined;
}
