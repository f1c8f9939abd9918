import { X509Certificate as NodeX509 } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { writeFileAtomic } from "../config/files.js";
import { isMtlsError, MtlsError } from "../errors.js";
import { buildCertificate, randomSerial } from "../pki/certificate.js";
import { type CertInfo, certToPem, parseCertificates } from "../pki/certinfo.js";
import * as ext from "../pki/extensions.js";
import { generateKeyPair, type KeyType, spkiOf } from "../pki/keys.js";
import { buildName } from "../pki/names.js";
import { keyObjectSigner, type Signer } from "../pki/signer.js";
import { BACKDATE_MS, type CertificateAuthority, recordFor } from "./authority.js";

const DAY = 86_400_000;

/** Lifetime of the delegated OCSP responder certificate: short, as it cannot be revoked (nocheck). */
export const OCSP_CERT_TTL_MS = 30 * DAY;
/** It is replaced once this fraction of its life has passed (20 of 30 days). */
export const OCSP_CERT_RENEW_FRACTION = 2 / 3;
/** Its inventory name; its profile is "ocsp". */
export const OCSP_CERT_NAME = "ocsp-responder";

export interface ResponderIdentity {
  certificate: CertInfo;
  signer: Signer;
  /** When it is due for replacement (OCSP_CERT_RENEW_FRACTION of its life). */
  renewAt: Date;
  /** True when this call issued it. */
  issued: boolean;
}

export interface ResponderCertOptions {
  /** Lifetime of a new certificate (default 30 days; capped by the intermediate's). */
  ttlMs?: number;
  /** Fraction of its life after which it is replaced (default 2/3). */
  renewFraction?: number;
  /** Key type of a new responder key (default ec-p256; ec-p384 under a P-384 intermediate). */
  keyType?: KeyType;
  /** Audit actor of an issuance (default "system:ocsp"). */
  actor?: string;
  /** Issue a new certificate even when the current one is good. */
  force?: boolean;
}

/**
 * The delegated OCSP responder (RFC 6960 §4.2.2.2) of this CA: STATE/ca/ocsp.crt and its key
 * STATE/ca/ocsp.key (PKCS#8 encrypted with the CA passphrase, like the CA keys). The files are used
 * while they hold a certificate the current intermediate issued for OCSPSigning, with the key that
 * belongs to it, and less than 2/3 of its life is gone; otherwise a new one is issued, recorded in
 * the inventory (profile "ocsp") and the audit log, and written over them. A wrong passphrase is an
 * E_PASSPHRASE error, never a reason to replace the key.
 */
export async function ensureResponderCertificate(
  ca: CertificateAuthority,
  opts: ResponderCertOptions = {},
): Promise<ResponderIdentity> {
  const fraction = opts.renewFraction ?? OCSP_CERT_RENEW_FRACTION;
  if (!(fraction > 0 && fraction <= 1)) throw new MtlsError("E_USAGE", "renewFraction must be in (0, 1]");
  if (!opts.force) {
    const current = loadCurrent(ca, fraction);
    if (current) return current;
  }
  return issueResponderCertificate(ca, opts, fraction);
}

const renewTime = (cert: CertInfo, fraction: number): Date =>
  new Date(cert.notBefore.getTime() + (cert.notAfter.getTime() - cert.notBefore.getTime()) * fraction);

function loadCurrent(ca: CertificateAuthority, fraction: number): ResponderIdentity | undefined {
  const { ocspCert, ocspKey } = ca.paths;
  if (!existsSync(ocspCert) || !existsSync(ocspKey)) return undefined;
  let cert: CertInfo | undefined;
  try {
    cert = parseCertificates(readFileSync(ocspCert))[0];
  } catch {
    return undefined;
  }
  if (!cert || !usableFor(cert, ca)) return undefined;
  const now = ca.clock().getTime();
  const renewAt = renewTime(cert, fraction);
  if (now >= renewAt.getTime() || now < cert.notBefore.getTime()) return undefined;
  let signer: Signer;
  try {
    signer = ca.keysAtRest.load(ocspKey);
  } catch (err) {
    if (isMtlsError(err, "E_PASSPHRASE")) throw err;
    return undefined; // unreadable or damaged: replaced below
  }
  if (!Buffer.from(signer.spki).equals(Buffer.from(cert.spki))) return undefined;
  return { certificate: cert, signer, renewAt, issued: false };
}

