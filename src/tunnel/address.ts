import { isIP, type ListenOptions, type NetConnectOpts } from "node:net";
import { MtlsError } from "../errors.js";

/**
 * Where a tunnel listens or connects:
 *   "host:port", "127.0.0.1:5900", "[::1]:5900", "name.example:443"
 *   ":port"            every interface (IPv6 and IPv4 where the system allows both)
 *   "unix:/path/sock"  a Unix domain socket
 */
export type Address = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

export interface ParseAddressOptions {
  /** Allow port 0 (listen on any free port). */
  allowPortZero?: boolean;
  /** Allow ":port" (every interface); sensible only for listening. */
  allowAnyHost?: boolean;
}

const HOST_RE = /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62})?)*\.?$/;

export function parseAddress(text: string, what = "address", opts: ParseAddressOptions = {}): Address {
  const bad = (why: string): never => {
    throw new MtlsError(
      "E_USAGE",
      `invalid ${what} "${text}": ${why} (examples: 127.0.0.1:5900, [::1]:5900, :5900, unix:/run/app.sock)`,
    );
  };
  if (text.startsWith("unix:")) {
    const path = text.slice(5);
    if (!path) bad("the socket path is empty");
    if (path.includes("\0")) bad("the socket path holds a NUL byte");
    return { kind: "unix", path };
  }
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const m = /^\[([^\]]+)\]:(\d+)$/.exec(text);
    if (!m) return bad("expected [IPv6]:port");
    host = m[1] as string;
    portText = m[2] as string;
    if (isIP(host) !== 6) bad(`${host} is not an IPv6 address`);
  } else {
    const i = text.lastIndexOf(":");
    if (i < 0) return bad("expected host:port");
    host = text.slice(0, i);
    portText = text.slice(i + 1);
    if (host.includes(":")) bad("put an IPv6 address in brackets, e.g. [::1]:5900");
    if (host === "" && !opts.allowAnyHost) bad("a host is needed here");
    if (host !== "" && isIP(host) === 0 && !HOST_RE.test(host))
      bad(`${host} is not a host name or IP address`);
  }
  if (!/^\d{1,5}$/.test(portText)) return bad("the port must be a number");
  const port = Number(portText);
  if (port > 65535 || (port === 0 && !opts.allowPortZero)) bad("the port must be between 1 and 65535");
  return { kind: "tcp", host: host.toLowerCase(), port };
}

export function formatAddress(a: Address): string {
  if (a.kind === "unix") return `unix:${a.path}`;
  return `${a.host.includes(":") ? `[${a.host}]` : a.host}:${a.port}`;
}

/** Formats a socket's remote or local end, as `1.2.3.4:5`, `[::1]:5` or `unix`. */
export function formatEndpoint(host: string | undefined, port: number | undefined): string {
  if (!host) return "unix";
  return `${host.includes(":") ? `[${host}]` : host}:${port ?? 0}`;
}

/** True for Unix sockets, localhost, 127.0.0.0/8, ::1 and ::ffff:127.x.y.z. "" (every interface) is not. */
export function isLoopback(a: Address): boolean {
  if (a.kind === "unix") return true;
  const host = a.host.toLowerCase().replace(/\.$/, "");
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) {
    if (host === "::1" || /^(0{1,4}:){7}0{0,3}1$/.test(host) || host === "0:0:0:0:0:0:0:1") return true;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(host);
    return mapped !== null && (mapped[1] as string).startsWith("127.");
  }
  return false;
}

/** A host name as opposed to an IP literal: the client's default TLS server name. */
export function isHostName(a: Address): a is { kind: "tcp"; host: string; port: number } {
  return a.kind === "tcp" && a.host !== "" && isIP(a.host) === 0;
}

/** Options for net.Server#listen. ":port" leaves the host out so Node binds every interface. */
export function listenOptions(a: Address): ListenOptions {
  if (a.kind === "unix") return { path: a.path };
  return a.host === "" ? { port: a.port } : { host: a.host, port: a.port };
}

/** Options for net.connect / tls.connect. */
export function connectOptions(a: Address): NetConnectOpts {
  if (a.kind === "unix") return { path: a.path };
  return { host: a.host === "" ? "localhost" : a.host, port: a.port };
}
