import { configError, type MtlsConfig, type RuleConfig } from "../config/index.js";
import { isMtlsError } from "../errors.js";
import { compilePolicy, type RuleSpec } from "../policy/index.js";
import { type Address, formatAddress, isLoopback, parseAddress } from "./address.js";
import type { RouteSpec, TunnelSpec } from "./build.js";
import { parseProxyUrl } from "./http-connect.js";

const SERVER_NAME_RE =
  /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$/;

/**
 * The tunnels of a checked config file as specs for buildTunnel: addresses parsed, rules compiled
 * once to find bad values, and the checks the tunnels would make at start (a plain-text target
 * off this machine, a client listening for others, the same address twice) made here, so that each
 * problem is one line naming its place in the file. Throws E_BAD_INPUT.
 */
export function tunnelSpecsFromConfig(config: MtlsConfig): TunnelSpec[] {
  const listening = new Map<string, string>();
  return config.tunnels.map((t) => {
    const fail = (path: string, message: string): never => {
      throw configError(config.source, path, message);
    };
    const address = (text: string, path: string, listen: boolean): Address => {
      try {
        return parseAddress(text, "address", listen ? { allowPortZero: true, allowAnyHost: true } : {});
      } catch (err) {
        return fail(path, isMtlsError(err) ? err.message : String(err));
      }
    };
    const listen = address(t.listen, `${t.path}.listen`, true);
    const key = formatAddress(listen);
    const port0 = listen.kind === "tcp" && listen.port === 0;
    const other = listening.get(key);
    if (other && !port0) fail(`${t.path}.listen`, `${other} listens on ${key} already`);
    listening.set(key, t.path);

    const common = {
      name: t.name,
      listen,
      tls: t.tls,
      ...(t.crl.length ? { crl: t.crl } : {}),
      ...(t.ocsp ? { ocsp: true } : {}),
      ...(t.ocspRecheckMs !== undefined ? { ocspRecheckMs: t.ocspRecheckMs } : {}),
      ...(t.revocationFeed !== undefined ? { revocationFeed: t.revocationFeed } : {}),
      ...(t.settings.reloadIntervalMs ? { reloadIntervalMs: t.settings.reloadIntervalMs } : {}),
      handshakeTimeoutMs: t.settings.handshakeTimeoutMs,
      connectTimeoutMs: t.settings.connectTimeoutMs,
      idleTimeoutMs: t.settings.idleTimeoutMs,
      maxConnections: t.settings.maxConnections,
      maxConnLifetimeMs: t.settings.maxConnLifetimeMs,
      shutdownTimeoutMs: t.settings.shutdownTimeoutMs,
      ...(t.settings.ftpDataTimeoutMs ? { ftpDataTimeoutMs: t.settings.ftpDataTimeoutMs } : {}),
    };

    if (t.mode === "client") {
      if (!t.unsafeListen && !isLoopback(listen)) {
        fail(
          `${t.path}.listen`,
          `${key} is not a loopback address: anyone who reaches it would use this client's certificate (set unsafe_listen: true if that is intended)`,
        );
      }
      if (t.protocol === "ftp" && listen.kind !== "tcp") {
        fail(
          `${t.path}.listen`,
          `protocol ftp needs a TCP address (host:port): FTP data ports are TCP ports`,
        );
      }
      const target = address(t.target as string, `${t.path}.target`, false);
      if (t.serverName !== undefined && !SERVER_NAME_RE.test(t.serverName)) {
        fail(`${t.path}.server_name`, `"${t.serverName}" is not a server name`);
      }
      if (t.proxy !== undefined) {
        try {
          parseProxyUrl(t.proxy);
        } catch (err) {
          fail(`${t.path}.proxy`, (err as Error).message.replace(/^--proxy \S+: /, ""));
        }
      }
      return {
        mode: "client",
        ...common,
        target,
        ...(t.serverName !== undefined ? { serverName: t.serverName } : {}),
        ...(t.verifyDns ? { verifyDns: t.verifyDns } : {}),
        ...(t.verifyUri ? { verifyUri: t.verifyUri } : {}),
        ...(t.proxy !== undefined ? { proxy: t.proxy } : {}),
        unsafeListen: t.unsafeListen,
        ...(t.protocol === "ftp" ? { protocol: "ftp" as const } : {}),
      } satisfies TunnelSpec;
    }

    const target = (text: string, path: string, protocol: "tcp" | "ftp", tls = false): Address => {
      const a = address(text, path, false);
      if (protocol === "ftp" && a.kind !== "tcp") {
        fail(path, "protocol ftp needs a TCP target (host:port): FTP data ports are TCP ports");
      }
      if (protocol === "ftp" && tls) {
        fail(path, "target_tls is for TCP targets, not protocol ftp");
      }
      // A TLS target's leg is encrypted and its certificate verified: it may cross a network.
      if (!t.unsafeTarget && !tls && !isLoopback(a)) {
        fail(
          path,
          `${formatAddress(a)} is neither loopback nor a Unix socket: its plain-text leg would cross a network (set unsafe_target: true if that is intended)`,
        );
      }
      return a;
    };
    const routes: RouteSpec[] = t.sni.map((r) => {
      if (!SERVER_NAME_RE.test(r.serverName)) {
        fail(
          `${r.path}.server_name`,
          `"${r.serverName}" is not a server name (e.g. vnc.acme.test or *.acme.test)`,
        );
      }
      return {
        serverName: r.serverName,
        target: target(r.target, `${r.path}.target`, r.protocol, r.targetTls !== undefined),
        ...(r.protocol === "ftp" ? { protocol: "ftp" as const } : {}),
        rules: rulesOf(r.allow, r.allow === t.allow ? `${t.path}.allow` : `${r.path}.allow`, config),
        ...(r.tls ? { tls: r.tls } : {}),
        ...(r.targetTls ? { targetTls: r.targetTls } : {}),
      };
    });
    if (t.target !== undefined) {
      routes.push({
        target: target(t.target, `${t.path}.target`, t.protocol, t.targetTls !== undefined),
        ...(t.protocol === "ftp" ? { protocol: "ftp" as const } : {}),
        rules: rulesOf(t.allow ?? [], `${t.path}.allow`, config),
        ...(t.targetTls ? { targetTls: t.targetTls } : {}),
      });
    }
    return {
      mode: "server",
      ...common,
      routes,
      proxyProtocol: t.proxyProtocol,
      unsafeTarget: t.unsafeTarget,
      ...(t.mint ? { mint: t.mint } : {}),
    } satisfies TunnelSpec;
  });
}

