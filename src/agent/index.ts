/** The agent: keeps certificates fresh (enroll, renew, schedule, reload) against the CA service API. */
export {
  type AgentCertificate,
  type AgentDeps,
  CertAgent,
  type CertState,
  type CertStatus,
  realTimers,
  type Timers,
} from "./agent.js";
export {
  type CaCertificates,
  CaClient,
  type CaClientOptions,
  CaHttpError,
  DEFAULT_MAX_RESPONSE_BYTES,
  DEFAULT_TIMEOUT_MS,
  type IssuedResponse,
  isRetryable,
} from "./client.js";
export { type EnrollOptions, type EnrollResult, enrollCertificate } from "./enroll.js";
export {
  type CertFiles,
  type CurrentCert,
  certValidity,
  checkIssuedChain,
  finishInterruptedRekey,
  keyMatches,
  type NewFiles,
  readCurrent,
  writeCertFiles,
} from "./files.js";
export { type AgentMetrics, agentMetrics } from "./metrics.js";
export { type ReloadContext, runReload } from "./reload.js";
export {
  expiredError,
  type IfDueDecision,
  ifDue,
  type RenewOptions,
  type RenewResult,
  type RenewTarget,
  renewCertificate,
} from "./renew.js";
export {
  BACKDATE_WINDOW_MS,
  BACKOFF_BASE_MS,
  BACKOFF_CAP_MS,
  backoffDelay,
  dueAt,
  expiryMargin,
  isDue,
  isExpired,
  issuedAtFromMtime,
  JITTER_FRACTION,
  jitterAmplitude,
  MAX_JITTER_MS,
  MIN_RETRY_MS,
  RENEW_AT_FRACTION,
  renewalTime,
  retryDelay,
  type Validity,
} from "./schedule.js";
