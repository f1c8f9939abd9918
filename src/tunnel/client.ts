import type { Socket } from "node:net";
import { createServer, type Server } from "node:net";
import { type ConnectionOptions, type SecureContext, type TLSSocket, connect as tlsConnect } from "node:tls";
import { MtlsError } from "../errors.js";
import { defaultRegistry } from "../observe/index.js";
import type { CertInfo } from "../pki/certinfo.js";
import type { PeerIdentity } from "../policy/index.js";
import { type PeerVerification, peerCertificateChain, type RefusalReason } from "../tls/index.js";
import { type Address, connectOptions, formatAddress, isHostName, isLoopback } from "./address.js";
import {
  DEFAULT_TIMEOUTS,
  KEEPALIVE_MS,
  type StopResult,
  TunnelBase,
  type TunnelCommonOptions,
} from "./base.js";
import { FtpClientEnd, type FtpDataBinding } from "./ftp-session.js";
import { connectViaHttpProxy, parseProxyUrl } from "./http-connect.js";
import type { LiveConnection } from "./live.js";
import { ConnectError, connectWithTimeout, listenOn } from "./net-util.js";
import { type PipeResult, pipeSockets } from "./pipe.js";
import { auditIdentity, describeTlsError, handshakeFailureReason, peerOf } from "./report.js";

export interface TunnelClientOptions extends TunnelCommonOptions {
  /** The tunnel server to reach (host:port). */
  target: Address;
  /** TLS server name (SNI) and the name the server's certificate must carry (default: the target's host name). */
  serverName?: string;
  /** Names the server's certificate must carry one of (replaces the server-name check). */
  verifyDns?: string[];
  /** URIs (e.g. SPIFFE IDs) the server's certificate must carry one of. */
  verifyUri?: string[];
  /** Reach the server through this HTTP CONNECT proxy ("http://[user:pass@]host:port"). */
  proxy?: string;
  /** Allow listening on an address other than loopback (anyone who reaches it borrows our certificate). */
  unsafeListen?: boolean;
  /**
   * "ftp": the local clients are FTP clients and the server a tunnel server with --protocol ftp;
   * passive-mode data connections are carried over mTLS too (ftp.ts). Default "tcp".
   */
  protocol?: "tcp" | "ftp";
  /** FTP: how long a local data port waits for the FTP client (default 30 s). */
  ftpDataTimeoutMs?: number;
}

type Verified = Extract<PeerVerification, { ok: true }>;

/**
 * A TLS session ticket and what was verified about the server on the connection that received it.
 * A client resuming a TLS 1.3 session gets no peer certificate from OpenSSL (the ticket keeps only
 * the leaf, and Node reads the peer chain), so verifyPeer would see "no certificate": the server
 * proves instead that it holds the session's secret, and we re-check the certificate we verified
 * then (validity, revocation).
 */
interface CachedSession {
  ticket: Buffer;
  /** The context (hence the client certificate) the session was made with. */
  context: SecureContext;
  verified: Verified;
  issuer: CertInfo | undefined;
}

/** What the client expects of the server's certificate, decided once. */
interface Expectation {
  servername: string | undefined;
  expectDns: string[];
  expectUri: string[];
}

/**
 * An mTLS tunnel client: accepts plain TCP on a local address and carries each connection over
 * mutual TLS to a tunnel server, presenting its certificate and verifying the server's (chain,
 * purpose, expected name or URI, revocation) before a single byte goes through.
 *
 * TLS 1.3 session tickets are kept per target, so repeated connections resume instead of running
 * a full handshake; they are dropped when the client certificate is reloaded.
 */
export class TunnelClient extends TunnelBase {
  private readonly opts: TunnelClientOptions;
  private readonly server: Server;
  private readonly expect: Expectation;
  private readonly proxyUrl: URL | undefined;
  /** The last session ticket per target, with the verification of the server that issued it. */
  private readonly sessions = new Map<string, CachedSession>();
  private bound: Address | undefined;
  /** FTP control sessions and their local data ports (--protocol ftp). */
  private readonly ftp: FtpClientEnd | undefined;

