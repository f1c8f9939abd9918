/**
 * Browser-safe X.509 for the TS TLS 1.3 client of mtls/web: server chain verification, TLS
 * SignatureScheme verification, ECDSA signature format conversion. WebCrypto only; parsing with
 * @peculiar/asn1-x509 and a strict DER reader.
 */

export {
  MAX_INPUT_CERTIFICATES,
  MAX_PATH_LENGTH,
  type VerifyServerChainInput,
  verifyServerChain,
} from "./chain.js";
export { ecdsaDerToRaw, ecdsaRawToDer } from "./ecdsa.js";
export { CertificateError, type CertificateErrorReason } from "./errors.js";
export { certificatesFromPem } from "./pem.js";
export { isCertificateVerifyScheme, SIGNATURE_SCHEMES, verifySchemeSignature } from "./signature.js";
