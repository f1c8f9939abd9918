import { derExplicit, derSequence, derSmallInteger, derTlv } from "./der.js";
import { subjectAltName } from "./extensions.js";
import { buildName, type San, type SubjectFields } from "./names.js";
import { pemEncode } from "./pem.js";
import type { Signer } from "./signer.js";

export interface CsrTemplate {
  /** The subject (CAs of mtls ignore it and take the name from the token or current certificate). */
  subject: SubjectFields;
  /** Subject alternative names to ask for, carried in an extensionRequest attribute. */
  sans?: San[];
}

// pkcs-9-at-extensionRequest (RFC 2985 §5.4.2)
const OID_EXTENSION_REQUEST = new Uint8Array([
  0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e,
]);

/**
 * Builds and signs a PKCS#10 certificate signing request (RFC 2986) for the signer's key. Pure: the
 * key signs through the Signer, nothing is read or written.
 *
 *   CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature }
 *   CertificationRequestInfo ::= SEQUENCE { version 0, subject, subjectPKInfo, attributes [0] }
 */
export async function buildCsr(tpl: CsrTemplate, signer: Signer): Promise<Uint8Array> {
  const sans = tpl.sans ?? [];
  const subject = buildName(tpl.subject);
  const attributes = sans.length
    ? [
        derSequence(
          OID_EXTENSION_REQUEST,
          derTlv(0x31, derSequence(subjectAltName(sans, tpl.subject.commonName === undefined))),
        ),
      ]
    : [];
  const info = derSequence(derSmallInteger(0), subject, signer.spki, derExplicit(0, ...attributes));
  const signature = await signer.sign(info);
  return derSequence(info, signer.algorithmDer, derTlv(0x03, new Uint8Array([0]), signature));
}

/** The same request as PEM ("CERTIFICATE REQUEST"), the form the CA's API takes. */
export async function buildCsrPem(tpl: CsrTemplate, signer: Signer): Promise<string> {
  return pemEncode("CERTIFICATE REQUEST", await buildCsr(tpl, signer));
}
