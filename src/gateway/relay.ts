import type { IncomingMessage, ServerResponse } from "node:http";
import { connect, type Socket } from "node:net";
import { WebSocket, WebSocketServer } from "ws";
import { MtlsError } from "../errors.js";
import type { Logger, Registry } from "../observe/index.js";
import { type Address, connectOptions, formatAddress, parseAddress } from "../tunnel/address.js";
import { type RelayMetrics, relayMetrics } from "./metrics.js";

/**
 * The WebSocket relay of `mtls/web` (docs/gateway.md, "Relay for mtls/web"): a page's TLS client
 * sends its TLS bytes as binary WebSocket frames to wss://GATEWAY/.mtls/relay/NAME and the gateway
 * pipes them to the one target configured under NAME (never a target named by the request: no open
 * proxy). The relay sees only ciphertext; the TLS session is between the page and the target.
 */
export const RELAY_PATH_PREFIX = "/.mtls/relay/";

/** One relay: a name (the last path segment of its URL) and the target its sessions go to. */
export interface RelayTargetSpec {
  name: string;
  /** "host:port", "[::1]:port" or "unix:/path". */
  target: string;
}

/** The relay section of a gateway (GatewayOptions.relay, GatewaySpec.relay). */
export interface RelaySettings {
  targets: RelayTargetSpec[];
  /** Origins whose pages may open sessions ("*": any). Default: only the gateway's own origin (https://Host). */
  origins?: string[];
  /** Most sessions at once, all relays together (default 1000; 0: no limit). */
  maxSessions?: number;
  /** Most sessions at once from one client IP address (default 32; 0: no limit). */
  maxSessionsPerClient?: number;
  /** Largest WebSocket message accepted (default 1 MiB; larger: close 1009). */
  maxMessageBytes?: number;
  /** The target must accept the TCP connection within this (default 10 s; else close 1013). */
  connectTimeoutMs?: number;
  /** A session with no byte either way for this long is closed (default 10 min; close 1001). */
  idleTimeoutMs?: number;
}

export const RELAY_DEFAULTS = {
  maxSessions: 1000,
  maxSessionsPerClient: 32,
  maxMessageBytes: 1024 * 1024,
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 600_000,
};

