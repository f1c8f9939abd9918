import { MtlsError } from "../errors.js";

export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * "127.0.0.1:8443", "[::1]:8443", "localhost:8443", ":8443" (loopback) or "8443" (loopback).
 * The CA service listens on loopback unless told otherwise.
 */
export function parseListen(text: string, what = "--listen"): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text) ?? /^()()(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new MtlsError("E_USAGE", `invalid ${what} "${text}" (expected HOST:PORT, e.g. 127.0.0.1:8443)`);
  }
  const host = m[1] ?? m[2] ?? "";
  return { host: host === "" ? "127.0.0.1" : host, port };
}

export const formatListen = (a: ListenAddress): string =>
  `${a.host.includes(":") ? `[${a.host}]` : a.host}:${a.port}`;

/** A URL for the address; a wildcard host becomes loopback, which is where a local client connects. */
export function urlFor(scheme: "http" | "https", a: ListenAddress): string {
  const host = a.host === "0.0.0.0" ? "127.0.0.1" : a.host === "::" ? "::1" : a.host;
  return `${scheme}://${formatListen({ host, port: a.port })}`;
}
