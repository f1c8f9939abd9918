/** mtls/web key store: non-extractable ECDSA P-256 keys behind a message protocol. */
export {
  ECDSA_P256_SHA256,
  KeyStoreClient,
  type KeyStoreClientOptions,
  windowEndpoint,
} from "./client.js";
export { type KeyStoreHost, type MessageEndpoint, type ServeOptions, serveKeyStore } from "./host.js";
export {
  type KeyInfo,
  type KeyStoreReply,
  type KeyStoreRequest,
  LIMITS,
  PROTOCOL_VERSION,
  parseRequest,
} from "./protocol.js";
export {
  indexedDbStorage,
  KEYSTORE_DB_NAME,
  type KeyRecord,
  type KeyStorage,
  memoryStorage,
} from "./storage.js";
