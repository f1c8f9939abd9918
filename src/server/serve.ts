import { existsSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { createSecureContext, type SecureContextOptions } from "node:tls";
import type { FastifyInstance } from "fastify";
import {
  adminNames,
  type CertificateAuthority,
  CrlPublisher,
  createToken,
  enroll,
  ensureAdmin,
  initCa,
  isAdmin,
  OcspResponder,
  openCa,
  RevocationFeed,
  renew,
} from "../ca/index.js";
import { resolvePassphrase } from "../config/passphrase.js";
import { hasCa, type StatePaths } from "../config/state.js";
import { MtlsError } from "../errors.js";
import { engineFailure, isPkcs11Uri, parsePkcs11Uri, type TokenTlsKey, tokenTlsKey } from "../keys/index.js";
import {
  createLogger,
  createRegistry,
  type Logger,
  type StatusServer,
  startStatusServer,
} from "../observe/index.js";
import type { CertInfo } from "../pki/certinfo.js";
import type { San } from "../pki/names.js";
import { DEFAULT_CIPHERS } from "../tls/material.js";
import { buildApp } from "./app.js";
import type { CaServices, ServerContext } from "./context.js";
import { formatListen, type ListenAddress, parseListen, urlFor } from "./listen.js";
import { serverMetrics } from "./metrics.js";
import { withOcspFastPath } from "./ocsp-fast.js";
import { RateLimiter } from "./rate-limit.js";
import { ensureServerCert, type ServerCert, wantedServerSans } from "./server-cert.js";

/** The actor of what the service does by itself (its own certificate, the first admin). */
export const SERVICE_ACTOR = "system:ca-serve";

export interface CaServeOptions {
  paths: StatePaths;
  /** HTTPS API: "HOST:PORT" (default 127.0.0.1:8443; port 0 picks a free one). */
  listen?: string;
  /** Plain HTTP for /crl, /crl/root, /ocsp, /healthz (default 127.0.0.1:8080); null: none. */
  publicListen?: string | null;
  /** /metrics, /healthz, /readyz on this address (observe/status-server). */
  status?: string;
  /** More names for the API's certificate ("dns:x", "ip:x" or a bare host). */
  sans?: string[];
  /** --passphrase-file; else MTLS_PASSPHRASE; else STATE/passphrase. */
  passphraseFile?: string;
  env?: NodeJS.ProcessEnv;
  /** Create the CA when there is none, and make sure it has a usable admin certificate. */
  init?: boolean;
  /** Name of a CA created by `init` (default "mtls"). */
  caName?: string;
  /** Requests per second per client address on the unauthenticated endpoints (default 20; 0: off). */
  rateLimit?: number;
  logger?: Logger;
  logLevel?: string;
  /** How often the service checks its own certificate and re-reads settings (default 60 s). */
  maintenanceMs?: number;
  /** Drain time on close before open connections are cut (default 10 s). */
  drainMs?: number;
  /**
   * The HTTPS key in a PKCS#11 token (`pkcs11:token=...;object=...`): the API's certificate is issued
   * for its public key and TLS signs in the token through OpenSSL's pkcs11 engine, registered with
   * OPENSSL_CONF (`mtls hsm openssl-config`). Else a software key in STATE/server/.
   */
  tlsKey?: string;
  /** The module for `tlsKey` (else the URI's module-path, MTLS_PKCS11_MODULE, the CA's ca.pkcs11Module). */
  pkcs11Module?: string;
  /** The token's user PIN for `tlsKey` and a CA key in a token (else MTLS_PKCS11_PIN / MTLS_PKCS11_PIN_FILE). */
  pinFile?: string;
  /**
   * The revocation feed behind GET /v1/revocations/stream: how often it reads the audit log without
   * a wake-up (default 1 s on SQLite, 5 s on PostgreSQL, where NOTIFY wakes it) and the streams'
   * heartbeat and limits (defaults 5 s, 1000 streams, 1 MiB unsent per stream).
   */
  revocationFeed?: { pollMs?: number; heartbeatMs?: number; maxStreams?: number; maxBufferedBytes?: number };
}

export interface RunningCaServer {
  ca: CertificateAuthority;
  /** The HTTPS API's bound address and URL. */
  api: ListenAddress & { url: string };
  /** Every revocation in the store as it happens (what /v1/revocations/stream sends). */
  revocationFeed: RevocationFeed;
  public?: ListenAddress & { url: string };
  status?: StatusServer;
  /** The API's certificate in use. */
  serverCertificate(): CertInfo;
  /** Set when this start created the CA. */
  created?: { generatedPassphraseFile?: string };
  /** With `init`: the admin identity and where its files are. */
  admin?: {
    name: string;
    serial: string;
    created: boolean;
    cert?: string;
    key?: string;
    p12?: string;
    /** The file holding the PKCS#12's password (ensureAdmin writes NAME.p12.password). */
    p12Password?: string;
  };
  /** Re-reads settings and renews the API's certificate when due (SIGHUP). */
  reload(): Promise<void>;
  /** Stops accepting, drains in-flight requests, closes everything (SIGTERM). Idempotent. */
  close(): Promise<void>;
}

const boundAddress = (server: { address(): AddressInfo | string | null }, wanted: ListenAddress) => {
  const a = server.address();
  return typeof a === "object" && a ? { host: wanted.host, port: a.port } : wanted;
};

/** Creates the CA first when asked to (`mtls ca serve --init`, what `npm start` runs). */
async function initIfMissing(opts: CaServeOptions): Promise<RunningCaServer["created"]> {
  if (!opts.init || hasCa(opts.paths)) return undefined;
  const found = resolvePassphrase(
    { ...(opts.passphraseFile ? { file: opts.passphraseFile } : {}), env: opts.env ?? process.env },
    opts.paths.passphrase,
  );
  const res = await initCa({
    paths: opts.paths,
    name: opts.caName ?? "mtls",
    actor: SERVICE_ACTOR,
    ...(found ? { passphrase: found.passphrase } : {}),
  });
  return res.generatedPassphraseFile ? { generatedPassphraseFile: res.generatedPassphraseFile } : {};
}

/**
 * `mtls ca serve`: the CA as a service. Opens the CA (the passphrase is needed up front: the service
 * signs), makes sure its own HTTPS certificate is current, starts the OCSP responder and the CRL
 * publisher, and listens: HTTPS with the whole API on `listen`, plain HTTP with the revocation
 * endpoints on `publicListen`, metrics on `status`.
 */
export async function startCaServer(opts: CaServeOptions): Promise<RunningCaServer> {
  const logger = opts.logger ?? createLogger({ name: "ca-server", level: opts.logLevel ?? "info" });
  const apiAddr = parseListen(opts.listen ?? "127.0.0.1:8443", "--listen");
  const pubAddr =
    opts.publicListen === null
      ? undefined
      : parseListen(opts.publicListen ?? "127.0.0.1:8080", "--public-listen");
  const statusAddr = opts.status ? parseListen(opts.status, "--status") : undefined;
  const created = await initIfMissing(opts);

  const ca = await openCa(opts.paths, {
    ...(opts.passphraseFile ? { passphraseFile: opts.passphraseFile } : {}),
    // The same token usually holds the CA key and the HTTPS key: one PIN file serves both.
    ...(opts.pinFile ? { pinFile: opts.pinFile } : {}),
    env: opts.env ?? process.env,
  });
  const cleanups: (() => Promise<void> | void)[] = [() => ca.store.close()];
  const unwind = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
    cleanups.length = 0;
  };
  try {
    // Fail now, not at the first enrollment, when the key cannot be unlocked.
    ca.intermediateSigner();
    const admin = await adminInfo(ca, opts.init ?? false);

    const ocsp = await OcspResponder.open(ca, {
      onError: (err) => logger.error({ err: err.message }, "OCSP responder"),
    });
    cleanups.push(() => ocsp.close());
    const crl = new CrlPublisher(ca, {
      actor: SERVICE_ACTOR,
      onError: (err) => logger.error({ err: err.message }, "CRL publisher"),
    });
    cleanups.push(() => crl.close());
    await crl.start();

    // After the responder and the publisher: revocations by other processes and nodes reach them
    // through it (ca.events "revoked" with origin.foreign).
    const { pollMs, ...streamLimits } = opts.revocationFeed ?? {};
    const feed = new RevocationFeed(ca, {
      ...(pollMs !== undefined ? { pollMs } : {}),
      onError: (err) => logger.error({ err: err.message }, "revocation feed"),
      onListening: (up, err) =>
        up
          ? logger.info("revocation feed: listening for PostgreSQL notifications")
          : logger.warn(
              { err: err?.message },
              "revocation feed: PostgreSQL LISTEN connection lost; polling until it is back",
            ),
    });
    cleanups.push(() => feed.close());
    await feed.start();

    const registry = createRegistry();
    const metrics = serverMetrics(registry, ca.clock);
    metrics.watchRevocationFeed(() => feed.state().listening);
    const services: CaServices = {
      createToken: (grant, o) => createToken(ca, grant, o),
      enroll: (req) => enroll(ca, req),
      renew: (req) => renew(ca, req),
      isAdmin: (rec) => isAdmin(ca, rec),
      ocsp: (der) => ocsp.respond(der),
      crls: () => crl.current(),
    };
    const ctx: ServerContext = {
      ca,
      services,
      logger,
      limiter: new RateLimiter({ rate: opts.rateLimit ?? 20 }),
      metrics,
      clock: ca.clock,
      revocations: { source: feed, ...streamLimits },
    };

    const tokenKey = opts.tlsKey ? await openTlsKey(ca, opts) : undefined;
    const extraSans = opts.sans ?? [];
    const sansNow = (): San[] => wantedServerSans([apiAddr.host], extraSans, ca.settings.publicUrl);
    let cert: ServerCert = await ensureServerCert(ca, {
      stateDir: opts.paths.dir,
      sans: sansNow(),
      actor: SERVICE_ACTOR,
      ...(tokenKey ? { spki: tokenKey.spki } : {}),
    });
    if (cert.issued)
      logger.info({ serial: cert.leaf.serial, why: cert.issued }, "issued the API's HTTPS certificate");
    metrics.watchServerCertificate(() => cert.leaf.notAfter);
    const tlsOptions = (c: ServerCert): SecureContextOptions => ({
      // A token key signs inside the token through the engine; the PIN rides in the identifier,
      // in memory only.
      ...(tokenKey
        ? { privateKeyEngine: tokenKey.engine, privateKeyIdentifier: tokenKey.identifier }
        : { key: c.keyPem }),
      cert: c.certPem,
      // Client certificates are verified against this CA; sending the intermediate is optional.
      ca: [ca.rootPem, ca.intermediatePem],
      minVersion: "TLSv1.2",
      // The same suites as tunnels and the gateway: ECDHE with an AEAD only on TLS 1.2.
      ciphers: DEFAULT_CIPHERS,
    });
    if (tokenKey) {
      // Fail at start with one clear line when the engine is not registered or refuses the key.
      try {
        createSecureContext(tlsOptions(cert));
      } catch (err) {
        throw engineFailure(err, tokenKey);
      }
    }
    let httpsServer: HttpsServer | undefined;
    const api: FastifyInstance = buildApp(ctx, {
      listener: "api",
      serverFactory: (handler) => {
        httpsServer = createHttpsServer(
          { ...tlsOptions(cert), requestCert: true, rejectUnauthorized: false },
          handler,
        );
        // A failed handshake is the client's business; log it at debug, never crash.
        httpsServer.on("tlsClientError", (err) => logger.debug({ err: err.message }, "TLS handshake failed"));
        return httpsServer;
      },
    });
    cleanups.push(() => api.close());
    await listenOn(api, apiAddr, "--listen");
    const apiBound = boundAddress(api.server, apiAddr);

    let pub: FastifyInstance | undefined;
    let pubBound: ListenAddress | undefined;
    if (pubAddr) {
      pub = buildApp(ctx, {
        listener: "public",
        // OCSP on node:http directly, the rest through Fastify (see ocsp-fast.ts).
        serverFactory: (handler) => createHttpServer(withOcspFastPath(ctx, handler)),
      });
      cleanups.push(() => pub?.close());
      await listenOn(pub, pubAddr, "--public-listen");
      pubBound = boundAddress(pub.server, pubAddr);
    }

    let status: StatusServer | undefined;
    if (statusAddr) {
      status = await startStatusServer({
        listen: statusAddr,
        registry,
        ready: async () => {
          await ca.store.getSetting("ca.name");
          return { ok: true, detail: "ready" };
        },
      });
      const s = status;
      cleanups.push(() => s.close());
    }

    let reloading: Promise<void> | undefined;
    const reload = () => {
      reloading ??= (async () => {
        try {
          const url = await ca.store.getSetting("ca.publicUrl");
          ca.settings.publicUrl = url || undefined;
          const next = await ensureServerCert(ca, {
            stateDir: opts.paths.dir,
            sans: sansNow(),
            actor: SERVICE_ACTOR,
            ...(tokenKey ? { spki: tokenKey.spki } : {}),
          });
          if (next.issued && httpsServer) {
            try {
              httpsServer.setSecureContext(tlsOptions(next));
            } catch (err) {
              throw tokenKey ? engineFailure(err, tokenKey) : err;
            }
            logger.info(
              { serial: next.leaf.serial, why: next.issued },
              "renewed the API's HTTPS certificate",
            );
          }
          cert = next;
        } catch (err) {
          logger.error(
            { err: (err as Error).message },
            "reload failed; the current certificate stays in use",
          );
        } finally {
          reloading = undefined;
        }
      })();
      return reloading;
    };
    const maintenance = setInterval(() => void reload(), opts.maintenanceMs ?? 60_000);
    maintenance.unref();
    cleanups.push(() => clearInterval(maintenance));

    let closing: Promise<void> | undefined;
    const close = () => {
      closing ??= (async () => {
        clearInterval(maintenance);
        const drain = setTimeout(() => {
          logger.warn("drain timed out; closing open connections");
          httpsServer?.closeAllConnections();
          (pub?.server as { closeAllConnections?: () => void } | undefined)?.closeAllConnections?.();
        }, opts.drainMs ?? 10_000);
        drain.unref();
        try {
          await unwind();
        } finally {
          clearTimeout(drain);
        }
        logger.info("CA service stopped");
      })();
      return closing;
    };

    logger.info(
      {
        api: urlFor("https", apiBound),
        public: pubBound ? urlFor("http", pubBound) : null,
        status: statusAddr ? formatListen(statusAddr) : null,
        serverCertificate: cert.leaf.serial,
      },
      "CA service listening",
    );
    return {
      ca,
      api: { ...apiBound, url: urlFor("https", apiBound) },
      revocationFeed: feed,
      ...(pubBound ? { public: { ...pubBound, url: urlFor("http", pubBound) } } : {}),
      ...(status ? { status } : {}),
      serverCertificate: () => cert.leaf,
      ...(created ? { created } : {}),
      ...(admin ? { admin } : {}),
      reload,
      close,
    };
  } catch (err) {
    await unwind();
    throw err;
  }
}

