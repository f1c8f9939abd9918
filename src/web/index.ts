/**
 * `mtls/web`: mutual TLS from inside a web page. The page keeps a non-extractable key in a worker
 * (keystore), speaks TLS 1.3 itself (tls) over a WebSocket relay (relay) to any mTLS server, and
 * talks HTTP/1.1 over that (http). `createMtlsClient` wires the three together into a `fetch`.
 *
 * Runs in browsers and in Node 20 (tests). Imports only browser APIs and browser-safe modules.
 */
import { MtlsError } from "../errors.js";
import { createHttpClient, type HttpClient, type HttpRequestInit } from "./http/index.js";
import { openRelay, type RelayWebSocketConstructor } from "./relay.js";
import type { ByteStream } from "./stream.js";
import { type ClientIdentity, connectTls, type TlsClientOptions } from "./tls/index.js";
import { certificatesFromPem } from "./x509/index.js";

export { type BuildCsrOptions, buildCsr, type Csr, type CsrSans } from "./csr.js";
export {
  CaHttpError,
  type EnrollKeyStore,
  type EnrollOptions,
  enroll,
  type FetchLike,
  type IssuedResponse,
  needsRenewal,
  type RenewOptions,
  renew,
  renewalTime,
} from "./enroll.js";
export {
  createHttpClient,
  type HttpClient,
  type HttpClientOptions,
  type HttpRequestInit,
} from "./http/index.js";
export {
  ECDSA_P256_SHA256,
  indexedDbStorage,
  type KeyInfo,
  type KeyRecord,
  type KeyStorage,
  KeyStoreClient,
  type KeyStoreClientOptions,
  type KeyStoreHost,
  type KeyStoreReply,
  type KeyStoreRequest,
  LIMITS as KEYSTORE_LIMITS,
  type MessageEndpoint,
  memoryStorage,
  PROTOCOL_VERSION as KEYSTORE_PROTOCOL_VERSION,
  type ServeOptions,
  serveKeyStore,
  windowEndpoint,
} from "./keystore/index.js";
export {
  openRelay,
  RelayError,
  type RelayOptions,
  type RelayWebSocket,
  type RelayWebSocketConstructor,
} from "./relay.js";
export type { ByteStream } from "./stream.js";
export { CHACHA20_POLY1305, CHACHA20_POLY1305_AVAILABLE } from "./tls/chacha20-poly1305.js";
export {
  type Aead,
  type AeadAlgorithm,
  Alert,
  alertName,
  type ClientIdentity,
  connectTls,
  TlsAlertError,
  type TlsClientOptions,
  type TlsConnection,
} from "./tls/index.js";
export {
  CertificateError,
  type CertificateErrorReason,
  certificatesFromPem,
  ecdsaDerToRaw,
  ecdsaRawToDer,
  isCertificateVerifyScheme,
  SIGNATURE_SCHEMES,
  type VerifyServerChainInput,
  verifySchemeSignature,
  verifyServerChain,
} from "./x509/index.js";

export interface MtlsClientOptions {
  /**
   * The relay to reach the server through: the wss URL of the gateway's `/.mtls/relay/NAME`, or a
   * function of the request's origin when different origins sit behind different relays.
   */
  relay: string | ((origin: URL) => string);
  /** The CA roots the server's certificate must chain to: DER certificates, or PEM text. */
  trustAnchors: Uint8Array[] | string;
  /**
   * The page's client certificate and signing key (from `KeyStoreClient.identity`). A function is
   * asked again for every new connection, so a renewed certificate is used without a new client.
   */
  identity?: ClientIdentity | (() => ClientIdentity | undefined | Promise<ClientIdentity | undefined>);
  /** The name the server certificate must carry; default: the request URL's host name. */
  serverName?: string;
  /** Further TLS options (groups, cipher suites, ALPN, clock, handshake timeout). */
  tls?: Partial<TlsClientOptions>;
  /** The WebSocket constructor; default: the global `WebSocket` (in Node 20: the `ws` package's). */
  WebSocketImpl?: RelayWebSocketConstructor;
  /** How long opening the relay may take, in ms (passed to `openRelay`). */
  relayTimeoutMs?: number;
  /** Keep-alive pool limits of the HTTP client. */
  maxIdlePerOrigin?: number;
  idleTimeoutMs?: number;
  maxHeaderBytes?: number;
}

