import { MtlsError } from "../../errors.js";

/** Why a server certificate chain was refused; the TLS client maps each to an alert. */
export type CertificateErrorReason =
  | "untrusted"
  | "expired"
  | "name"
  | "purpose"
  | "bad-signature"
  | "malformed";

/** A server certificate (chain) that failed verification: code E_TLS_CERT plus a machine-readable reason. */
export class CertificateError extends MtlsError {
  readonly reason: CertificateErrorReason;

  constructor(reason: CertificateErrorReason, message: string, options?: { cause?: unknown }) {
    super("E_TLS_CERT", message, options);
    this.reason = reason;
  }
}