/** Above this many bytes queued towards the browser, reading from the target pauses. */
const HIGH_WATER = 1024 * 1024;
/** ... and resumes once the queue is down to this. */
const LOW_WATER = 256 * 1024;
/** How long a closing session may take (close handshake, target FIN) before both ends are cut. */
const CLOSE_GRACE_MS = 2_000;

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** How a session ended (the `result` label and the audit line's `result`). */
export type RelayResult =
  | "closed" // the browser closed the WebSocket
  | "target_closed" // the target closed its connection (FIN)
  | "target_unreachable" // the target refused the connection or could not be resolved
  | "target_timeout" // no TCP connection within the connect timeout
  | "target_error" // the target's connection broke (reset)
  | "idle_timeout"
  | "protocol_error" // a text frame, a message too large, a broken frame
  | "client_error" // the browser's connection broke without a close frame
  | "shutdown"; // the gateway stopped

/** Why a session was refused before the upgrade (the `reason` label of mtls_relay_refused_total). */
export type RelayRefusal =
  | "unknown_relay"
  | "origin"
  | "max_sessions"
  | "max_sessions_per_client"
  | "not_websocket"
  | "bad_request"
  | "shutting_down";

/** One session as its audit line (`"event":"relay.session"`) records it. */
export interface RelaySessionAuditFields {
  gateway: string;
  relay: string;
  target: string;
  /** The page's Origin header (null: none sent, not a browser). */
  origin: string | null;
  /** The client's address and port. */
  peer: string;
  result: RelayResult;
  /** The WebSocket close code the session ended with (sent or received; 1006: none). */
  closeCode: number;
  /** Words for people: the close reason, the socket error. */
  detail: string;
  bytesToTarget: number;
  bytesFromTarget: number;
  /** From the upgrade to the end of both connections. */
  durationMs: number;
  /** How long the target took to accept the TCP connection (absent: it never did). */
  connectMs?: number;
  startedAt: Date;
}

interface CompiledRelay {
  name: string;
  address: Address;
  target: string;
}

interface CompiledSettings {
  relays: Map<string, CompiledRelay>;
  /** null: any origin. */
  origins: Set<string> | null;
  maxSessions: number;
  maxSessionsPerClient: number;
  maxMessageBytes: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
}

/** `NAME=host:port` (the --relay flag). */
export function parseRelayFlag(text: string): RelayTargetSpec {
  const eq = text.indexOf("=");
  if (eq <= 0) {
    throw new MtlsError(
      "E_USAGE",
      `invalid --relay "${text}" (expected NAME=host:port, e.g. api=10.0.0.5:8443)`,
    );
  }
  const spec = { name: text.slice(0, eq), target: text.slice(eq + 1) };
  compileTarget(spec, "--relay");
  return spec;
}

function compileTarget(spec: RelayTargetSpec, what: string): CompiledRelay {
  if (!NAME_RE.test(spec.name)) {
    throw new MtlsError(
      "E_USAGE",
      `${what}: "${spec.name}" is not a relay name (letters, digits, ".", "_", "-"; at most 64)`,
    );
  }
  const address = parseAddress(spec.target, `${what} ${spec.name} target`);
  return { name: spec.name, address, target: formatAddress(address) };
}

/** An origin as browsers send it ("https://app.example:8443"), or null when `text` is none. */
function originOf(text: string): string | null {
  try {
    const u = new URL(text);
    if (u.protocol !== "https:" && u.protocol !== "http:") return null;
    return u.origin;
  } catch {
    return null;
  }
}

/** A limit: `fallback` when not given; 0 (when `unlimited`) for no limit. */
function count(v: number | undefined, fallback: number, what: string, min = 1, unlimited = false): number {
  if (v === undefined) return fallback;
  if (unlimited && v === 0) return Number.MAX_SAFE_INTEGER;
  if (!Number.isInteger(v) || v < min) throw new MtlsError("E_USAGE", `relay: invalid ${what} ${v}`);
  return v;
}

/** Checks relay settings (names, targets, origins, limits); throws E_USAGE. */
export function compileRelaySettings(s: RelaySettings | undefined): CompiledSettings {
  const relays = new Map<string, CompiledRelay>();
  for (const t of s?.targets ?? []) {
    if (relays.has(t.name)) throw new MtlsError("E_USAGE", `relay "${t.name}" is given twice`);
    relays.set(t.name, compileTarget(t, "relay"));
  }
  let origins: Set<string> | null = new Set();
  for (const o of s?.origins ?? []) {
    if (o === "*") {
      origins = null;
      break;
    }
    const origin = originOf(o);
    if (!origin || new URL(o).pathname.length > 1) {
      throw new MtlsError("E_USAGE", `invalid relay origin "${o}" (e.g. https://app.example.com, or *)`);
    }
    origins.add(origin);
  }
  return {
    relays,
    origins,
    maxSessions: count(s?.maxSessions, RELAY_DEFAULTS.maxSessions, "maxSessions", 1, true),
    maxSessionsPerClient: count(
      s?.maxSessionsPerClient,
      RELAY_DEFAULTS.maxSessionsPerClient,
      "maxSessionsPerClient",
      1,
      true,
    ),
    maxMessageBytes: count(s?.maxMessageBytes, RELAY_DEFAULTS.maxMessageBytes, "maxMessageBytes", 1024),
    connectTimeoutMs: count(s?.connectTimeoutMs, RELAY_DEFAULTS.connectTimeoutMs, "connectTimeoutMs"),
    idleTimeoutMs: count(s?.idleTimeoutMs, RELAY_DEFAULTS.idleTimeoutMs, "idleTimeoutMs"),
  };
}

const clientIp = (s: Socket): string =>
  (s.remoteAddress ?? "").replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, "") || "unknown";

const peerOf = (s: Socket): string => {
  const a = clientIp(s);
  return a.includes(":") ? `[${a}]:${s.remotePort ?? 0}` : `${a}:${s.remotePort ?? 0}`;
};

/** A close reason fits a control frame: at most 123 bytes of UTF-8. */
function closeText(text: string): string {
  const bytes = Buffer.from(text);
  return bytes.length <= 123
    ? text
    : bytes
        .subarray(0, 120)
        .toString("utf8")
        .replace(/\uFFFD+$/, "");
}

