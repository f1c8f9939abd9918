import type { EventEmitter } from "node:events";
import type { SecureContext, SecureContextOptions, TLSSocket } from "node:tls";
import type { CertInfo } from "../pki/certinfo.js";
import type { PeerIdentity } from "../policy/types.js";
import type { RevocationFeedState } from "./revocation-feed.js";

/** Where an endpoint's TLS material lives: its certificate chain, key, and the CA it trusts. */
export interface TlsFiles {
  /** PEM: leaf then intermediates. */
  cert: string;
  /** PEM private key (PKCS#8, SEC1 or PKCS#1). */
  key: string;
  /** PEM trust anchors (the root). */
  ca: string;
}

/**
 * An endpoint's TLS material, reloadable without dropping connections: `reload()` re-reads the
 * files, and when they are good, swaps the SecureContext (servers use `setSecureContext`, clients
 * take `current()` for each new connection); a bad new file keeps the old material in force and
 * emits "reloadError". Emits "reload" after a successful swap.
 */
export interface TlsMaterial extends EventEmitter {
  readonly files: TlsFiles;
  /** The context for new connections. */
  current(): SecureContext;
  /**
   * The options `current()` was built from, for `server.setSecureContext(...)`: a tls.Server takes
   * options, not a SecureContext, and ignores a `secureContext` option. They carry ticket keys that
   * stay the same across reloads, so TLS session tickets survive a certificate swap.
   */
  contextOptions(): SecureContextOptions;
  /** The endpoint's own leaf, for its expiry metric. */
  readonly certificate: CertInfo;
  /** The trust anchors. */
  readonly anchors: CertInfo[];
  /** Intermediates that came in the cert file (leaf excluded). */
  readonly chain: CertInfo[];
  /** Re-reads the files; resolves true if anything changed, false if unchanged or refused. */
  reload(): Promise<boolean>;
  /** Starts watching the files (and polling every `intervalMs` if given). */
  watch(opts?: { intervalMs?: number }): void;
  close(): void;
}

export type RevocationState = "good" | "revoked" | "unknown";

export interface RevocationStatus {
  status: RevocationState;
  /** "crl:/path (#12)", "ocsp:http://…", "none". */
  source: string;
  reason?: string;
  revokedAt?: Date;
}

/**
 * Revocation data from CRLs (files watched, URLs refetched at nextUpdate) and OCSP (responder from
 * the certificate's AIA, answers cached until their nextUpdate). Emits "update" whenever the data
 * changed, so holders of open connections re-check them and close the revoked ones.
 */
export interface RevocationChecker extends EventEmitter {
  check(leaf: CertInfo, issuer: CertInfo | undefined): Promise<RevocationStatus>;
  /**
   * False while a check would not look at the issuer (a stand-in with no sources in force, such as
   * an empty SwappableRevocation): callers may then read the peer's leaf alone. Absent: it does.
   */
  needsIssuer?(): boolean;
  /** The revocation feed's connection state, for metrics (undefined or absent: no feed). */
  feedState?(): RevocationFeedState | undefined;
  close(): void;
}

/** Why a peer was refused, as counted in metrics and written in audit events. */
export type RefusalReason =
  | "no_certificate"
  | "unknown_ca"
  | "expired"
  | "revoked"
  | "bad_purpose"
  | "not_allowed"
  | "handshake_timeout"
  | "handshake_error"
  | "bad_name";

export type PeerVerification =
  | {
      ok: true;
      identity: PeerIdentity;
      leaf: CertInfo;
      revocation: RevocationStatus;
      /**
       * Leaf first, as far as Node knows it (see peerCertificateChain); the leaf alone with
       * `peerChain: "leaf"`. Keep it with the session.
       */
      chain?: CertInfo[];
    }
  | { ok: false; reason: RefusalReason; detail: string; identity?: PeerIdentity };

/** What verifyPeer needs: the socket after its handshake, the expected purpose, and revocation. */
export interface VerifyPeerOptions {
  purpose: "client" | "server";
  revocation?: RevocationChecker;
  /**
   * What to read of the peer's chain: "full" (default) the leaf and its issuers, "leaf" the leaf
   * alone, which is cheaper (see peerCertificateChain's leafOnly). Pass "leaf" only when nothing
   * needs the issuer: with it, `revocation` is asked with no issuer.
   */
  peerChain?: "full" | "leaf";
  /** Server names or URIs the peer (a server) must carry: the client's --server-name / --verify-*. */
  expectDns?: string[];
  expectUri?: string[];
  /** The time the leaf's validity is checked at (default: now); OpenSSL checked it at the handshake. */
  clock?: () => Date;
  /**
   * For a client socket that resumed a TLS session: the peer chain seen on the connection that got
   * the session (`PeerVerification.chain` there). Node exposes no peer certificate at all on a
   * resumed client session, so without this a resumed connection is refused (handshake_error).
   * The chain is then checked again (purpose, validity, names, revocation).
   */
  resumedPeerChain?: CertInfo[];
}

export type VerifyPeer = (socket: TLSSocket, opts: VerifyPeerOptions) => Promise<PeerVerification>;
