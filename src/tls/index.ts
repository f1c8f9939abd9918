/** TLS for tunnels and gateways: contexts from files or the state, hot reload, peer verification. */
export { tlsFilesFromState } from "./from-state.js";
export { identityFromCert, peerCertificateChain } from "./identity.js";
export { IssuerBook } from "./issuers.js";
export { type LoadTlsOptions, loadTlsMaterial } from "./material.js";
export {
  createRevocationChecker,
  type RevocationCheckerOptions,
  type RevocationFeedSpec,
} from "./revocation.js";
export {
  type FeedRevocation,
  type FeedTransition,
  feedStreamUrl,
  logFeedStatus,
  RevocationFeedClient,
  type RevocationFeedOptions,
  type RevocationFeedState,
} from "./revocation-feed.js";
export { SwappableMaterial, SwappableRevocation } from "./swappable.js";
export type {
  PeerVerification,
  RefusalReason,
  RevocationChecker,
  RevocationState,
  RevocationStatus,
  TlsFiles,
  TlsMaterial,
  VerifyPeer,
  VerifyPeerOptions,
} from "./types.js";
export { verifyPeer } from "./verify-peer.js";
