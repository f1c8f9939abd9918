import { MtlsError } from "../errors.js";
import { parseCertificates } from "../pki/certinfo.js";
import { parseSan } from "../pki/names.js";
import { BACKDATE_MS, type CertificateAuthority, type Issued } from "./authority.js";
import { LEAF_PROFILES, type LeafProfile } from "./profiles.js";
import { csrOrBadCsr } from "./tokens.js";

export interface RenewRequest {
  /** Serial of the certificate to renew (hex; colons allowed). */
  serial: string;
  /** Rekey: certify this request's key instead (its signature must verify; subject and SANs are ignored). */
  csr?: Uint8Array | string;
  /** Who asked, for the audit log (the API: `api:<serial>`). */
  actor: string;
}

/**
 * Issues the successor of a valid leaf certificate: same name, CN, profile, SANs, OU and lifetime
 * (capped by the intermediate's), a new serial and validity, for the same public key unless a CSR
 * brings a new one. The old certificate stays valid until it expires, so a service can swap without
 * a gap. Refused for revoked (E_REVOKED), expired (E_EXPIRED) and CA or OCSP certificates (E_PROFILE).
 * The `cert.renew` event (with `renewedFrom`) commits together with the new certificate.
 */
export async function renew(ca: CertificateAuthority, req: RenewRequest): Promise<Issued> {
  const now = ca.clock();
  const serial = req.serial.replace(/:/g, "").toLowerCase();
  const old = await ca.store.getCertificate(serial);
  if (!old) throw new MtlsError("E_NOT_FOUND", `no certificate with serial ${serial}`);
  if (!(LEAF_PROFILES as readonly string[]).includes(old.profile)) {
    throw new MtlsError(
      "E_PROFILE",
      `certificate ${serial} is a ${old.profile} certificate; only leaves renew`,
    );
  }
  const profile = old.profile as LeafProfile;
  if (old.status === "revoked") throw new MtlsError("E_REVOKED", `certificate ${serial} is revoked`);
  if (old.status !== "valid") {
    throw new MtlsError("E_NOT_FOUND", `certificate ${serial} was never delivered (status ${old.status})`);
  }
  if (now >= old.notAfter) {
    throw new MtlsError("E_EXPIRED", `certificate ${serial} expired at ${old.notAfter.toISOString()}`);
  }
  if (now < old.notBefore) {
    throw new MtlsError(
      "E_EXPIRED",
      `certificate ${serial} is not valid before ${old.notBefore.toISOString()}`,
    );
  }
  const [cert] = parseCertificates(old.pem);
  if (!cert) throw new MtlsError("E_STORE", `the stored certificate ${serial} is missing its PEM`);
  const csr = req.csr === undefined ? undefined : await csrOrBadCsr(req.csr);
  const spki = csr?.spki ?? cert.spki;

  // The same lifetime: issue() back-dates notBefore, so the period it wrote is ttl + BACKDATE_MS.
  const period = old.notAfter.getTime() - old.notBefore.getTime();
  const lifetime = period > BACKDATE_MS ? period - BACKDATE_MS : period;
  const room = ca.intermediate.notAfter.getTime() - now.getTime();
  if (room <= 0) {
    throw new MtlsError("E_TTL", `the intermediate CA expired at ${ca.intermediate.notAfter.toISOString()}`);
  }
  const ttlMs = Math.min(lifetime, room);

  const attrs = subjectAttributes(cert.subjectDer);
  const commonName = attrs.CN.at(-1);
  return ca.issue({
    profile,
    name: old.name,
    ...(commonName !== undefined && commonName !== old.name ? { commonName } : {}),
    sans: old.sans.map(parseSan),
    ...(attrs.OU.length ? { organizationalUnit: attrs.OU } : {}),
    ttlMs,
    spki,
    actor: req.actor,
    withinTransaction: async (tx, record) => {
      // A revocation that committed while the new certificate was being signed wins.
      const current = await tx.getCertificate(serial);
      if (current?.status !== "valid") {
        throw new MtlsError("E_REVOKED", `certificate ${serial} was revoked while it was being renewed`);
      }
      await tx.appendAudit({
        at: now,
        actor: req.actor,
        action: "cert.renew",
        subject: record.serial,
        details: {
          renewedFrom: serial,
          name: record.name,
          profile,
          rekey: csr !== undefined,
          notAfter: record.notAfter.toISOString(),
          fingerprint: record.fingerprint,
        },
      });
    },
  });
}

const OID_CN = "550403";
const OID_OU = "55040b";

/** CN and OU values of a DER Name, in order (a small reader: our own certificates, definite lengths). */
export function subjectAttributes(der: Uint8Array): { CN: string[]; OU: string[] } {
  const found: { CN: string[]; OU: string[] } = { CN: [], OU: [] };
  const bytes = Buffer.from(der.buffer, der.byteOffset, der.byteLength);
  const tlv = (at: number, end: number) => {
    if (at + 2 > end) throw new MtlsError("E_BAD_INPUT", "malformed name");
    const tag = bytes[at] as number;
    let len = bytes[at + 1] as number;
    let start = at + 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n === 0 || n > 3 || start + n > end) throw new MtlsError("E_BAD_INPUT", "malformed name");
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + (bytes[start + i] as number);
      start += n;
    }
    if (start + len > end) throw new MtlsError("E_BAD_INPUT", "malformed name");
    return { tag, start, end: start + len };
  };
  const name = tlv(0, bytes.length);
  for (let at = name.start; at < name.end; ) {
    const set = tlv(at, name.end);
    for (let a = set.start; a < set.end; ) {
      const seq = tlv(a, set.end);
      const oid = tlv(seq.start, seq.end);
      const value = tlv(oid.end, seq.end);
      const oidHex = bytes.subarray(oid.start, oid.end).toString("hex");
      const raw = bytes.subarray(value.start, value.end);
      const text =
        value.tag === 0x0c
          ? raw.toString("utf8")
          : value.tag === 0x1e
            ? utf16be(raw)
            : raw.toString("latin1");
      if (oidHex === OID_CN) found.CN.push(text);
      if (oidHex === OID_OU) found.OU.push(text);
      a = seq.end;
    }
    at = set.end;
  }
  return found;
}

function utf16be(raw: Buffer): string {
  if (raw.length % 2) return raw.toString("latin1");
  const swapped = Buffer.from(raw);
  swapped.swap16();
  return swapped.toString("utf16le");
}
