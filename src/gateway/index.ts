/** The mTLS gateway: an HTTPS reverse proxy with client certificates, identity headers and friendly refusals. */
export { BuiltGateway, buildGateway, type GatewayDeps, type GatewaySpec } from "./build.js";
export { ClientAuth } from "./client-auth.js";
export {
  GATEWAY_DEFAULTS,
  Gateway,
  type GatewayLimits,
  type GatewayOptions,
  type RequestAuditFields,
} from "./gateway.js";
export { type GatewayApplyReport, GatewayGroup } from "./group.js";
export {
  clientIdentityJson,
  IDENTITY_HEADER_FORMATS,
  type IdentityHeaderFormat,
  identityHeaders,
  STRIPPED_HEADERS,
  xfccHeader,
} from "./identity-headers.js";
export { type GatewayMetrics, gatewayMetrics } from "./metrics.js";
export {
  escapeHtml,
  type GatewayRefusal,
  type RefusalAnswer,
  refusalAnswer,
  refusalHtml,
  refusalJson,
  renderRefusal,
  wantsHtml,
} from "./refusal.js";
export {
  compileRoutes,
  type GatewayRoute,
  type GatewayRouteSpec,
  hostOf,
  matchRoute,
  modeOf,
  normalizeTarget,
  parseRouteFlag,
  ROUTE_MODES,
  type RouteFlagDefaults,
  type RouteMode,
  upstreamPath,
} from "./routes.js";
export { parseSize } from "./size.js";
