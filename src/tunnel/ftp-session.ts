/**
 * FTP sessions at each end of a tunnel (design: ftp.ts). TunnelServer and TunnelClient own one
 * FtpServerEnd / FtpClientEnd when a route or the client runs `--protocol ftp`, and call it at three
 * points of a connection: after authorization (the preamble), when piping (the control stream), and
 * for data connections.
 */
import { createServer, isIPv4, type Socket } from "node:net";
import type { SecureContext, TLSSocket } from "node:tls";
import { type FtpMetrics, ftpMetrics, type Logger, type Registry } from "../observe/index.js";
import type { Address } from "./address.js";
import {
  type DataGrant,
  DataGrants,
  FTP_DATA_TIMEOUT_MS,
  FTP_MAX_PREAMBLE,
  format227,
  format229,
  type GrantOwner,
  PREAMBLE_CONTROL,
  PREAMBLE_OK,
  type PreambleAnswer,
  parsePreamble,
  parsePreambleAnswer,
  plainIp,
  preambleData,
  preambleRefusal,
  REFUSAL_TEXT,
  type ReadLineError,
  readLine,
} from "./ftp.js";
import { FtpClientControl, FtpServerControl } from "./ftp-control.js";

/** Re-arms a socket's idle timer (socket.setTimeout again), at most a few times per timeout. */
function toucher(socket: Socket, idleTimeoutMs: number | undefined): () => void {
  let last = 0;
  const every = Math.min(1000, (idleTimeoutMs ?? 0) / 4);
  return () => {
    if (!idleTimeoutMs || idleTimeoutMs <= 0 || socket.destroyed) return;
    const now = Date.now();
    if (now - last < every) return;
    last = now;
    socket.setTimeout(idleTimeoutMs);
  };
}

export interface FtpEndOptions {
  /** The tunnel's name, the `tunnel` label of metrics. */
  tunnel: string;
  log: Logger;
  registry: Registry;
  /** How long the preamble (server end) or its answer (client end) may take. */
  preambleTimeoutMs: number;
  /** The tunnel's idle timeout: data traffic keeps the control connection from reaching it. */
  idleTimeoutMs?: number;
  /** How long an announced data port stays usable (default 30 s). */
  dataTimeoutMs?: number;
  clock?: () => Date;
}

// ---------------------------------------------------------------------------------------------
// Server end

class ServerSession implements GrantOwner {
  open = true;
  constructor(
    readonly id: number,
    readonly fingerprint: string,
    readonly route: string,
    readonly touch: () => void,
  ) {}
}

export type FtpAccepted =
  | { ok: true; channel: "control" }
  | {
      ok: true;
      channel: "data";
      grant: DataGrant;
      /** The announced data port on the FTP server. */
      target: Address;
      /** The control session it belongs to. */
      session: number;
      /** Counts data traffic as activity of the control connection. */
      touch: () => void;
    }
  | { ok: false; reason: string; detail: string; session?: number };

export class FtpServerEnd {
  readonly grants: DataGrants;
  readonly metrics: FtpMetrics;
  private nextSession = 1;

  constructor(private readonly opts: FtpEndOptions) {
    this.grants = new DataGrants(opts.clock, opts.dataTimeoutMs ?? FTP_DATA_TIMEOUT_MS);
    this.metrics = ftpMetrics(opts.registry);
    const tunnel = opts.tunnel;
    this.metrics.dataConnections.inc({ tunnel, result: "allowed" }, 0);
    for (const result of ["rewritten", "foreign_host"])
      this.metrics.passiveReplies.inc({ tunnel, result }, 0);
  }

