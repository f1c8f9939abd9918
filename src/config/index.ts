export { formatDuration, parseDuration } from "./duration.js";
export { commitFile, readFileOrThrow, stageFile, writeFileAtomic } from "./files.js";
export {
  type AgentCertificateConfig,
  type AgentConfig,
  configError,
  type GatewayConfig,
  type GatewayRouteConfig,
  type GatewayRuleConfig,
  loadConfig,
  type MtlsConfig,
  type ParseConfigOptions,
  parseConfig,
  type ReloadConfig,
  type RuleConfig,
  type SniRouteConfig,
  type TargetTlsConfig,
  type TlsFilesConfig,
  type TlsIdentityConfig,
  type TlsSourceConfig,
  type TunnelConfig,
  type TunnelSettings,
} from "./load.js";
export { type PassphraseSource, requirePassphrase, resolvePassphrase } from "./passphrase.js";
export { configSchema, formatIssue, TUNNEL_DEFAULTS } from "./schema.js";
export { ensureStateDirs, hasCa, requireCa, resolveStateDir, type StatePaths, statePaths } from "./state.js";
export { type FileWatch, watchFile } from "./watch.js";
