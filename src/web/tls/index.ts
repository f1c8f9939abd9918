/**
 * The TLS 1.3 client of mtls/web (RFC 8446), browser-first, all crypto through WebCrypto.
 *
 *   const tls = await connectTls(stream, { serverName: "api.example", trustAnchors: [rootDer], identity });
 *   await tls.write(bytes); const chunk = await tls.read(); await tls.close();
 */

export type { Aead, AeadAlgorithm } from "./aead.js";
export { Alert, alertName, TlsAlertError } from "./alerts.js";
export { type ClientIdentity, connectTls, type TlsClientOptions, type TlsConnection } from "./client.js";
