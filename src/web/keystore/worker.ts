/**
 * The key store worker's entry (bundled as dist/web/keystore-worker.js): keys in the IndexedDB
 * database "mtls-keystore", reached only through the message protocol of protocol.ts.
 *   const store = KeyStoreClient.connect(new Worker(new URL("keystore-worker.js", import.meta.url), { type: "module" }));
 */
import { type MessageEndpoint, serveKeyStore } from "./host.js";
import { indexedDbStorage, KEYSTORE_DB_NAME } from "./storage.js";

serveKeyStore(globalThis as unknown as MessageEndpoint, indexedDbStorage(KEYSTORE_DB_NAME));
