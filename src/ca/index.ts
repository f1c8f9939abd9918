export {
  BACKDATE_MS,
  type CaSettings,
  CertificateAuthority,
  type Clock,
  CRL_VALIDITY_MS,
  type Issued,
  type IssueRequest,
  ROOT_CRL_VALIDITY_MS,
} from "./authority.js";
export { type Delivered, type DeliverOptions, issueToFiles, recoverPending } from "./deliver.js";
export { type InitOptions, type InitResult, initCa } from "./init.js";
export { type OpenCaOptions, openCa } from "./open.js";
export {
  caUrls,
  DEFAULT_TTL_MS,
  LEAF_PROFILES,
  type LeafProfile,
  parseProfile,
  validateLeafName,
} from "./profiles.js";
