/**
 * The one error class of mtls. Every failure a person or a program can trigger carries a stable
 * `code` (listed below and in docs/errors.md) so callers can branch on it, and a one-line message
 * the CLI prints as `mtls: <message>`. This file imports nothing, so every module (pki included)
 * may use it.
 */
export const ERROR_CODES = {
  E_USAGE: "bad command-line usage or option value",
  E_BAD_INPUT: "malformed input (PEM, DER, name, duration, ...)",
  E_BAD_CSR: "the certificate signing request is malformed, badly signed or asks for too much",
  E_BAD_SAN: "a subject alternative name is not valid for its type",
  E_WEAK_KEY: "the key is weaker than the policy allows or of an unsupported type",
  E_PROFILE: "unknown profile or a request outside the profile",
  E_TTL: "the requested lifetime is invalid or outlives the issuing CA",
  E_EXISTS: "the target already exists (use --force to replace it)",
  E_NOT_FOUND: "the named certificate, file or CA does not exist",
  E_NO_CA: "no CA in the state directory (run `mtls init`)",
  E_PASSPHRASE: "wrong or missing passphrase",
  E_KEY_OFFLINE: "the key needed for this operation is kept offline",
  E_REVOKED: "the certificate is revoked",
  E_EXPIRED: "the certificate is expired or not yet valid",
  E_UNTRUSTED: "the certificate does not chain to the trusted CA",
  E_PURPOSE: "the certificate is not valid for the requested purpose",
  E_NOT_AUTHORIZED: "the verified identity is not allowed",
  E_AUDIT_TAMPERED: "the audit log's hash chain does not verify",
  E_STORE: "the state database failed",
  E_IO: "a file could not be read or written",
  E_TOKEN_INVALID: "the enrollment token is unknown, malformed or does not match",
  E_TOKEN_USED: "the enrollment token has already been used",
  E_TOKEN_EXPIRED: "the enrollment token has expired",
  E_TOKEN_SCOPE: "the request asks for more than the enrollment token grants (name, profile, SANs, lifetime)",
  E_NOT_AUTHENTICATED: "no valid client certificate was presented where one is required",
  E_RATE_LIMITED: "too many requests from this client; retry later",
  E_TOO_LARGE: "the request body is larger than allowed",
  E_UNAVAILABLE: "the CA service or another peer could not be reached or did not answer in time",
  E_HTTP: "the CA service answered with an error",
  E_NO_ACCESS_TOKEN: "no bearer access token was presented where a route requires one",
  E_BAD_ACCESS_TOKEN: "the access token is malformed, expired, badly signed or not for this service",
  E_ACCESS_TOKEN_BINDING:
    "the access token is bound to another client certificate than the one presented (RFC 8705)",
  E_PKCS11_MODULE: "the PKCS#11 module could not be loaded or initialized",
  E_PKCS11_TOKEN: "no PKCS#11 token matches the URI, or the token failed",
  E_PKCS11_PIN: "wrong or missing PKCS#11 PIN",
  E_PKCS11_LOCKED: "the PKCS#11 token's user PIN is locked (too many wrong PINs)",
  E_PKCS11_KEY: "no key matches the PKCS#11 URI, or it is of the wrong type",
  E_TLS: "the TLS connection failed: a fatal alert was sent or received, or the peer broke the protocol",
  E_TLS_CERT: "the server's certificate failed verification (other CA, expired, wrong name, bad signature)",
  E_RELAY: "the WebSocket relay refused the session, or the session to its target was lost",
  E_KEYSTORE: "the browser key store failed, or holds no such key",
  E_HTTP_PROTOCOL: "the HTTP message over the TLS stream was malformed or too large",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class MtlsError extends Error {
  override readonly name = "MtlsError";
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export function isMtlsError(err: unknown, code?: ErrorCode): err is MtlsError {
  return err instanceof MtlsError && (code === undefined || err.code === code);
}