/**
 * `--tls-key`: opens the key in its token (a wrong PIN or a missing key is a clear E_PKCS11_* error
 * here) and reads its public key. The module is --pkcs11-module, else the URI's module-path or
 * MTLS_PKCS11_MODULE, else the module the CA's own token key uses (setting ca.pkcs11Module).
 */
async function openTlsKey(ca: CertificateAuthority, opts: CaServeOptions): Promise<TokenTlsKey> {
  const keyUri = opts.tlsKey as string;
  if (!isPkcs11Uri(keyUri))
    throw new MtlsError(
      "E_USAGE",
      `--tls-key takes a PKCS#11 URI (pkcs11:token=...;object=...), not "${keyUri}"`,
    );
  const env = opts.env ?? process.env;
  const module =
    opts.pkcs11Module ??
    (parsePkcs11Uri(keyUri).modulePath || env.MTLS_PKCS11_MODULE
      ? undefined
      : ((await ca.store.getSetting("ca.pkcs11Module")) ?? undefined));
  return tokenTlsKey(keyUri, {
    ...(module ? { module } : {}),
    ...(opts.pinFile ? { pinFile: opts.pinFile } : {}),
    env,
  });
}

/**
 * The admin certificate whose files a person can use (for the printed curl line): with `init` one
 * is issued when no admin has a valid certificate; otherwise the newest valid one is looked up.
 */