/** One open session: a WebSocket and its TCP connection to the target. */
interface Session {
  record: RelaySessionAuditFields;
  ip: string;
  ws: WebSocket;
  target: Socket;
  /** Ends the session (close code to the browser, target closed or half-closed). */
  end(result: RelayResult, code: number, detail: string): void;
  /** Cuts both connections now. */
  cut(): void;
  done: Promise<void>;
}

export interface RelayServiceOptions {
  gateway: string;
  log: Logger;
  registry: Registry;
  /** Called once per session, when it has ended (the gateway emits "relay"). */
  onSession?: (r: RelaySessionAuditFields) => void;
}

/**
 * The relay endpoints of one gateway. The gateway hands it requests under /.mtls/relay/ (when at
 * least one relay is configured) before routing: upgrades through upgrade(), other requests through
 * answer(). Refusals are plain HTTP answers before the upgrade.
 */
export class RelayService {
  private settings: CompiledSettings = compileRelaySettings(undefined);
  private readonly wss: WebSocketServer;
  private readonly sessions = new Set<Session>();
  /** Sessions (and upgrades being completed) per client IP address. */
  private readonly perClient = new Map<string, number>();
  private pending = 0;
  private stopping = false;
  private readonly metrics: RelayMetrics;
  private readonly log: Logger;