/**
 * The rules as policy RuleSpecs. Each condition is compiled alone first, so that an error names
 * its place in the file: "tunnels[0].allow[1].uri: "x" is not an absolute URI …".
 */
function rulesOf(rules: RuleConfig[], path: string, config: MtlsConfig): RuleSpec[] {
  return rules.map((r, i) => {
    const spec: RuleSpec = { ...r };
    const check = (part: RuleSpec, where: string, key?: string) => {
      try {
        compilePolicy([part]);
      } catch (err) {
        // policy/ says "rule 1 ("name"): uri: …"; the reader of the file wants the place in it.
        let message = (err as Error).message.replace(/^rule 1(?: \("[^"]*"\))?(?:: )?/, "");
        if (key && message.startsWith(`${key}: `)) message = message.slice(key.length + 2);
        throw configError(config.source, where, message, err);
      }
    };
    for (const [key, value] of Object.entries(spec)) {
      if (key !== "name" && key !== "all") check({ [key]: value }, `${path}[${i}].${key}`, key);
    }
    check(spec, `${path}[${i}]`);
    return spec;
  });
}

/** The `status:` address of a config file (undefined when it has none). */
export function statusAddressFromConfig(config: MtlsConfig): Address | undefined {
  if (config.status === undefined) return undefined;
  try {
    return parseAddress(config.status, "address", { allowPortZero: true, allowAnyHost: true });
  } catch (err) {
    throw configError(config.source, "status", isMtlsError(err) ? err.message : String(err));
  }
}
