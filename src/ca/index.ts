export {
  type AdminIdentity,
  adminNames,
  DEFAULT_ADMIN_NAME,
  type EnsureAdminOptions,
  ensureAdmin,
  isAdmin,
} from "./admin.js";
export {
  BACKDATE_MS,
  type CaEvents,
  type CaSettings,
  CertificateAuthority,
  type Clock,
  CRL_VALIDITY_MS,
  type Issued,
  type IssueRequest,
  type RevokedOrigin,
  ROOT_CRL_VALIDITY_MS,
} from "./authority.js";
export { CrlPublisher, type CrlPublisherOptions, type PublishedCrls } from "./crl-publisher.js";
export { type Delivered, type DeliverOptions, issueToFiles, recoverPending } from "./deliver.js";
export { type InitOptions, type InitResult, initCa } from "./init.js";
export {
  ensureResponderCertificate,
  OCSP_CERT_NAME,
  OCSP_CERT_RENEW_FRACTION,
  OCSP_CERT_TTL_MS,
  type ResponderCertOptions,
  type ResponderIdentity,
} from "./ocsp-cert.js";
export {
  OCSP_REFRESH_FRACTION,
  OCSP_VALIDITY_MS,
  type OcspReply,
  type OcspReplyStatus,
  OcspResponder,
  type OcspResponderOptions,
} from "./ocsp-responder.js";
export { type OpenCaOptions, openCa } from "./open.js";
export {
  caUrls,
  DEFAULT_TTL_MS,
  LEAF_PROFILES,
  type LeafProfile,
  parseProfile,
  validateLeafName,
} from "./profiles.js";
export { type RenewRequest, renew } from "./renew.js";
export {
  type FeedState,
  RevocationFeed,
  type RevocationFeedOptions,
  type RevocationNotice,
  type RevocationSnapshot,
  type SnapshotEntry,
} from "./revocation-feed.js";
export {
  CA_SETTING_KEYS,
  type CaSettingName,
  getCaSetting,
  setAdmins,
  setPublicUrl,
  validatePublicUrl,
} from "./settings.js";
export {
  type CreatedToken,
  type CreateTokenOptions,
  createToken,
  type EnrollRequest,
  enroll,
  TOKEN_DEFAULT_VALID_FOR_MS,
  TOKEN_MAX_VALID_FOR_MS,
  type TokenGrant,
  type TokenStatus,
  tokenIdOf,
  tokenStatus,
} from "./tokens.js";