  constructor(opts: TunnelClientOptions) {
    if (!opts.unsafeListen && !isLoopback(opts.listen)) {
      throw new MtlsError(
        "E_USAGE",
        `--listen ${formatAddress(opts.listen)} is not a loopback address: anyone who reaches it would use this client's certificate (pass --unsafe-listen if that is intended)`,
      );
    }
    if (opts.protocol === "ftp" && opts.listen.kind !== "tcp") {
      throw new MtlsError(
        "E_USAGE",
        `--protocol ftp needs a TCP --listen address (host:port), not ${formatAddress(opts.listen)}: FTP data ports are TCP ports`,
      );
    }
    const expect = expectationOf(opts);
    const proxyUrl = opts.proxy ? parseProxyUrl(opts.proxy).url : undefined;
    super(opts, formatAddress(opts.listen));
    this.opts = opts;
    this.ftp =
      opts.protocol === "ftp"
        ? new FtpClientEnd({
            tunnel: this.name,
            log: this.log,
            registry: opts.registry ?? defaultRegistry(),
            // The server end may first spend its connect timeout reaching the FTP server.
            preambleTimeoutMs:
              (opts.handshakeTimeoutMs ?? DEFAULT_TIMEOUTS.handshakeTimeoutMs) +
              (opts.connectTimeoutMs ?? DEFAULT_TIMEOUTS.connectTimeoutMs),
            ...(opts.idleTimeoutMs ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
            ...(opts.ftpDataTimeoutMs ? { dataTimeoutMs: opts.ftpDataTimeoutMs } : {}),
            clock: this.clock,
            onDataConnection: (plain, binding) => {
              this.onConnection(plain, binding).catch((err: Error) => {
                this.log.error({ err: err.message }, "unexpected error on an FTP data connection");
                plain.destroy();
              });
            },
          })
        : undefined;
    this.expect = expect;
    this.proxyUrl = proxyUrl;
    this.server = createServer(
      { allowHalfOpen: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: KEEPALIVE_MS },
      (s) => {
        this.onConnection(s).catch((err: Error) => {
          this.log.error({ err: err.message }, "unexpected error on a connection");
          s.destroy();
        });
      },
    );
    if (opts.maxConnections && opts.maxConnections > 0) this.server.maxConnections = opts.maxConnections;
    this.server.on("drop", (d?: { remoteAddress?: string; remotePort?: number }) => {
      this.metrics.connectionsTotal.inc({ tunnel: this.name });
      this.metrics.rejected.inc({ tunnel: this.name, reason: "max_connections" });
      this.log.warn(
        { peer: d ? peerOf(d) : "unknown", maxConnections: opts.maxConnections },
        "connection dropped: too many connections",
      );
    });
  }

  async start(): Promise<Address> {
    this.bound = await listenOn(this.server, this.opts.listen, "tunnel client");
    this.log.info(
      {
        listen: formatAddress(this.bound),
        target: formatAddress(this.opts.target),
        serverName: this.expect.servername,
        ...(this.proxyUrl ? { proxy: this.proxyUrl.host } : {}),
      },
      "tunnel client listening",
    );
    this.emit("listening", this.bound);
    return this.bound;
  }

  address(): Address {
    if (!this.bound) throw new MtlsError("E_USAGE", "the tunnel client is not listening");
    return this.bound;
  }

  /** For /readyz: listening, and the server (or the proxy's way to it) accepts connections. */
  async ready(): Promise<{ ok: boolean; detail: string }> {
    if (!this.bound || !this.server.listening) return { ok: false, detail: "not listening" };
    if (this.stopping) return { ok: false, detail: "shutting down" };
    const where = formatAddress(this.opts.target);
    try {
      const s = await this.openTransport(2000);
      s.destroy();
      return { ok: true, detail: `listening on ${formatAddress(this.bound)}; ${where} accepts connections` };
    } catch (err) {
      return { ok: false, detail: `listening on ${formatAddress(this.bound)}; ${(err as Error).message}` };
    }
  }

  stop(deadlineMs = 30_000): Promise<StopResult> {
    return this.drain(deadlineMs, () => this.server.close());
  }

  protected override materialReloaded(): void {
    // A resumed session would present the old certificate: start afresh with the new one.
    this.sessions.clear();
    super.materialReloaded();
  }

  /** TCP to the server, directly or through the proxy. */
  private openTransport(timeoutMs: number): Promise<Socket> {
    return this.proxyUrl
      ? connectViaHttpProxy(this.proxyUrl, this.opts.target, timeoutMs)
      : connectWithTimeout(this.opts.target, timeoutMs);
  }

  private sessionKey(): string {
    return `${formatAddress(this.opts.target)}/${this.expect.servername ?? ""}`;
  }

  /**
   * Opens the TLS connection, offering the last session ticket for the target; rejects with a
   * ConnectError or the TLS error. `offered` is the cached session that was offered, if any;
   * `tickets()` gives the newest session ticket the server sent on this connection so far.
   * `context` (default: the material's current one) is the TLS context, hence the certificate, to
   * use; a ticket is offered only when it was made with that same context.
   */
  private async openTls(context: SecureContext = this.common.material.current()): Promise<{
    tls: TLSSocket;
    offered: CachedSession | undefined;
    tickets: () => Buffer | undefined;
    context: SecureContext;
  }> {
    const connectTimeout = this.opts.connectTimeoutMs ?? DEFAULT_TIMEOUTS.connectTimeoutMs;
    const handshakeTimeout = this.opts.handshakeTimeoutMs ?? DEFAULT_TIMEOUTS.handshakeTimeoutMs;
    const transport = this.proxyUrl ? await this.openTransport(connectTimeout) : undefined;
    const cached = this.sessions.get(this.sessionKey());
    const offered = cached?.context === context ? cached : undefined;
    const target = this.opts.target;
    return new Promise((resolve, reject) => {
      let tcpUp = transport !== undefined;
      // allowHalfOpen is honoured by tls.connect (it reaches the TLSSocket) but missing from its types.
      const options: ConnectionOptions & { allowHalfOpen: boolean } = {
        ...(transport ? { socket: transport } : connectOptions(target)),
        secureContext: context,
        ...(this.expect.servername ? { servername: this.expect.servername } : {}),
        ...(offered ? { session: offered.ticket } : {}),
        // verifyPeer decides, with a reason; Node's own name check would only blur it.
        rejectUnauthorized: false,
        checkServerIdentity: () => undefined,
        allowHalfOpen: true,
      };
      const tls = tlsConnect(options);
      let lastTicket: Buffer | undefined;
      tls.on("session", (t: Buffer) => {
        lastTicket = t;
      });
      const onTimeout = () => {
        tls.destroy();
        reject(
          tcpUp
            ? Object.assign(new Error(`TLS handshake with ${formatAddress(target)} timed out`), {
                code: "ERR_TLS_HANDSHAKE_TIMEOUT",
              })
            : new ConnectError(
                "target_timeout",
                `no connection to ${formatAddress(target)} within ${connectTimeout} ms`,
              ),
        );
      };
      let timer = setTimeout(onTimeout, tcpUp ? handshakeTimeout : connectTimeout);
      tls.once("connect", () => {
        tcpUp = true;
        tls.setNoDelay(true);
        tls.setKeepAlive(true, KEEPALIVE_MS);
        clearTimeout(timer);
        timer = setTimeout(onTimeout, handshakeTimeout);
      });
      const onError = (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        tls.destroy();
        reject(
          tcpUp
            ? err
            : new ConnectError(
                "target_unreachable",
                `cannot connect to ${formatAddress(target)}: ${err.code ?? err.message}`,
                { cause: err },
              ),
        );
      };
      tls.once("error", onError);
      tls.once("secureConnect", () => {
        clearTimeout(timer);
        tls.off("error", onError);
        resolve({ tls, offered, tickets: () => lastTicket, context });
      });
    });
  }

  /** Verifies the server: in full on a full handshake, from the cached session on a resumed one. */
  private async verifyServer(tls: TLSSocket, offered: CachedSession | undefined): Promise<PeerVerification> {
    const revocation = this.revocation;
    if (!(tls.isSessionReused() && offered && !tls.getPeerCertificate()?.raw)) {
      return this.verify(tls, {
        purpose: "server",
        expectDns: this.expect.expectDns,
        expectUri: this.expect.expectUri,
        ...(revocation ? { revocation } : {}),
        peerChain: this.peerChain(),
        clock: this.clock,
      });
    }
    const { leaf, identity } = offered.verified;
    const who = `${leaf.subject} (serial ${leaf.serial})`;
    const now = this.clock();
    if (now < leaf.notBefore || now > leaf.notAfter) {
      return {
        ok: false,
        reason: "expired",
        detail: `${who} expired at ${leaf.notAfter.toISOString()}`,
        identity,
      };
    }
    let status = offered.verified.revocation;
    if (revocation) {
      try {
        status = await revocation.check(leaf, offered.issuer);
      } catch (err) {
        return {
          ok: false,
          reason: "handshake_error",
          detail: `${who}: revocation check failed: ${(err as Error).message}`,
          identity,
        };
      }
      if (status.status === "revoked") {
        return { ok: false, reason: "revoked", detail: `${who} was revoked [${status.source}]`, identity };
      }
    }
    return { ok: true, identity, leaf, revocation: status };
  }

  /**
   * Keeps the newest ticket of a verified connection for the next one, with what was verified: a
   * resumed connection passes on what its own session was verified with.
   */
  private sessionKeeper(
    tls: TLSSocket,
    verified: Verified,
    offered: CachedSession | undefined,
    context: SecureContext,
  ) {
    const resumed = tls.isSessionReused() && offered !== undefined;
    let issuer: CertInfo | undefined | null = resumed ? offered.issuer : null;
    return (ticket: Buffer) => {
      if (issuer === null) {
        try {
          issuer = peerCertificateChain(tls)[1];
        } catch {
          issuer = undefined;
        }
      }
      this.sessions.set(this.sessionKey(), {
        ticket,
        context,
        verified: resumed ? offered.verified : verified,
        issuer,
      });
    };
  }

  /** A local connection: a client's, or (FTP) a local data port's, bound to its control session. */
  private async onConnection(plain: Socket, ftpData?: FtpDataBinding): Promise<void> {
    const startedAt = this.clock();
    this.track(plain);
    this.metrics.connectionsTotal.inc({ tunnel: this.name });
    plain.on("error", () => undefined);
    if (this.stopping) {
      plain.destroy();
      return;
    }
    const peer = peerOf(plain, this.opts.listen.kind === "unix" ? this.opts.listen.path : undefined);
    const target = formatAddress(this.opts.target);
    const base = { tunnel: this.name, peer, target, startedAt };
    const since = () => this.clock().getTime() - startedAt.getTime();

    let opened: Awaited<ReturnType<TunnelClient["openTls"]>>;
    try {
      opened = await this.openTls(ftpData?.context);
    } catch (err) {
      plain.destroy();
      if (err instanceof ConnectError) {
        this.metrics.rejected.inc({ tunnel: this.name, reason: err.reason });
        this.audit({
          ...base,
          allowed: true,
          reason: err.reason,
          detail: err.message,
          bytesIn: 0,
          bytesOut: 0,
          durationMs: since(),
        });
      } else {
        const e = err as NodeJS.ErrnoException;
        this.refuseServer(base, handshakeFailureReason(e), describeTlsError(e), since());
      }
      return;
    }
    const { tls, offered } = opened;
    tls.on("error", () => undefined);
    const resumed = tls.isSessionReused();
    if (resumed) this.metrics.resumed.inc({ tunnel: this.name });
    const v = await this.verifyServer(tls, offered);
    if (!v.ok) {
      // Never resume a session whose server no longer passes.
      if (this.sessions.get(this.sessionKey()) === offered) this.sessions.delete(this.sessionKey());
      tls.destroy();
      plain.destroy();
      this.refuseServer(base, v.reason, v.detail, since(), v.identity);
      return;
    }
    // Tickets come after the handshake: keep the newest one of this verified connection.
    const keep = this.sessionKeeper(tls, v, offered, opened.context);
    const ticket = opened.tickets();
    if (ticket) keep(ticket);
    tls.on("session", keep);
    if (plain.destroyed || this.stopping) {
      tls.destroy();
      plain.destroy();
      return;
    }

    // FTP: the preamble (control, or data with its token), then the control stream for control.
    let ftpControl: ReturnType<FtpClientEnd["control"]> | undefined;
    if (this.ftp) {
      const answer = await this.ftp.hello(tls, ftpData?.token);
      if (!answer.ok) {
        tls.destroy();
        if (ftpData) plain.destroy();
        else plain.end(`421 mtls: the tunnel server refused the FTP session: ${answer.detail}\r\n`);
        this.log.warn(
          { reason: answer.reason, detail: answer.detail },
          "FTP connection refused by the tunnel server",
        );
        this.audit({
          ...base,
          identity: auditIdentity(v.identity),
          allowed: false,
          reason: `ftp_${answer.reason}`,
          detail: answer.detail,
          ...(ftpData ? { ftp: { channel: "data", session: ftpData.session } } : {}),
          bytesIn: 0,
          bytesOut: 0,
          durationMs: since(),
        });
        return;
      }
      if (plain.destroyed || this.stopping) {
        tls.destroy();
        plain.destroy();
        return;
      }
      if (!ftpData) ftpControl = this.ftp.control(tls, plain, opened.context);
    }
    const ftpAudit = ftpData
      ? { channel: "data" as const, session: ftpData.session }
      : ftpControl
        ? { channel: "control" as const, session: ftpControl.session }
        : undefined;

    const labels = { tunnel: this.name };
    const pipe = pipeSockets(plain, ftpControl?.stream ?? tls, {
      ...(this.opts.idleTimeoutMs ? { idleTimeoutMs: this.opts.idleTimeoutMs } : {}),
      onData: this.pipeOnData(ftpData?.touch),
    });
    let closeDetail: string | undefined;
    ftpControl?.stream.once("problem", (p: { detail: string }) => {
      closeDetail ??= p.detail;
    });
    const issuer = resumed && offered ? offered.issuer : undefined;
    const conn: LiveConnection = {
      id: this.nextId++,
      startedAt,
      leaf: v.leaf,
      tls,
      ...(issuer ? { issuer: () => issuer } : {}),
      close: (reason, detail) => {
        closeDetail ??= detail;
        pipe.close(reason);
      },
    };
    this.live.add(conn);
    this.metrics.connectionsOpen.inc(labels);
    const lifetime = this.lifetimeTimer(conn);
    const result: PipeResult = await pipe.done;
    lifetime.cancel();
    this.live.delete(conn);
    this.metrics.connectionsOpen.dec(labels);
    const detail = closeDetail ?? result.error?.message;
    this.audit({
      ...base,
      identity: auditIdentity(v.identity),
      allowed: true,
      reason: result.reason,
      ...(detail ? { detail } : {}),
      ...(this.expect.servername ? { serverName: this.expect.servername } : {}),
      ...(ftpAudit ? { ftp: ftpAudit } : {}),
      resumed,
      bytesIn: result.bytesIn,
      bytesOut: result.bytesOut,
      durationMs: since(),
    });
  }

  /** The server (or the handshake with it) was refused: counted and audited like a refused client. */
  private refuseServer(
    base: { tunnel: string; peer: string; target: string; startedAt: Date },
    reason: RefusalReason,
    detail: string,
    durationMs: number,
    identity?: PeerIdentity,
  ): void {
    this.metrics.handshakeFailures.inc({ tunnel: this.name, reason });
    this.audit({
      ...base,
      allowed: false,
      reason,
      detail,
      ...(identity ? { identity: auditIdentity(identity) } : {}),
      bytesIn: 0,
      bytesOut: 0,
      durationMs,
    });
  }
}

function expectationOf(opts: TunnelClientOptions): Expectation {
  const t = opts.target;
  if (opts.serverName !== undefined && !/^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(opts.serverName)) {
    throw new MtlsError("E_USAGE", `invalid --server-name "${opts.serverName}"`);
  }
  const servername = opts.serverName ?? (isHostName(t) ? t.host : undefined);
  const expectUri = opts.verifyUri ?? [];
  let expectDns: string[];
  if (opts.verifyDns?.length) expectDns = opts.verifyDns;
  else if (expectUri.length) expectDns = [];
  else if (servername) expectDns = [servername];
  else if (t.kind === "tcp") expectDns = [t.host];
  else expectDns = [];
  if (expectDns.length === 0 && expectUri.length === 0) {
    throw new MtlsError(
      "E_USAGE",
      "no name to check the server's certificate against: pass --server-name, --verify-dns or --verify-uri",
    );
  }
  return { servername, expectDns, expectUri };
}
