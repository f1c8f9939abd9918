import type { IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { ERROR_CODES, type ErrorCode, MtlsError } from "../errors.js";

/**
 * A small HTTPS client for the CA service API (docs/api.md). It trusts exactly one anchor, the CA's
 * root, checks the server's name against the URL's host, speaks TLS 1.2 or newer and presents a
 * client certificate when given one (renewal authenticates with the certificate being renewed).
 * Every request has a deadline and every answer a size limit; error bodies become MtlsErrors.
 */
export interface CaClientOptions {
  /** Base URL of the CA, e.g. https://127.0.0.1:8443 (https only). */
  url: string;
  /** The CA's root certificate(s), PEM: the only trust anchor. */
  ca: string | Buffer;
  /** Client certificate chain (PEM) and its key, for endpoints that take mTLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Deadline of a whole request: connect, TLS, sending, the complete answer (default 30 s). */
  timeoutMs?: number;
  /** Largest answer body accepted (default 1 MiB). */
  maxResponseBytes?: number;
}

/** The answer of POST /v1/enroll and POST /v1/renew. */
export interface IssuedResponse {
  serial: string;
  name: string;
  profile: string;
  notBefore: string;
  notAfter: string;
  /** PEM of the leaf. */
  certificate: string;
  /** PEM: leaf then intermediate. */
  chain: string;
  /** PEM of the root. */
  ca: string;
}

/** The answer of GET /v1/ca. */
export interface CaCertificates {
  root: string;
  intermediate: string;
  chain: string;
}

/**
 * The CA answered with an error: `code` is E_HTTP, `serverCode` the CA's own code (E_EXPIRED,
 * E_TOKEN_USED, ...), `status` the HTTP status and `retryAfterMs` the wait a 429 asked for.
 */
export class CaHttpError extends MtlsError {
  constructor(
    message: string,
    readonly status: number,
    readonly serverCode: ErrorCode | string | undefined,
    readonly retryAfterMs?: number,
  ) {
    super("E_HTTP", message);
  }
}

export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;

/** Server codes after which trying again with the same request cannot help. */
const PERMANENT_CODES = new Set<string>([
  "E_BAD_INPUT",
  "E_BAD_CSR",
  "E_BAD_SAN",
  "E_WEAK_KEY",
  "E_PROFILE",
  "E_TTL",
  "E_NOT_AUTHENTICATED",
  "E_NOT_AUTHORIZED",
  "E_TOKEN_INVALID",
  "E_TOKEN_USED",
  "E_TOKEN_EXPIRED",
  "E_TOKEN_SCOPE",
  "E_REVOKED",
  "E_EXPIRED",
  "E_UNTRUSTED",
  "E_PURPOSE",
  "E_NOT_FOUND",
  "E_TOO_LARGE",
]);

/**
 * Whether a failed call is worth retrying later: the CA could not be reached, was overloaded or
 * temporarily unable (5xx, 429). A refusal (revoked, expired, bad request) is final.
 */
export function isRetryable(err: unknown): boolean {
  if (err instanceof CaHttpError) {
    if (PERMANENT_CODES.has(String(err.serverCode ?? ""))) return false;
    return err.status === 408 || err.status === 429 || err.status >= 500;
  }
  return err instanceof MtlsError && err.code === "E_UNAVAILABLE";
}

export class CaClient {
  readonly url: URL;
  private readonly opts: CaClientOptions;

  constructor(opts: CaClientOptions) {
    let url: URL;
    try {
      url = new URL(opts.url);
    } catch {
      throw new MtlsError("E_USAGE", `invalid CA URL "${opts.url}" (e.g. https://ca.acme.test:8443)`);
    }
    if (url.protocol !== "https:") {
      throw new MtlsError("E_USAGE", `the CA URL must be https://, not ${url.protocol}//`);
    }
    if (url.username || url.password || url.search || url.hash) {
      throw new MtlsError("E_USAGE", `invalid CA URL "${opts.url}": no user, query or fragment`);
    }
    if ((opts.cert === undefined) !== (opts.key === undefined)) {
      throw new MtlsError("E_USAGE", "a client certificate and its key go together");
    }
    if (!String(opts.ca).includes("-----BEGIN CERTIFICATE-----")) {
      throw new MtlsError("E_BAD_INPUT", "the CA certificate must be PEM (-----BEGIN CERTIFICATE-----)");
    }
    this.url = url;
    this.opts = opts;
  }

  /** POST /v1/enroll: a one-time token and a CSR give a certificate. */
  enroll(token: string, csrPem: string): Promise<IssuedResponse> {
    return this.request<IssuedResponse>("POST", "/v1/enroll", { token, csr: csrPem }).then(checkIssued);
  }

  /** POST /v1/renew, authenticated by the client certificate: same key, or the CSR's (rekey). */
  renew(csrPem?: string): Promise<IssuedResponse> {
    if (!this.opts.cert) {
      return Promise.reject(new MtlsError("E_USAGE", "renewal needs the current certificate and key"));
    }
    return this.request<IssuedResponse>("POST", "/v1/renew", csrPem ? { csr: csrPem } : {}).then(checkIssued);
  }

  /** GET /v1/ca. */
  caCertificates(): Promise<CaCertificates> {
    return this.request<CaCertificates>("GET", "/v1/ca");
  }

  /** One JSON request; the answer parsed, or an MtlsError (E_HTTP, E_UNAVAILABLE, E_BAD_INPUT). */
  request<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    const timeoutMs = this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const limit = this.opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    const base = this.url.pathname.replace(/\/+$/, "");
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const where = `${this.url.origin}${base}${path}`;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const finish = (err: Error | undefined, value?: T) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          req.destroy();
          reject(err);
        } else resolve(value as T);
      };
      const req = httpsRequest(
        {
          protocol: "https:",
          host: this.url.hostname.replace(/^\[|\]$/g, ""),
          port: this.url.port || 443,
          path: `${base}${path}`,
          method,
          ca: this.opts.ca,
          ...(this.opts.cert !== undefined ? { cert: this.opts.cert, key: this.opts.key } : {}),
          minVersion: "TLSv1.2",
          rejectUnauthorized: true,
          agent: false,
          headers: {
            accept: "application/json",
            "user-agent": "mtls-agent",
            ...(payload
              ? { "content-type": "application/json", "content-length": String(payload.length) }
              : {}),
          },
        },
        (res) => {
          readBody(res, limit).then(
            (text) => {
              try {
                finish(undefined, interpret<T>(res, text, method, where));
              } catch (err) {
                finish(err as Error);
              }
            },
            (err: Error) => finish(err),
          );
        },
      );
      const timer = setTimeout(() => {
        finish(
          new MtlsError(
            "E_UNAVAILABLE",
            `the CA at ${this.url.origin} did not answer within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      req.on("error", (err: NodeJS.ErrnoException) => finish(connectionError(err, this.url.origin)));
      req.end(payload);
    });
  }
}

/** The answer's body, at most `limit` bytes (the caller destroys the request on a rejection). */
function readBody(res: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => new MtlsError("E_TOO_LARGE", `the CA's answer is larger than ${limit} bytes`);
    if (Number(res.headers["content-length"] ?? "0") > limit) {
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    res.on("data", (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        done = true;
        chunks.length = 0;
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    res.on("end", () => {
      if (!done) resolve(Buffer.concat(chunks).toString("utf8"));
    });
    res.on("error", (err) =>
      reject(new MtlsError("E_UNAVAILABLE", `reading the CA's answer failed: ${err.message}`)),
    );
    res.on("aborted", () =>
      reject(new MtlsError("E_UNAVAILABLE", "the CA closed the connection mid-answer")),
    );
  });
}

/** A 2xx JSON answer, or a CaHttpError with the server's code and message. */
function interpret<T>(res: IncomingMessage, text: string, method: string, where: string): T {
  const status = res.statusCode ?? 0;
  let json: unknown;
  let parsed = false;
  try {
    json = text ? JSON.parse(text) : undefined;
    parsed = true;
  } catch {
    parsed = false;
  }
  if (status >= 200 && status < 300) {
    if (!parsed || json === undefined || typeof json !== "object" || json === null) {
      throw new MtlsError("E_BAD_INPUT", `the CA's answer to ${method} ${where} is not JSON`);
    }
    return json as T;
  }
  const err = (json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  const code = typeof err?.code === "string" && /^E_[A-Z_]{1,40}$/.test(err.code) ? err.code : undefined;
  const message = typeof err?.message === "string" ? oneLine(err.message) : undefined;
  const retryAfterMs = retryAfter(res.headers["retry-after"]);
  const detail = code
    ? `${code}: ${message ?? ERROR_CODES[code as ErrorCode] ?? "no message"}`
    : `HTTP ${status}${res.statusMessage ? ` ${oneLine(res.statusMessage)}` : ""}`;
  throw new CaHttpError(
    `the CA refused ${method} ${new URL(where).pathname}: ${detail} (HTTP ${status})`,
    status,
    code,
    retryAfterMs,
  );
}

/** Retry-After in seconds (the API's form) or an HTTP date, as milliseconds; capped at a day. */
function retryAfter(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Math.min(Number(v), 86_400) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.min(Math.max(at - Date.now(), 0), 86_400_000);
}

function oneLine(text: string): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > 300 ? `${line.slice(0, 297)}...` : line;
}

const TLS_TRUST_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_SIGNATURE_FAILURE",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_REVOKED",
]);

/**
 * A connection failure. A server certificate that does not chain to the given root or does not
 * carry the URL's host is E_UNTRUSTED (retrying will not help, the configuration is wrong); the
 * rest (refused, reset, DNS, TLS alerts) is E_UNAVAILABLE.
 */
function connectionError(err: NodeJS.ErrnoException, origin: string): MtlsError {
  if (err instanceof MtlsError) return err;
  const code = err.code ?? "";
  if (TLS_TRUST_CODES.has(code)) {
    return new MtlsError(
      "E_UNTRUSTED",
      `the CA at ${origin} presented a certificate this client does not trust (${code}): check --ca-cert and the URL's host`,
      { cause: err },
    );
  }
  const what = code || err.message;
  return new MtlsError("E_UNAVAILABLE", `cannot reach the CA at ${origin}: ${what}`, { cause: err });
}

function checkIssued(r: IssuedResponse): IssuedResponse {
  const ok =
    typeof r?.serial === "string" &&
    typeof r.certificate === "string" &&
    typeof r.chain === "string" &&
    typeof r.ca === "string" &&
    r.chain.includes("-----BEGIN CERTIFICATE-----") &&
    r.ca.includes("-----BEGIN CERTIFICATE-----");
  if (!ok) throw new MtlsError("E_BAD_INPUT", "the CA's answer lacks the certificate, chain or root");
  return r;
}
