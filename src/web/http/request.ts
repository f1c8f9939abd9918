/**
 * Turns fetch-style input into an HTTP/1.1 request head and a body source, validating everything the
 * caller controls: URL, method, header names and values, and the framing headers (Host,
 * Content-Length, Transfer-Encoding, Connection, Expect), which this client writes itself and which the
 * caller may only repeat consistently.
 */
import { MtlsError } from "../../errors.js";
import { isToken } from "./response-parser.js";

export interface HttpRequestInit {
  method?: string;
  headers?: HeadersInit;
  body?: string | Uint8Array | ReadableStream<Uint8Array> | null;
  signal?: AbortSignal | null;
}

export interface PreparedRequest {
  url: URL;
  /** `scheme://host:port`, the key of the idle pool. */
  originKey: string;
  method: string;
  /** Request line, field lines and the empty line, encoded. */
  head: Uint8Array;
  body: Uint8Array | ReadableStream<Uint8Array> | null;
  /** GET/HEAD/OPTIONS/PUT/DELETE (and TRACE-like safe methods): may be sent again after a stale connection. */
  idempotent: boolean;
  /** The body can be sent a second time (not a stream). */
  replayable: boolean;
  expectContinue: boolean;
  /** The caller asked for `Connection: close`. */
  wantsClose: boolean;
}

const NORMALIZED = new Set(["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"]);
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]);
const FORBIDDEN_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);

function bad(message: string, cause?: unknown): MtlsError {
  return new MtlsError("E_BAD_INPUT", message, cause === undefined ? undefined : { cause });
}

/** Encodes a header-safe string as Latin-1 bytes; every character is already checked to be < 0x100. */
function latin1Bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function checkValue(name: string, value: string): void {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0 || c === 0x0a || c === 0x0d) throw bad(`header ${name}: CR, LF or NUL in the value`);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f || c > 0xff) {
      throw bad(`header ${name}: invalid character in the value`);
    }
  }
}

const encoder = new TextEncoder();

export function prepareRequest(input: string | URL, init: HttpRequestInit = {}): PreparedRequest {
  let url: URL;
  try {
    url = new URL(String(input));
  } catch (err) {
    throw bad(`invalid URL ${JSON.stringify(String(input))}`, err);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw bad(`unsupported URL scheme ${url.protocol}`);
  }
  if (url.username || url.password) throw bad("credentials in the URL are not allowed");

  let method = init.method ?? "GET";
  if (!isToken(method)) throw bad(`invalid method ${JSON.stringify(method)}`);
  if (NORMALIZED.has(method.toUpperCase())) method = method.toUpperCase();
  if (FORBIDDEN_METHODS.has(method.toUpperCase())) throw bad(`method ${method} is not supported`);

  let body: Uint8Array | ReadableStream<Uint8Array> | null;
  const b = init.body ?? null;
  if (b === null) body = null;
  else if (typeof b === "string") body = encoder.encode(b);
  else if (b instanceof Uint8Array) body = b;
  else if (typeof ReadableStream !== "undefined" && b instanceof ReadableStream) body = b;
  else throw bad("body must be a string, a Uint8Array or a ReadableStream<Uint8Array>");
  if (body !== null && (method === "GET" || method === "HEAD")) {
    throw bad(`a ${method} request cannot have a body`);
  }
  const streaming = body instanceof ReadableStream;

  let headers: Headers;
  try {
    headers = new Headers(init.headers ?? undefined);
  } catch (err) {
    throw bad(`invalid request headers: ${(err as Error).message}`, err);
  }

  let wantsClose = false;
  let expectContinue = false;
  const lines: string[] = [`${method} ${url.pathname || "/"}${url.search} HTTP/1.1`, `host: ${url.host}`];
  for (const [name, value] of headers) {
    if (!isToken(name)) throw bad(`invalid header name ${JSON.stringify(name)}`);
    checkValue(name, value);
    const lower = name.toLowerCase();
    switch (lower) {
      case "host":
        if (value.toLowerCase() !== url.host.toLowerCase()) {
          throw bad(`header host: ${JSON.stringify(value)} differs from the URL's host ${url.host}`);
        }
        continue;
      case "content-length": {
        const expected = body === null ? 0 : streaming ? -1 : (body as Uint8Array).length;
        if (!/^[0-9]+$/.test(value) || Number(value) !== expected) {
          throw bad(`header content-length: ${JSON.stringify(value)} does not match the body`);
        }
        continue;
      }
      case "transfer-encoding":
        if (!streaming || value.toLowerCase() !== "chunked") {
          throw bad("header transfer-encoding: only `chunked`, and only with a ReadableStream body");
        }
        continue;
      case "connection":
        for (const token of value.split(",")) {
          const t = token.trim().toLowerCase();
          if (t === "close") wantsClose = true;
          else if (t !== "keep-alive" && t !== "")
            throw bad(`header connection: ${JSON.stringify(t)} is not supported`);
        }
        continue;
      case "upgrade":
        throw bad("header upgrade: protocol upgrades are not supported");
      case "expect":
        if (value.toLowerCase() !== "100-continue")
          throw bad(`header expect: ${JSON.stringify(value)} is not supported`);
        expectContinue = body !== null;
        break;
    }
    lines.push(`${lower}: ${value}`);
  }
  if (streaming) lines.push("transfer-encoding: chunked");
  else if (body !== null) lines.push(`content-length: ${(body as Uint8Array).length}`);
  else if (method === "POST" || method === "PUT" || method === "PATCH") lines.push("content-length: 0");
  if (wantsClose) lines.push("connection: close");
  lines.push("", "");

  return {
    url,
    originKey: `${url.protocol}//${url.host}`,
    method,
    head: latin1Bytes(lines.join("\r\n")),
    body,
    idempotent: IDEMPOTENT.has(method),
    replayable: !streaming,
    expectContinue,
    wantsClose,
  };
}
