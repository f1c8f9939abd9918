import "reflect-metadata";
import {
  BasicConstraintsExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Pkcs10CertificateRequest,
  SubjectAlternativeNameExtension,
} from "@peculiar/x509";
import { MtlsError } from "../errors.js";
import { type KeyType, keyTypeOf, publicKeyFromSpki } from "./keys.js";
import { makeSan, type San } from "./names.js";
import { derBlocks } from "./pem.js";

export interface CsrInfo {
  der: Uint8Array;
  subject: string;
  commonName: string | undefined;
  spki: Uint8Array;
  keyType: KeyType;
  /** Validated subject alternative names requested in the extensionRequest. */
  sans: San[];
  /** OIDs of requested extensions mtls does not copy (everything but SAN). */
  ignoredExtensions: string[];
}

/**
 * Parses a PKCS#10 request, verifies its self-signature and enforces the key policy. A request that
 * asks to be a CA is refused outright rather than quietly downgraded, so the requester learns why.
 */
export async function parseCsr(data: Uint8Array | string): Promise<CsrInfo> {
  const [der] = derBlocks(
    data,
    ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
    "certificate signing request",
  );
  let csr: Pkcs10CertificateRequest;
  try {
    csr = new Pkcs10CertificateRequest(der as BufferSource);
  } catch (err) {
    throw new MtlsError("E_BAD_CSR", "malformed certificate signing request", { cause: err });
  }
  // Key policy first: a key we refuse (RSA-1024, secp256k1) should say so, not "bad signature".
  const spki = new Uint8Array(csr.publicKey.rawData);
  const keyType = keyTypeOf(publicKeyFromSpki(spki));
  let valid = false;
  try {
    valid = await csr.verify();
  } catch {
    valid = false;
  }
  if (!valid) throw new MtlsError("E_BAD_CSR", "the CSR's signature does not verify");

  const find = <T>(cls: abstract new (...args: never[]) => T): T | undefined =>
    csr.extensions.find((e): e is T & typeof e => e instanceof cls) as T | undefined;
  const bc = find(BasicConstraintsExtension);
  if (bc?.ca)
    throw new MtlsError(
      "E_BAD_CSR",
      "the CSR asks for CA:TRUE; mtls never issues CA certificates from a CSR",
    );
  const ku = find(KeyUsagesExtension);
  if (ku && ku.usages & (KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign)) {
    throw new MtlsError("E_BAD_CSR", "the CSR asks for keyCertSign/cRLSign; refused");
  }
  const sanExt = find(SubjectAlternativeNameExtension);
  const sans: San[] = [];
  for (const n of sanExt?.names.items ?? []) {
    const type = n.type === "url" ? "uri" : n.type;
    if (type !== "dns" && type !== "ip" && type !== "email" && type !== "uri") {
      throw new MtlsError(
        "E_BAD_CSR",
        `the CSR asks for an unsupported subject alternative name type "${n.type}"`,
      );
    }
    sans.push(makeSan(type, n.value));
  }
  const cn = csr.subjectName.getField("CN")[0];
  return {
    der: der as Uint8Array,
    subject: csr.subject,
    commonName: cn,
    spki,
    keyType,
    sans,
    ignoredExtensions: [...csr.extensions].map((e) => e.type).filter((oid) => oid !== "2.5.29.17"),
  };
}