async function adminInfo(ca: CertificateAuthority, init: boolean): Promise<RunningCaServer["admin"]> {
  let name: string | undefined;
  let serial: string | undefined;
  let created = false;
  if (init) {
    const a = await ensureAdmin(ca, { actor: SERVICE_ACTOR });
    ({ name, serial, created } = a);
  } else {
    const now = ca.clock();
    for (const n of await adminNames(ca)) {
      const live = (await ca.store.findCertificates({ name: n, status: "valid" })).filter(
        (r) => r.notAfter > now && r.certPath && r.keyPath,
      );
      const newest = live.at(-1);
      if (newest) {
        name = n;
        serial = newest.serial;
      }
    }
  }
  if (!name || !serial) return undefined;
  const rec = await ca.store.getCertificate(serial);
  return {
    name,
    serial,
    created,
    ...(rec?.certPath ? { cert: rec.certPath } : {}),
    ...(rec?.keyPath ? { key: rec.keyPath } : {}),
    ...(rec?.p12Path ? { p12: rec.p12Path } : {}),
    ...(rec?.p12Path && existsSync(`${rec.p12Path}.password`)
      ? { p12Password: `${rec.p12Path}.password` }
      : {}),
  };
}

async function listenOn(app: FastifyInstance, addr: ListenAddress, what: string): Promise<void> {
  try {
    await app.listen({ host: addr.host, port: addr.port });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new MtlsError(
      "E_IO",
      `cannot listen for ${what} on ${formatListen(addr)}: ${e.code === "EADDRINUSE" ? "address already in use" : e.message}`,
      { cause: err },
    );
  }
}
