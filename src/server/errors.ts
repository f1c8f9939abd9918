import { type ErrorCode, isMtlsError, MtlsError } from "../errors.js";

/** The JSON body of every 4xx/5xx answer: `{"error": {"code": "E_…", "message": "one line"}}`. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string };
}

/** An error the API answers with: an HTTP status, a stable code and a one-line message. */
export interface HttpError {
  status: number;
  code: ErrorCode;
  message: string;
  /** Seconds, for 429 answers. */
  retryAfter?: number;
}

/** HTTP status per error code (docs/api.md "Errors"). Codes not listed are server faults (500). */
const STATUS: Partial<Record<ErrorCode, number>> = {
  E_USAGE: 400,
  E_BAD_INPUT: 400,
  E_BAD_CSR: 400,
  E_BAD_SAN: 400,
  E_WEAK_KEY: 400,
  E_PROFILE: 400,
  E_TTL: 400,
  E_NOT_AUTHENTICATED: 401,
  E_NOT_AUTHORIZED: 403,
  E_TOKEN_INVALID: 403,
  E_TOKEN_USED: 403,
  E_TOKEN_EXPIRED: 403,
  E_TOKEN_SCOPE: 403,
  E_REVOKED: 403,
  E_EXPIRED: 403,
  E_UNTRUSTED: 403,
  E_PURPOSE: 403,
  E_NOT_FOUND: 404,
  E_EXISTS: 409,
  E_TOO_LARGE: 413,
  E_RATE_LIMITED: 429,
  E_PASSPHRASE: 503,
  E_KEY_OFFLINE: 503,
  E_STORE: 503,
  E_NO_CA: 503,
  E_UNAVAILABLE: 503,
};

export const statusFor = (code: ErrorCode): number => STATUS[code] ?? 500;

/** An MtlsError that also says how long to wait (429). */
export class RateLimitedError extends MtlsError {
  constructor(readonly retryAfter: number) {
    super("E_RATE_LIMITED", `too many requests from this address; retry in ${retryAfter} s`);
  }
}

/** Messages are one line and bounded: nothing a client sent is echoed at length. */
function oneLine(text: string): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > 300 ? `${line.slice(0, 297)}...` : line;
}

/**
 * What an error thrown while handling a request becomes on the wire. MtlsErrors keep their code
 * (E_USAGE, which the library throws for bad option values, is E_BAD_INPUT to an API client);
 * Fastify's own client errors (bad JSON, wrong content type, body too large) become E_BAD_INPUT or
 * E_TOO_LARGE with their 4xx status; anything else is a fault of ours: 500 without details (they
 * go to the log), so no stack trace or internal message ever reaches a client.
 */
export function toHttpError(err: unknown): HttpError {
  if (isMtlsError(err)) {
    const code: ErrorCode = err.code === "E_USAGE" ? "E_BAD_INPUT" : err.code;
    const status = statusFor(code);
    const out: HttpError = {
      status,
      code,
      message: status >= 500 ? publicFaultMessage(code) : oneLine(err.message),
    };
    if (err instanceof RateLimitedError) out.retryAfter = err.retryAfter;
    return out;
  }
  const e = err as { code?: unknown; statusCode?: unknown; message?: unknown } | undefined;
  const status = typeof e?.statusCode === "number" ? e.statusCode : 500;
  const fcode = typeof e?.code === "string" ? e.code : "";
  if (status === 413 || fcode === "FST_ERR_CTP_BODY_TOO_LARGE") {
    return { status: 413, code: "E_TOO_LARGE", message: "the request body is larger than allowed" };
  }
  if (fcode === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
    return {
      status: 415,
      code: "E_BAD_INPUT",
      message: "unsupported Content-Type: send application/json",
    };
  }
  if (fcode === "FST_ERR_CTP_INVALID_JSON_BODY" || err instanceof SyntaxError) {
    return { status: 400, code: "E_BAD_INPUT", message: "the request body is not valid JSON" };
  }
  if (status >= 400 && status < 500) {
    return {
      status,
      code: "E_BAD_INPUT",
      message: oneLine(typeof e?.message === "string" ? e.message : "bad request"),
    };
  }
  return { status: 500, code: "E_UNAVAILABLE", message: "internal error; the CA service logged it" };
}

function publicFaultMessage(code: ErrorCode): string {
  switch (code) {
    case "E_STORE":
      return "the CA's database failed; the CA service logged the details";
    case "E_PASSPHRASE":
      return "the CA key cannot be unlocked (passphrase); the CA service logged the details";
    case "E_KEY_OFFLINE":
      return "a key this operation needs is kept offline";
    case "E_NO_CA":
      return "the CA is not available";
    default:
      return "the CA service is unavailable; it logged the details";
  }
}

export const errorBody = (e: HttpError): ErrorBody => ({ error: { code: e.code, message: e.message } });
