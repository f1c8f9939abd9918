import { X509Certificate as NodeX509 } from "node:crypto";
import { MtlsError } from "../errors.js";
import type { CertInfo } from "./certinfo.js";
import type { CrlInfo } from "./crl.js";
import { crlSignedBy } from "./crl-index.js";

export type Purpose = "server" | "client" | "any";

export interface VerifyInput {
  leaf: CertInfo;
  /** Untrusted certificates that may complete the chain (the rest of the leaf's file, the CA's intermediate). */
  intermediates: CertInfo[];
  /** Trust anchors (roots). */
  anchors: CertInfo[];
  at: Date;
  purpose: Purpose;
  /** CRLs to check each level against; a level with no CRL is reported as unchecked. */
  crls?: CrlInfo[];
}

export interface VerifyResult {
  /** Leaf first, anchor last. */
  chain: CertInfo[];
  /** For each non-anchor certificate: "good (CRL #n)", or "not checked". */
  revocation: string[];
}

const EKU_FOR: Record<Exclude<Purpose, "any">, string> = { server: "serverAuth", client: "clientAuth" };

/**
 * Path validation as a relying party does it (RFC 5280 §6, the parts mtls's CAs use): signatures,
 * validity at `at`, CA flags and path length, key usage, the leaf's extended key usage for the
 * purpose, and revocation against signed, current CRLs. Throws an MtlsError saying which check failed.
 */
export async function verifyChain(input: VerifyInput): Promise<VerifyResult> {
  const chain = buildPath(input.leaf, input.intermediates, input.anchors);
  const revocation: string[] = [];
  for (let i = 0; i < chain.length; i++) {
    const cert = chain[i] as CertInfo;
    if (input.at < cert.notBefore) {
      throw new MtlsError(
        "E_EXPIRED",
        `${label(cert, i)} is not valid before ${cert.notBefore.toISOString()}`,
      );
    }
    if (input.at > cert.notAfter) {
      throw new MtlsError("E_EXPIRED", `${label(cert, i)} expired at ${cert.notAfter.toISOString()}`);
    }
    if (i > 0) {
      if (!cert.isCa)
        throw new MtlsError(
          "E_UNTRUSTED",
          `${label(cert, i)} is not a CA but issued ${chain[i - 1]?.subject}`,
        );
      if (cert.keyUsage.length && !cert.keyUsage.includes("keyCertSign")) {
        throw new MtlsError("E_UNTRUSTED", `${label(cert, i)} may not sign certificates (no keyCertSign)`);
      }
      if (cert.pathLen !== undefined && i - 1 > cert.pathLen) {
        throw new MtlsError("E_UNTRUSTED", `${label(cert, i)} allows a path length of ${cert.pathLen}`);
      }
    }
  }
  if (input.purpose !== "any") {
    const eku = EKU_FOR[input.purpose];
    const leaf = input.leaf;
    if (leaf.extKeyUsage.length && !leaf.extKeyUsage.includes(eku)) {
      throw new MtlsError(
        "E_PURPOSE",
        `the certificate is not valid for ${input.purpose} authentication (EKU: ${leaf.extKeyUsage.join(", ")})`,
      );
    }
    if (leaf.keyUsage.length && !leaf.keyUsage.includes("digitalSignature")) {
      throw new MtlsError("E_PURPOSE", "the certificate's key usage lacks digitalSignature, which TLS needs");
    }
  }
  for (let i = 0; i < chain.length - 1; i++) {
    const cert = chain[i] as CertInfo;
    const issuer = chain[i + 1] as CertInfo;
    revocation.push(await checkRevocation(cert, issuer, input.crls ?? [], input.at));
  }
  return { chain, revocation };
}

function label(cert: CertInfo, depth: number): string {
  return depth === 0 ? `the certificate (${cert.subject})` : `the CA certificate ${cert.subject}`;
}

function issuedBy(cert: CertInfo, issuer: CertInfo): boolean {
  const c = new NodeX509(cert.der);
  const i = new NodeX509(issuer.der);
  return c.checkIssued(i) && c.verify(i.publicKey);
}

function buildPath(leaf: CertInfo, intermediates: CertInfo[], anchors: CertInfo[]): CertInfo[] {
  const chain = [leaf];
  for (let depth = 0; depth < 8; depth++) {
    const current = chain[chain.length - 1] as CertInfo;
    const anchor = anchors.find((a) => a.fingerprint === current.fingerprint || issuedBy(current, a));
    if (anchor) {
      if (anchor.fingerprint !== current.fingerprint) chain.push(anchor);
      return chain;
    }
    const next = intermediates.find((c) => c.fingerprint !== current.fingerprint && issuedBy(current, c));
    if (!next || chain.some((c) => c.fingerprint === next.fingerprint)) break;
    chain.push(next);
  }
  const top = chain[chain.length - 1] as CertInfo;
  throw new MtlsError(
    "E_UNTRUSTED",
    `no trusted issuer found for ${top.subject} (issuer ${top.issuer}): not from this CA`,
  );
}

async function checkRevocation(cert: CertInfo, issuer: CertInfo, crls: CrlInfo[], at: Date): Promise<string> {
  const serial = cert.serial.replace(/^0+(?=.)/, "");
  // The newest CRL the issuer really signed decides.
  const signed = crls
    .filter((crl) => crlSignedBy(crl.index, issuer))
    .sort((a, b) => (b.crlNumber ?? 0) - (a.crlNumber ?? 0));
  const crl = signed[0];
  if (!crl) return "not checked (no CRL from its issuer)";
  const entry = signed.map((c) => c.index.entries.get(serial)).find((e) => e !== undefined);
  if (entry) {
    throw new MtlsError(
      "E_REVOKED",
      `${cert.subject} (serial ${cert.serial}) was revoked at ${entry.revokedAt.toISOString()} (${entry.reason})`,
    );
  }
  if (crl.nextUpdate && crl.nextUpdate < at) {
    throw new MtlsError(
      "E_EXPIRED",
      `the CRL of ${issuer.subject} is out of date (nextUpdate ${crl.nextUpdate.toISOString()})`,
    );
  }
  return `good (CRL #${crl.crlNumber ?? "?"})`;
}
