/**
 * TLS alerts (RFC 8446 section 6): their codes and names, and the one error a TLS failure surfaces as.
 * Inside the client every protocol violation is thrown as a TlsAlertError with direction "sent"; the
 * connection then sends that alert and closes the transport. An alert from the peer surfaces with
 * direction "received".
 */
import { MtlsError } from "../../errors.js";

export const Alert = {
  close_notify: 0,
  unexpected_message: 10,
  bad_record_mac: 20,
  record_overflow: 22,
  handshake_failure: 40,
  bad_certificate: 42,
  unsupported_certificate: 43,
  certificate_revoked: 44,
  certificate_expired: 45,
  certificate_unknown: 46,
  illegal_parameter: 47,
  unknown_ca: 48,
  access_denied: 49,
  decode_error: 50,
  decrypt_error: 51,
  protocol_version: 70,
  insufficient_security: 71,
  internal_error: 80,
  inappropriate_fallback: 86,
  user_canceled: 90,
  missing_extension: 109,
  unsupported_extension: 110,
  unrecognized_name: 112,
  bad_certificate_status_response: 113,
  unknown_psk_identity: 115,
  certificate_required: 116,
  no_application_protocol: 120,
} as const;

export type AlertName = keyof typeof Alert;

const NAMES = new Map<number, string>(Object.entries(Alert).map(([name, code]) => [code, name]));

export function alertName(code: number): string {
  return NAMES.get(code) ?? `alert_${code}`;
}

const CERTIFICATE_ALERTS: ReadonlySet<number> = new Set([
  Alert.bad_certificate,
  Alert.unsupported_certificate,
  Alert.certificate_revoked,
  Alert.certificate_expired,
  Alert.certificate_unknown,
  Alert.unknown_ca,
]);

export class TlsAlertError extends MtlsError {
  readonly alert: number;
  readonly alertName: string;
  readonly direction: "sent" | "received";

  constructor(alert: number, direction: "sent" | "received", detail?: string, options?: { cause?: unknown }) {
    const name = alertName(alert);
    const message =
      direction === "received"
        ? `TLS alert ${name} (${alert}) received from the server${detail ? `: ${detail}` : ""}`
        : `TLS alert ${name} (${alert}) sent: ${detail ?? name}`;
    super(direction === "sent" && CERTIFICATE_ALERTS.has(alert) ? "E_TLS_CERT" : "E_TLS", message, options);
    this.alert = alert;
    this.alertName = name;
    this.direction = direction;
  }
}

/** A protocol violation by the peer: the connection answers it with this fatal alert. */
export function fatal(alert: number, detail: string, cause?: unknown): TlsAlertError {
  return new TlsAlertError(alert, "sent", detail, cause === undefined ? undefined : { cause });
}
