/** Observability: JSON logs (pino), Prometheus metrics (prom-client), the status endpoint, audit lines. */
export { type AuditIdentity, type ConnectionAuditFields, connectionEvent } from "./audit.js";
export {
  type FeedMetricLabels,
  type FeedMetricSource,
  type FeedMetrics,
  feedMetrics,
} from "./feed-metrics.js";
export { type FtpMetrics, ftpMetrics } from "./ftp-metrics.js";
export {
  createLogger,
  LOG_LEVELS,
  type Logger,
  type LoggerOptions,
  parseLogLevel,
  silentLogger,
} from "./logger.js";
export {
  createRegistry,
  type Direction,
  defaultRegistry,
  Registry,
  type RejectReason,
  type TunnelMetrics,
  tunnelMetrics,
} from "./metrics.js";
export {
  type Readiness,
  type StatusServer,
  type StatusServerOptions,
  startStatusServer,
} from "./status-server.js";
