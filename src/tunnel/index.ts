/** TCP mTLS tunnels: server mode (mTLS in, plain TCP out) and client mode (plain in, mTLS out). */
export {
  type Address,
  connectOptions,
  formatAddress,
  isHostName,
  isLoopback,
  listenOptions,
  type ParseAddressOptions,
  parseAddress,
} from "./address.js";
export type { StopResult, TunnelCommonOptions } from "./base.js";
export {
  type BuildDeps,
  BuiltTunnel,
  buildTunnel,
  type ClientTunnelSpec,
  describeTargets,
  type MintSpec,
  type PreparedUpdate,
  type RouteSpec,
  restartReason,
  type ServerTunnelSpec,
  type TargetTlsSpec,
  type TlsSource,
  type TunnelSpec,
} from "./build.js";
export { TunnelClient, type TunnelClientOptions } from "./client.js";
export { statusAddressFromConfig, tunnelSpecsFromConfig } from "./from-config.js";
export {
  ACTIVE_MODE_REPLY,
  DataGrants,
  FTP_DATA_TIMEOUT_MS,
  FTP_MAX_LINE,
  format227,
  format229,
  parse227,
  parse229,
} from "./ftp.js";
export { FtpClientControl, FtpServerControl } from "./ftp-control.js";
export { type ApplyReport, describeListening, TunnelGroup, type TunnelGroupOptions } from "./group.js";
export { connectViaHttpProxy, parseProxyUrl } from "./http-connect.js";
export {
  DEFAULT_MINT_TTL_MS,
  IdentityMinter,
  type IdentityMinterOptions,
  type MintedIdentity,
  mintName,
  type OpenMinterOptions,
  openIdentityMinter,
} from "./mint.js";
export { Pipe, type PipeEnd, type PipeOptions, type PipeResult, pipeSockets } from "./pipe.js";
export {
  buildProxyHeaderV2,
  PP2_CLIENT,
  PP2_SIGNATURE,
  PP2_SUBTYPE_SSL,
  PP2_TYPE,
  type ProxyEndpoint,
  type ProxyHeader,
  type ProxySsl,
  parseProxyHeaderV2,
  type Tlv,
} from "./proxy-protocol.js";
export { type Route, TunnelServer, type TunnelServerOptions } from "./server.js";
export { TargetTls, TargetTlsError, type TargetTlsOptions } from "./target-tls.js";