  constructor(private readonly opts: RelayServiceOptions) {
    this.metrics = relayMetrics(opts.registry);
    this.log = opts.log;
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      maxPayload: RELAY_DEFAULTS.maxMessageBytes,
    });
  }

  /** Puts (new) settings in force for new sessions; open sessions keep their target. Throws E_USAGE. */
  configure(settings: RelaySettings | undefined): void {
    this.apply(compileRelaySettings(settings));
  }

  /** Puts checked settings in force (see compileRelaySettings). */
  apply(compiled: CompiledSettings): void {
    this.settings = compiled;
    this.wss.options.maxPayload = compiled.maxMessageBytes;
    for (const r of compiled.relays.values()) {
      this.metrics.active.inc({ gateway: this.opts.gateway, relay: r.name }, 0);
      for (const direction of ["to_target", "from_target"]) {
        this.metrics.bytes.inc({ gateway: this.opts.gateway, relay: r.name, direction }, 0);
      }
    }
  }

  /** The relays in force: name and target. */
  get relays(): { name: string; target: string }[] {
    return [...this.settings.relays.values()].map((r) => ({ name: r.name, target: r.target }));
  }

  /** Open sessions. */
  get active(): number {
    return this.sessions.size;
  }

  /** Whether a request is the relay's: at least one relay configured and a path under /.mtls/relay/. */
  claims(req: IncomingMessage): boolean {
    return this.settings.relays.size > 0 && (req.url ?? "").startsWith(RELAY_PATH_PREFIX);
  }

  /** A request under /.mtls/relay/ that is not a WebSocket upgrade (or came over HTTP/2). */
  answer(req: IncomingMessage, res: ServerResponse): void {
    const name = nameOf(req);
    const relay = this.settings.relays.get(name);
    const refuse = (status: number, reason: RelayRefusal, message: string) => {
      this.refused(req, req.socket, relay?.name ?? "-", reason, status, message);
      const body = JSON.stringify({ error: { code: reason, message } });
      const headers: Record<string, string> = {
        "content-type": "application/json",
        "content-length": String(Buffer.byteLength(body)),
        "cache-control": "no-store",
      };
      if (status === 426 && req.httpVersionMajor < 2) {
        headers.upgrade = "websocket";
        headers.connection = "Upgrade";
      }
      res.writeHead(status, headers);
      res.end(req.method === "HEAD" ? undefined : body);
      if (!req.complete) req.resume();
    };
    if (!relay) refuse(404, "unknown_relay", `no relay named "${name.slice(0, 64)}"`);
    else if (req.method !== "GET") refuse(400, "bad_request", "a relay session starts with a GET upgrade");
    else refuse(426, "not_websocket", "a relay is reached over WebSocket (Upgrade: websocket)");
  }

  /** A WebSocket upgrade under /.mtls/relay/: checked, refused as plain HTTP, or made a session. */
  upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on("error", () => undefined);
    const s = this.settings;
    const name = nameOf(req);
    const relay = s.relays.get(name);
    const origin = typeof req.headers.origin === "string" ? req.headers.origin : null;
    const refuse = (status: number, reason: RelayRefusal, message: string) => {
      this.refused(req, socket, relay?.name ?? "-", reason, status, message, origin);
      writeRaw(socket, status, reason, message);
    };
    const ip = clientIp(socket);
    const refusal = this.check(relay, req, origin, ip);
    if (refusal) {
      refuse(...refusal);
      return;
    }
    if (!relay) return;
    // The slot is held while the handshake completes (ws answers a bad one with 400 and closes).
    this.pending++;
    this.perClient.set(ip, (this.perClient.get(ip) ?? 0) + 1);
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      this.pending--;
      this.releaseClient(ip);
    };
    socket.once("close", release);
    const started = new Date();
    const t0 = process.hrtime.bigint();
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      socket.off("close", release);
      if (!held) {
        ws.terminate();
        return;
      }
      held = false;
      this.pending--;
      this.session(
        ws,
        relay,
        {
          gateway: this.opts.gateway,
          relay: relay.name,
          target: relay.target,
          origin,
          peer: peerOf(socket),
          result: "closed",
          closeCode: 1006,
          detail: "",
          bytesToTarget: 0,
          bytesFromTarget: 0,
          durationMs: 0,
          startedAt: started,
        },
        ip,
        t0,
      );
    });
  }

  /** Why an upgrade is refused (status, reason, words), or undefined when it may go ahead. */
  private check(
    relay: CompiledRelay | undefined,
    req: IncomingMessage,
    origin: string | null,
    ip: string,
  ): [number, RelayRefusal, string] | undefined {
    const s = this.settings;
    if (!relay) return [404, "unknown_relay", `no relay named "${nameOf(req).slice(0, 64)}"`];
    if (req.method !== "GET") return [400, "bad_request", "a relay session starts with a GET upgrade"];
    if ((req.headers.upgrade ?? "").toLowerCase() !== "websocket") {
      return [426, "not_websocket", "a relay is reached over WebSocket (Upgrade: websocket)"];
    }
    if (this.stopping) return [503, "shutting_down", "the gateway is shutting down"];
    if (!this.originAllowed(origin, req.headers.host)) {
      return [403, "origin", `pages from ${String(origin).slice(0, 200)} may not use this relay`];
    }
    if (this.sessions.size + this.pending >= s.maxSessions) {
      return [503, "max_sessions", `the relay has ${s.maxSessions} sessions open; try again later`];
    }
    if ((this.perClient.get(ip) ?? 0) >= s.maxSessionsPerClient) {
      return [
        429,
        "max_sessions_per_client",
        `${ip} has ${s.maxSessionsPerClient} relay sessions open; close some first`,
      ];
    }
    return undefined;
  }

  /**
   * Graceful stop: no new sessions; open ones are closed with 1001 (the browser sees "going away").
   * Resolves when they all ended, or after `deadlineMs` (then call cutAll()).
   */
  async shutdown(deadlineMs: number): Promise<void> {
    this.stopping = true;
    const open = [...this.sessions];
    for (const s of open) s.end("shutdown", 1001, "the gateway is shutting down");
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(open.map((s) => s.done)),
      new Promise<void>((r) => {
        timer = setTimeout(r, deadlineMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Cuts every open session now; returns how many there were. */
  cutAll(): number {
    const n = this.sessions.size;
    for (const s of [...this.sessions]) s.cut();
    this.wss.close();
    return n;
  }

  private originAllowed(origin: string | null, host: string | undefined): boolean {
    const allowed = this.settings.origins;
    if (allowed === null) return true;
    // No Origin header: not a browser (a browser always sends one on a WebSocket), so no page of
    // another site is using it; a program could send any Origin anyway.
    if (origin === null) return true;
    const o = originOf(origin);
    if (!o) return false;
    if (allowed.has(o)) return true;
    // The gateway's own origin: the page was served by this gateway (Origin matches Host).
    return host !== undefined && originOf(`https://${host}`) === o;
  }

  private releaseClient(ip: string): void {
    const n = (this.perClient.get(ip) ?? 1) - 1;
    if (n <= 0) this.perClient.delete(ip);
    else this.perClient.set(ip, n);
  }

  private refused(
    req: IncomingMessage,
    socket: Socket,
    relay: string,
    reason: RelayRefusal,
    status: number,
    detail: string,
    origin: string | null = typeof req.headers.origin === "string" ? req.headers.origin : null,
  ): void {
    this.metrics.refused.inc({ gateway: this.opts.gateway, relay, reason });
    this.log.warn(
      {
        event: "relay.refused",
        relay,
        path: (req.url ?? "").slice(0, 256),
        origin,
        peer: peerOf(socket),
        status,
        reason,
        detail,
      },
      `relay session refused: ${reason}`,
    );
  }

  private session(
    ws: WebSocket,
    relay: CompiledRelay,
    record: RelaySessionAuditFields,
    ip: string,
    t0: bigint,
  ): void {
    const s = this.settings;
    const labels = { gateway: this.opts.gateway, relay: relay.name };
    const toTarget = { ...labels, direction: "to_target" };
    const fromTarget = { ...labels, direction: "from_target" };
    this.metrics.active.inc(labels);
    // allowHalfOpen: the target's FIN does not end what the browser still sends (its close_notify).
    const target = connect({ ...connectOptions(relay.address), noDelay: true, allowHalfOpen: true });
    let connected = false;
    let ended = false;
    let wsClosed = false;
    let targetClosed = false;
    let targetPaused = false;
    let wsPaused = false;
    /** Messages that arrived before the target accepted the connection. */
    const early: Buffer[] = [];
    let resolveDone: () => void = () => undefined;
    const done = new Promise<void>((r) => {
      resolveDone = r;
    });
    const timers: NodeJS.Timeout[] = [];

    const finish = () => {
      if (!wsClosed || !targetClosed) return;
      for (const t of timers) clearTimeout(t);
      if (!this.sessions.delete(session)) return;
      this.releaseClient(ip);
      record.durationMs = Math.round(Number(process.hrtime.bigint() - t0) / 1e3) / 1e3;
      this.metrics.active.dec(labels);
      this.metrics.sessions.inc({ ...labels, result: record.result });
      // The logger already names the gateway.
      const { startedAt, gateway: _gateway, ...rest } = record;
      const line = { event: "relay.session", ...rest, startedAt: startedAt.toISOString() };
      const msg = `relay session ${relay.name} ended (${record.result}) after ${record.durationMs} ms`;
      if (record.result === "closed" || record.result === "target_closed") this.log.info(line, msg);
      else this.log.warn(line, msg);
      this.opts.onSession?.(record);
      resolveDone();
    };

    const end = (result: RelayResult, code: number, detail: string) => {
      if (ended) return;
      ended = true;
      record.result = result;
      record.closeCode = code;
      record.detail = detail;
      clearTimeout(connectTimer);
      clearTimeout(idleTimer);
      if (ws.readyState === WebSocket.OPEN) ws.close(code, closeText(detail));
      else if (ws.readyState !== WebSocket.CLOSED && ws.readyState !== WebSocket.CLOSING) ws.terminate();
      // The browser's close frame must be read for the close handshake to complete.
      if (wsPaused && result !== "target_closed") {
        wsPaused = false;
        ws.resume();
      }
      // The target's side: after its own FIN it may still read (the browser's last bytes go on
      // until the browser's close); half-closed on a clean end; cut when at fault or never connected.
      if (result === "closed" || result === "shutdown") {
        if (connected && !target.writableEnded) target.end();
        else if (!connected) target.destroy();
      } else if (result !== "target_closed") target.destroy();
      // Neither end may hold the session open for long once it is ending.
      timers.push(
        setTimeout(() => {
          ws.terminate();
          target.destroy();
        }, CLOSE_GRACE_MS),
      );
    };

    const cut = () => {
      if (!ended) {
        ended = true;
        record.result = "shutdown";
        record.closeCode = 1006;
        record.detail = "cut: the gateway stopped before the session closed";
      }
      ws.terminate();
      target.destroy();
    };

    const session: Session = { record, ip, ws, target, end, cut, done };
    this.sessions.add(session);

    const connectTimer = setTimeout(
      () =>
        end("target_timeout", 1013, `the target did not accept a connection within ${s.connectTimeoutMs} ms`),
      s.connectTimeoutMs,
    );
    const idleTimer = setTimeout(
      () => end("idle_timeout", 1001, `idle for ${s.idleTimeoutMs} ms`),
      s.idleTimeoutMs,
    );
    const activity = () => idleTimer.refresh();

    // Until the target accepts, read no more than the messages already on their way.
    ws.pause();
    wsPaused = true;
    // The gateway began stopping while this upgrade completed.
    if (this.stopping) end("shutdown", 1001, "the gateway is shutting down");

    target.on("connect", () => {
      connected = true;
      clearTimeout(connectTimer);
      record.connectMs = Math.round(Number(process.hrtime.bigint() - t0) / 1e3) / 1e3;
      if (ended) return;
      for (const chunk of early.splice(0)) target.write(chunk);
      wsPaused = false;
      ws.resume();
    });
    target.on("data", (chunk: Buffer) => {
      record.bytesFromTarget += chunk.length;
      this.metrics.bytes.inc(fromTarget, chunk.length);
      activity();
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(chunk, { binary: true }, () => {
        if (targetPaused && ws.bufferedAmount <= LOW_WATER) {
          targetPaused = false;
          target.resume();
        }
      });
      if (!targetPaused && ws.bufferedAmount > HIGH_WATER) {
        targetPaused = true;
        target.pause();
      }
    });
    target.on("end", () => end("target_closed", 1000, "the target closed the connection"));
    target.on("error", (err: NodeJS.ErrnoException) => {
      if (!connected) end("target_unreachable", 1011, `target unreachable: ${err.code ?? err.message}`);
      else end("target_error", 1011, `target connection lost: ${err.code ?? err.message}`);
    });
    target.on("drain", () => {
      if (wsPaused && connected && !ended) {
        wsPaused = false;
        ws.resume();
      }
    });
    target.on("close", () => {
      targetClosed = true;
      end("target_closed", 1000, "the target closed the connection");
      finish();
    });

    ws.on("message", (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
      if (ended && record.result !== "target_closed") return;
      if (!isBinary) {
        end("protocol_error", 1003, "binary frames only");
        return;
      }
      const chunk = Array.isArray(data)
        ? Buffer.concat(data)
        : Buffer.isBuffer(data)
          ? data
          : Buffer.from(data);
      if (chunk.length === 0) return;
      record.bytesToTarget += chunk.length;
      this.metrics.bytes.inc(toTarget, chunk.length);
      activity();
      if (!connected) {
        early.push(chunk);
        return;
      }
      if (target.destroyed || target.writableEnded) return;
      if (!target.write(chunk) && !wsPaused) {
        wsPaused = true;
        ws.pause();
      }
    });
    ws.on("error", (err: Error & { code?: string }) => {
      // ws has already sent its close frame (1009 message too big, 1002 broken frame...).
      const tooBig = err.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH";
      end("protocol_error", tooBig ? 1009 : 1002, err.message);
    });
    ws.on("close", (code: number, reason: Buffer) => {
      wsClosed = true;
      if (!ended) {
        ended = true;
        clearTimeout(connectTimer);
        clearTimeout(idleTimer);
        record.result = code === 1006 ? "client_error" : "closed";
        record.closeCode = code;
        record.detail =
          reason.toString("utf8") || (code === 1006 ? "the connection broke" : "closed by the client");
      }
      // The browser is done sending: the target gets a FIN (what it still sends has nowhere to go).
      if (!connected) target.destroy();
      else if (!target.writableEnded) target.end();
      timers.push(setTimeout(() => target.destroy(), CLOSE_GRACE_MS));
      finish();
    });
  }
}

function nameOf(req: IncomingMessage): string {
  const path = (req.url ?? "").split("?")[0] ?? "";
  return path.slice(RELAY_PATH_PREFIX.length);
}

/** A plain HTTP answer on a socket the HTTP server has let go of (an upgrade), then close. */
function writeRaw(socket: Socket, status: number, code: string, message: string): void {
  if (socket.destroyed) return;
  const body = JSON.stringify({ error: { code, message } });
  const reason =
    {
      400: "Bad Request",
      403: "Forbidden",
      404: "Not Found",
      426: "Upgrade Required",
      429: "Too Many Requests",
      503: "Service Unavailable",
    }[status] ?? "";
  const lines = [
    `HTTP/1.1 ${status} ${reason}`,
    "content-type: application/json",
    `content-length: ${Buffer.byteLength(body)}`,
    "cache-control: no-store",
    ...(status === 426 ? ["upgrade: websocket"] : []),
    ...(status === 503 || status === 429 ? ["retry-after: 5"] : []),
    "connection: close",
    "",
    "",
  ];
  socket.end(lines.join("\r\n") + body);
}