export interface MtlsClient {
  /** Like the global `fetch`, but every request travels over the page's own mutual TLS. */
  fetch(input: string | URL, init?: HttpRequestInit): Promise<Response>;
  /** Closes every pooled connection (sending close_notify). The client is unusable afterwards. */
  close(): Promise<void>;
}

/** Relay -> TLS 1.3 -> HTTP/1.1: a fetch whose connections are the page's own mTLS sessions. */
export function createMtlsClient(options: MtlsClientOptions): MtlsClient {
  if (typeof options.relay !== "string" && typeof options.relay !== "function") {
    throw new MtlsError("E_USAGE", "createMtlsClient: `relay` must be a wss URL or a function of the origin");
  }
  const trustAnchors =
    typeof options.trustAnchors === "string"
      ? certificatesFromPem(options.trustAnchors)
      : options.trustAnchors;
  if (trustAnchors.length === 0) {
    throw new MtlsError("E_USAGE", "createMtlsClient: `trustAnchors` holds no certificate");
  }

  const connect = async (origin: URL): Promise<ByteStream> => {
    if (origin.protocol !== "https:") {
      throw new MtlsError("E_USAGE", `mtls/web only speaks https (mutual TLS), not ${origin.protocol}`);
    }
    const relayUrl = typeof options.relay === "string" ? options.relay : options.relay(origin);
    const identity = typeof options.identity === "function" ? await options.identity() : options.identity;
    const transport = await openRelay(relayUrl, {
      ...(options.relayTimeoutMs !== undefined ? { timeoutMs: options.relayTimeoutMs } : {}),
      ...(options.WebSocketImpl !== undefined ? { WebSocketImpl: options.WebSocketImpl } : {}),
    });
    try {
      const tls = await connectTls(transport, {
        alpn: ["http/1.1"],
        ...options.tls,
        serverName: options.serverName ?? options.tls?.serverName ?? hostOf(origin),
        trustAnchors,
        ...(identity !== undefined ? { identity } : {}),
      });
      return closingBoth(tls, transport);
    } catch (err) {
      await transport.close().catch(() => {});
      throw err;
    }
  };

  const http: HttpClient = createHttpClient({
    connect,
    ...(options.maxIdlePerOrigin !== undefined ? { maxIdlePerOrigin: options.maxIdlePerOrigin } : {}),
    ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    ...(options.maxHeaderBytes !== undefined ? { maxHeaderBytes: options.maxHeaderBytes } : {}),
  });
  return {
    fetch: (input, init) => http.fetch(input, init),
    close: () => http.close(),
  };
}

let defaultClient: MtlsClient | undefined;

/**
 * Sets up the client behind `mtlsFetch` (closing the previous one, if any) and returns it.
 * Call it again after renewal to switch identity, or pass `identity` as a function.
 */
export function configureMtlsFetch(options: MtlsClientOptions): MtlsClient {
  const previous = defaultClient;
  defaultClient = createMtlsClient(options);
  if (previous) void previous.close().catch(() => {});
  return defaultClient;
}

/** `fetch` over mutual TLS through the client set by `configureMtlsFetch`. */
export function mtlsFetch(input: string | URL, init?: HttpRequestInit): Promise<Response> {
  if (!defaultClient) {
    return Promise.reject(
      new MtlsError("E_USAGE", "mtlsFetch: call configureMtlsFetch({ relay, trustAnchors, identity }) first"),
    );
  }
  return defaultClient.fetch(input, init);
}

/** The URL's host name as TLS wants it in server_name / name checks (IPv6 without brackets). */
function hostOf(origin: URL): string {
  const host = origin.hostname;
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/** The TLS connection, whose close() also closes the relay under it (both are idempotent). */
function closingBoth(tls: ByteStream, transport: ByteStream): ByteStream {
  return {
    read: () => tls.read(),
    write: (data) => tls.write(data),
    close: async () => {
      try {
        await tls.close();
      } finally {
        await transport.close().catch(() => {});
      }
    },
  };
}
