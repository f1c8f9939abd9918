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
export { TunnelClient, type TunnelClientOptions } from "./client.js";
export { connectViaHttpProxy, parseProxyUrl } from "./http-connect.js";
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
