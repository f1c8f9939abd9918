/** The CA as a service (`mtls ca serve`): the HTTPS API, CRL and OCSP endpoints, audit export. */
export { BODY_LIMIT, type BuildAppOptions, buildApp, type Listener } from "./app.js";
export {
  AUDIT_CONTENT_TYPE,
  AUDIT_FORMATS,
  type AuditFormat,
  auditEventJson,
  auditEvents,
  csvCell,
  csvHeader,
  formatAuditEvent,
  parseAuditFormat,
} from "./audit-export.js";
export { authenticate, type Caller } from "./auth.js";
export type { CaServices, CurrentCrls, OcspAnswerOut, ServerContext } from "./context.js";
export { type ErrorBody, type HttpError, statusFor, toHttpError } from "./errors.js";
export { formatListen, type ListenAddress, parseListen, urlFor } from "./listen.js";
export { type ServerMetrics, serverMetrics } from "./metrics.js";
export { RateLimiter, type RateLimitOptions } from "./rate-limit.js";
export { type CaServeOptions, type RunningCaServer, SERVICE_ACTOR, startCaServer } from "./serve.js";
export {
  ensureServerCert,
  parseHostSan,
  SERVER_CERT_NAME,
  type ServerCert,
  serverCertFiles,
  wantedServerSans,
} from "./server-cert.js";
