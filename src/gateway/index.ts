/** The mTLS gateway: an HTTPS reverse proxy with client certificates, identity headers and friendly refusals. */
export {
  type AccessTokenSpec,
  AccessTokenVerifier,
  bearerTokenOf,
  certificateThumbprint,
  DEFAULT_TOKEN_ALGORITHMS,
  TOKEN_ALGORITHMS,
  type TokenBinding,
  type TokenClaims,
  type TokenRefusal,
  type TokenVerdict,
} from "./bound-token.js";
export {
  BuiltGateway,
  buildGateway,
  type GatewayDeps,
  type GatewaySpec,
  loadRoutes,
  restartKeyOf,
} from "./build.js";
export { ClientAuth, type InvalidVerdict } from "./client-auth.js";
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
export { type GatewayMetrics, gatewayMetrics, type RelayMetrics, relayMetrics } from "./metrics.js";
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
  compileRelaySettings,
  parseRelayFlag,
  RELAY_DEFAULTS,
  RELAY_PATH_PREFIX,
  type RelayRefusal,
  type RelayResult,
  type RelaySessionAuditFields,
  type RelaySettings,
  type RelayTargetSpec,
} from "./relay.js";
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
  type UpstreamTlsOptions,
  type UpstreamTlsSpec,
  upstreamPath,
} from "./routes.js";
export { parseSize } from "./size.js";
