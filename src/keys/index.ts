export type { Pkcs11KeyOptions, Pkcs11ObjectInfo, Pkcs11Signer, Pkcs11SlotListing } from "./pkcs11.js";
export {
  generatePkcs11Key,
  hasPkcs11Key,
  listPkcs11,
  openOrGeneratePkcs11Key,
  openPkcs11Signer,
  PKCS11_KEY_TYPES,
} from "./pkcs11.js";
export { type PinSource, requirePin, resolveModulePath, resolvePin } from "./pkcs11-module.js";
export {
  defaultEnginePath,
  engineFailure,
  engineOpenSslConfig,
  type TokenTlsKey,
  type TokenTlsKeyOptions,
  tokenTlsKey,
} from "./pkcs11-tls.js";
export {
  formatPkcs11Uri,
  isPkcs11Uri,
  type Pkcs11Uri,
  parsePkcs11Uri,
  redactPkcs11Uri,
} from "./pkcs11-uri.js";
export { loadEncryptedKey, loadSoftwareSigner, saveEncryptedKey } from "./software.js";