/** Issued and signed by the current intermediate, for OCSP signing. */
function usableFor(cert: CertInfo, ca: CertificateAuthority): boolean {
  // CertInfo names the EKUs it knows ("OCSPSigning") and keeps the OID of others.
  const eku = cert.extKeyUsage;
  if (!(eku.includes("OCSPSigning") || eku.includes(ext.EKU.ocspSigning)) || cert.isCa) return false;
  try {
    const node = new NodeX509(cert.der);
    const issuer = new NodeX509(ca.intermediate.der);
    return node.checkIssued(issuer) && node.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

async function issueResponderCertificate(
  ca: CertificateAuthority,
  opts: ResponderCertOptions,
  fraction: number,
): Promise<ResponderIdentity> {
  const now = ca.clock();
  const ttl = opts.ttlMs ?? OCSP_CERT_TTL_MS;
  if (!Number.isFinite(ttl) || ttl <= 0)
    throw new MtlsError("E_TTL", "the OCSP certificate lifetime must be positive");
  const notAfter = new Date(Math.min(now.getTime() + ttl, ca.intermediate.notAfter.getTime()));
  const notBefore = new Date(now.getTime() - BACKDATE_MS);
  if (!(notBefore < notAfter)) {
    throw new MtlsError("E_TTL", "the intermediate CA expires too soon to certify an OCSP responder");
  }
  const keyType = opts.keyType ?? (ca.intermediate.keyType === "ec-p384" ? "ec-p384" : "ec-p256");
  const key = generateKeyPair(keyType).privateKey;
  const spki = spkiOf(key);
  const der = await buildCertificate(
    {
      serial: randomSerial(),
      issuer: ca.intermediate.subjectDer,
      subject: buildName({
        organization: ca.settings.name,
        commonName: `${ca.settings.name} OCSP Responder`,
      }),
      notBefore,
      notAfter,
      spki,
      // RFC 6960 §4.2.2.2 and PKI-PROFILE: OCSPSigning, nocheck, short-lived; no CDP/AIA (nothing to check).
      extensions: [
        ext.basicConstraints(false),
        ext.keyUsage(ext.KEY_USAGE.digitalSignature),
        ext.extendedKeyUsage([ext.EKU.ocspSigning]),
        ext.ocspNoCheck(),
        ext.subjectKeyIdentifier(spki),
        ext.authorityKeyIdentifier(ca.intermediate.spki),
      ],
    },
    ca.intermediateSigner(),
  );
  const [certificate] = parseCertificates(der);
  if (!certificate) throw new MtlsError("E_IO", "the new OCSP responder certificate does not parse");
  const record = recordFor(certificate, {
    name: OCSP_CERT_NAME,
    profile: "ocsp",
    issuerSerial: ca.intermediate.serial,
    status: "valid",
    certPath: ca.paths.ocspCert,
    keyPath: ca.paths.ocspKey,
    now,
  });
  // Inventory first: a crash before the files are written leaves a recorded certificate whose key
  // is gone (harmless, replaced on the next start), never a certificate in use that is not recorded.
  await ca.store.transaction(async (tx) => {
    await tx.insertCertificate(record);
    await tx.appendAudit({
      at: now,
      actor: opts.actor ?? "system:ocsp",
      action: "cert.issue",
      subject: record.serial,
      details: {
        name: record.name,
        profile: record.profile,
        subject: record.subject,
        sans: record.sans,
        keyType: record.keyType,
        notAfter: record.notAfter.toISOString(),
        fingerprint: record.fingerprint,
      },
    });
  });
  // The key first: a certificate beside a key that is not its own is detected and replaced.
  ca.keysAtRest.save(ca.paths.ocspKey, key);
  writeFileAtomic(ca.paths.ocspCert, certToPem(der), { overwrite: true });
  return {
    certificate,
    signer: keyObjectSigner(key),
    renewAt: renewTime(certificate, fraction),
    issued: true,
  };
}
