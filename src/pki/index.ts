export { buildCertificate, type CertificateTemplate, randomSerial } from "./certificate.js";
export { type CertInfo, certToPem, parseCertificate, parseCertificates, sha256Hex } from "./certinfo.js";
export {
  buildCrl,
  type CrlEntry,
  type CrlInfo,
  type CrlTemplate,
  crlToPem,
  parseCrls,
  parseReason,
  REVOCATION_REASONS,
  type ReasonName,
} from "./crl.js";
export { type CrlIndex, crlSignedBy, indexCrl, indexCrls } from "./crl-index.js";
export { type CsrInfo, parseCsr } from "./csr.js";
export { buildCsr, buildCsrPem, type CsrTemplate } from "./csr-builder.js";
export * as extensions from "./extensions.js";
export { decryptPrivateKey, encryptPrivateKey } from "./key-encryption.js";
export {
  generateKeyPair,
  isKeyType,
  KEY_TYPES,
  type KeyPair,
  type KeyType,
  keyTypeOf,
  parseKeyType,
  pkcs8Of,
  privateKeyFromPem,
  privateKeyFromPkcs8,
  publicKeyFromSpki,
  spkiOf,
} from "./keys.js";
export {
  buildName,
  formatSan,
  makeSan,
  parseSan,
  type San,
  type SanType,
  type SubjectFields,
} from "./names.js";
export {
  buildOcspRequest,
  type CertIdHash,
  certIdFor,
  certIdHash,
  certIdMatches,
  certIdMatchesIssuer,
  issuerKeyHash,
  issuerNameHash,
  normalizeSerial,
  OCSP_CLOCK_SKEW_MS,
  OCSP_NONCE_OID,
  OCSP_SIGNING_EKU,
  type OcspAnswer,
  type ParsedOcspRequest,
  parseOcspRequest,
  parseOcspResponse,
  responderKeyHash,
  serialFromInteger,
} from "./ocsp.js";
export { derBlocks, pemDecodeAll, pemEncode } from "./pem.js";
export { type BuildPkcs12Options, buildPkcs12, type Pkcs12Contents, parsePkcs12 } from "./pkcs12.js";
export { verifySignature } from "./signed-data.js";
export { keyObjectSigner, type Signer, signatureAlgorithmFor } from "./signer.js";
export { type Purpose, type VerifyInput, type VerifyResult, verifyChain } from "./verify.js";