  /**
   * Reads the preamble of a verified, authorized connection. A data connection's token is redeemed
   * here; on a refusal the peer has been told why and the socket is closing. `route` names the
   * route the connection took (its server name; routes replaced by a reload keep their names).
   */
  async accept(tls: TLSSocket, fingerprint: string, route: string): Promise<FtpAccepted> {
    let line: string;
    try {
      line = await readLine(tls, FTP_MAX_PREAMBLE, this.opts.preambleTimeoutMs);
    } catch (err) {
      const e = err as ReadLineError;
      const detail =
        e.reason === "timeout"
          ? `no mtls FTP preamble within ${this.opts.preambleTimeoutMs} ms: is the tunnel client started with --protocol ftp?`
          : `no mtls FTP preamble: ${e.message}`;
      return this.refuse(tls, "ftp_no_preamble", "no_preamble", detail);
    }
    const p = parsePreamble(line);
    if (!p) {
      return this.refuse(
        tls,
        "ftp_bad_preamble",
        "bad_preamble",
        `expected the mtls FTP preamble, got ${JSON.stringify(line.slice(0, 60))}: is the tunnel client started with --protocol ftp?`,
      );
    }
    if (p.kind === "control") return { ok: true, channel: "control" };
    const r = this.grants.redeem(p.token, fingerprint, route);
    if (!r.ok) {
      this.metrics.dataConnections.inc({ tunnel: this.opts.tunnel, result: r.reason });
      this.opts.log.warn({ reason: r.reason, detail: r.detail }, "FTP data connection refused");
      return this.refuse(tls, `ftp_${r.reason}`, r.reason, r.detail);
    }
    const owner = r.grant.owner as ServerSession;
    return {
      ok: true,
      channel: "data",
      grant: r.grant,
      target: { kind: "tcp", host: r.grant.host, port: r.grant.port },
      session: owner.id,
      touch: owner.touch,
    };
  }

  /** Tells the client end the connection is through; call right before piping. */
  acknowledge(tls: TLSSocket): void {
    tls.write(PREAMBLE_OK);
  }

  /**
   * Tells the client end why not (`wire`: the reason code; the peer gets a fixed sentence for it,
   * never `detail`) and closes. Returns the refusal for the audit line.
   */
  refuse(
    tls: TLSSocket,
    reason: string,
    wire: string,
    detail: string,
  ): { ok: false; reason: string; detail: string } {
    if (!tls.destroyed) {
      tls.end(preambleRefusal(wire, REFUSAL_TEXT[wire] ?? "refused"));
      setTimeout(() => tls.destroy(), 2000).unref();
    }
    return { ok: false, reason, detail };
  }

  /** Counts a data connection that got through to the FTP server, or could not reach it. */
  dataResult(result: "allowed" | "target_unreachable"): void {
    this.metrics.dataConnections.inc({ tunnel: this.opts.tunnel, result });
  }

  /**
   * The stream that stands in for the socket to the FTP server in the control connection's pipe,
   * and the session number for audit lines. `tls` is the control connection (for its idle timer).
   */
  control(
    backend: Socket,
    tls: TLSSocket,
    fingerprint: string,
    route: string,
  ): { stream: FtpServerControl; session: number } {
    const id = this.nextSession++;
    const session = new ServerSession(id, fingerprint, route, toucher(tls, this.opts.idleTimeoutMs));
    const backendHost = plainIp(backend.remoteAddress) ?? "";
    const tunnel = this.opts.tunnel;
    const log = this.opts.log.child({ ftpSession: id });
    const stream = new FtpServerControl(backend, {
      backendHost,
      grant: (host, port) => this.grants.issue(session, host, port),
      onRefusedCommand: (verb) => {
        this.metrics.commandsRefused.inc({ tunnel, command: verb });
        log.info({ command: verb }, "FTP active mode refused (502)");
      },
      onPassive: (result, detail) => {
        this.metrics.passiveReplies.inc({ tunnel, result });
        if (result === "rewritten") log.debug({ data: detail }, "FTP data port announced");
        else log.warn({ result, detail }, "FTP passive reply refused");
      },
    });
    stream.on("problem", (p: { reason: string; detail: string }) =>
      log.warn(p, "FTP control connection closed"),
    );
    stream.once("close", () => {
      session.open = false;
      this.grants.drop(session);
    });
    return { stream, session: id };
  }
}

// ---------------------------------------------------------------------------------------------
// Client end

/** A local data port's connection, to be carried over a new mTLS connection. */
export interface FtpDataBinding {
  token: string;
  /** The control session's number (for audit lines). */
  session: number;
  /** The TLS context of the control connection: data connections present the same certificate. */
  context: SecureContext;
  /** Counts data traffic as activity of the control connection. */
  touch: () => void;
}

export interface FtpClientEndOptions extends FtpEndOptions {
  /** A local data port accepted its connection: carry it (TunnelClient's connection handler). */
  onDataConnection(plain: Socket, binding: FtpDataBinding): void;
}

export class FtpClientEnd {
  readonly metrics: FtpMetrics;
  private nextSession = 1;

  constructor(private readonly opts: FtpClientEndOptions) {
    this.metrics = ftpMetrics(opts.registry);
    this.metrics.dataConnections.inc({ tunnel: opts.tunnel, result: "allowed" }, 0);
  }

