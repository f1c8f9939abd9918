import type { IncomingMessage } from "node:http";
import { TLSSocket } from "node:tls";
import type { CertificateAuthority } from "../ca/index.js";
import { sha256Hex } from "../pki/certinfo.js";
import type { CertificateRecord } from "../store/index.js";

/**
 * Who is calling, as the API sees it:
 * - `admin`: a valid certificate of this CA whose inventory name is in `ca.admins`;
 * - `holder`: any other valid certificate of this CA, acting on itself;
 * - `anonymous`: no certificate, or one that does not count (unknown, revoked, expired), with why.
 */
export type Caller =
  | { role: "admin" | "holder"; record: CertificateRecord; serial: string; actor: string }
  | { role: "anonymous"; actor: "anonymous"; why: string };

export interface AuthDeps {
  ca: CertificateAuthority;
  isAdmin: (record: CertificateRecord) => Promise<boolean>;
  clock: () => Date;
}

/**
 * OpenSSL verification results after which the certificate still identifies its holder: a server
 * certificate (EKU serverAuth only) fails OpenSSL's "SSL client" purpose check, but the handshake
 * proved its key and the inventory proves this CA issued it, which is all renewal needs (a server's
 * agent renews with the server certificate itself).
 */
const ACCEPTED_VERIFY_ERRORS = new Set(["INVALID_PURPOSE"]);

/** Node reports `authorizationError` as a string code although its types say Error. */
function verifyCode(socket: TLSSocket): string {
  const err = socket.authorizationError as unknown;
  if (typeof err === "string") return err;
  if (err && typeof err === "object") return String((err as { code?: unknown }).code ?? "UNKNOWN");
  return "UNKNOWN";
}

const anonymous = (why: string): Caller => ({ role: "anonymous", actor: "anonymous", why });

/**
 * Authenticates the client certificate of a request's TLS connection against OpenSSL's verdict
 * and the inventory: the certificate must be the very one this CA recorded (same fingerprint),
 * `valid` in the store (so a revocation made by any process bites at the next request), and inside
 * its validity period by our clock. Checked per request, not per connection, so a keep-alive
 * connection loses its rights the moment the certificate is revoked.
 */
export async function authenticate(raw: IncomingMessage, deps: AuthDeps): Promise<Caller> {
  const socket = raw.socket;
  if (!(socket instanceof TLSSocket)) return anonymous("no TLS");
  const peer = socket.getPeerCertificate(true);
  if (!peer?.raw) return anonymous("no client certificate");
  if (!socket.authorized) {
    const code = verifyCode(socket);
    if (!ACCEPTED_VERIFY_ERRORS.has(code)) return anonymous(`client certificate refused (${code})`);
  }
  const serial = peer.serialNumber.toLowerCase();
  const record = await findRecord(deps.ca, serial);
  const fingerprint = sha256Hex(new Uint8Array(peer.raw));
  if (!record || record.fingerprint !== fingerprint)
    return anonymous(`client certificate ${serial} is not in this CA's inventory`);
  if (record.issuerSerial !== deps.ca.intermediate.serial)
    return anonymous(`client certificate ${serial} was not issued by this CA's intermediate`);
  if (record.status !== "valid") return anonymous(`client certificate ${serial} is ${record.status}`);
  const now = deps.clock();
  if (now < record.notBefore || now >= record.notAfter)
    return anonymous(`client certificate ${serial} is expired or not yet valid`);
  const role = (await deps.isAdmin(record)) ? "admin" : "holder";
  return { role, record, serial: record.serial, actor: `api:${record.serial}` };
}

/**
 * Node prints serials without leading zeros in some versions and with them in others; the store
 * keeps them as written in the certificate (even length). Try the given form, then the padded one.
 */
async function findRecord(ca: CertificateAuthority, serial: string): Promise<CertificateRecord | undefined> {
  const direct = await ca.store.getCertificate(serial);
  if (direct) return direct;
  if (serial.length % 2 === 1) return ca.store.getCertificate(`0${serial}`);
  return undefined;
}