  /**
   * Sends the preamble (control, or data with its token) and waits for the server end's answer.
   * Any bytes after the answer stay in the socket for the pipe.
   */
  async hello(tls: TLSSocket, token?: string): Promise<PreambleAnswer> {
    tls.write(token ? preambleData(token) : PREAMBLE_CONTROL);
    let answer: PreambleAnswer;
    try {
      const line = await readLine(tls, FTP_MAX_PREAMBLE, this.opts.preambleTimeoutMs);
      answer = parsePreambleAnswer(line) ?? {
        ok: false,
        reason: "not_ftp_mode",
        detail: `the tunnel server answered ${JSON.stringify(line.slice(0, 60))} instead of acknowledging the FTP preamble: start it with --protocol ftp`,
      };
    } catch (err) {
      const e = err as ReadLineError;
      answer = {
        ok: false,
        reason: e.reason === "closed" ? "closed" : "no_answer",
        detail: `the tunnel server did not acknowledge the FTP preamble (${e.message}): is it started with --protocol ftp?`,
      };
    }
    if (token)
      this.metrics.dataConnections.inc({
        tunnel: this.opts.tunnel,
        result: answer.ok ? "allowed" : answer.reason,
      });
    return answer;
  }

  /**
   * The stream that stands in for the mTLS connection in the control connection's pipe; `plain`
   * is the FTP client's control connection, `context` the TLS context `tls` was opened with.
   */
  control(
    tls: TLSSocket,
    plain: Socket,
    context: SecureContext,
  ): { stream: FtpClientControl; session: number } {
    const id = this.nextSession++;
    const log = this.opts.log.child({ ftpSession: id });
    const listeners = new Set<() => void>();
    const touch = toucher(plain, this.opts.idleTimeoutMs);
    const timeoutMs = this.opts.dataTimeoutMs ?? FTP_DATA_TIMEOUT_MS;
    const stream = new FtpClientControl(tls, {
      openData: async (code, token) => {
        try {
          const host = dataHost(plain.localAddress, code);
          const port = await listenOnce(host, plain.remoteAddress, timeoutMs, listeners, (data) =>
            this.opts.onDataConnection(data, { token, session: id, context, touch }),
          );
          log.debug({ host, port }, "FTP data port opened");
          return code === 227 ? format227(host, port) : format229(port);
        } catch (err) {
          log.warn({ err: (err as Error).message }, "cannot open a local FTP data port");
          return `425 mtls cannot open a local data port: ${(err as Error).message}\r\n`;
        }
      },
    });
    stream.once("close", () => {
      for (const close of [...listeners]) close();
    });
    return { stream, session: id };
  }
}

/** The local address to listen on for a data port: where the FTP client reached the control port. */
export function dataHost(localAddress: string | undefined, code: 227 | 229): string {
  const addr = plainIp(localAddress);
  if (!addr) throw new Error("the control connection has no IP address (a Unix socket?)");
  if (code === 229 || isIPv4(addr)) return addr;
  if (addr === "::1") return "127.0.0.1";
  throw new Error(`PASV cannot name the IPv6 address ${addr}; use EPSV`);
}

function isLoopbackIp(ip: string | undefined): boolean {
  return ip === "::1" || (ip?.startsWith("127.") ?? false);
}

/**
 * Listens on host:0 for one connection from `peer`'s IP address (any loopback address when `peer`
 * is loopback) and hands it to `onSocket`; closes after that connection or after `timeoutMs`.
 * Connections from elsewhere are dropped. Resolves with the port. `open` holds the close function
 * while the listener is open.
 */
export function listenOnce(
  host: string,
  peer: string | undefined,
  timeoutMs: number,
  open: Set<() => void>,
  onSocket: (s: Socket) => void,
): Promise<number> {
  const want = plainIp(peer);
  const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (s) => {
    const from = plainIp(s.remoteAddress);
    if (!(from === want || (isLoopbackIp(from) && isLoopbackIp(want)))) {
      s.destroy();
      return;
    }
    close();
    onSocket(s);
  });
  let timer: NodeJS.Timeout | undefined;
  const close = () => {
    clearTimeout(timer);
    open.delete(close);
    if (server.listening) server.close();
  };
  return new Promise((resolve, reject) => {
    server.once("error", (err) => {
      close();
      reject(err);
    });
    server.listen({ host, port: 0 }, () => {
      const a = server.address();
      open.add(close);
      timer = setTimeout(close, timeoutMs);
      timer.unref();
      resolve(typeof a === "object" && a ? a.port : 0);
    });
  });
}
