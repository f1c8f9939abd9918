/**
 * The FTP control connection through the tunnel (design: ftp.ts): a Duplex that stands in for one
 * socket of the control connection inside a Pipe (pipe.ts), so the pipe keeps doing backpressure,
 * half-close, idle timeout and byte counting while the lines that matter are rewritten.
 *
 *   server end:  Pipe(tls from the client end, FtpServerControl(socket to the FTP server))
 *   client end:  Pipe(socket from the FTP client, FtpClientControl(tls to the server end))
 *
 * Writing to the stream sends commands toward the FTP server; reading from it gives the replies.
 */
import { Duplex } from "node:stream";
import {
  commandVerb,
  FTP_MAX_LINE,
  FTP_MAX_OUTSTANDING,
  LineSplitter,
  parse227,
  parse229,
  parsePrivateReply,
  privateReply,
  REFUSED_COMMANDS,
  ReplyTracker,
} from "./ftp.js";

/** Why a control connection was closed by the tunnel itself. */
export interface ControlProblem {
  reason: "command_too_long" | "reply_too_long";
  detail: string;
}

const OVERFLOW = Symbol("overflow");
/** How long a control connection closed for a protocol error may take to flush its last reply. */
const CLOSE_GRACE_MS = 5000;

/**
 * The plumbing shared by both ends: `inner` is the real socket. Replies read from `inner` are split
 * into lines and handed to onReplyLine one at a time, which may take its time (a Promise): `inner`
 * is paused meanwhile, so nothing is buffered without bound. Emits "problem" (ControlProblem)
 * before closing for a protocol error.
 */
abstract class ControlStream extends Duplex {
  problem: ControlProblem | undefined;
  private readonly replies = new LineSplitter(FTP_MAX_LINE);
  private readonly queue: (Buffer | typeof OVERFLOW)[] = [];
  private innerEnded = false;
  private busy = false;
  private readWanted = true;
  private pushedEnd = false;
  private closing = false;
  private needDrain = false;
  private waitingWrite: (() => void) | undefined;

  protected constructor(protected readonly inner: Duplex) {
    super({ allowHalfOpen: true });
    inner.on("data", (chunk: Buffer) => this.fromInner(chunk));
    inner.on("end", () => {
      this.innerEnded = true;
      this.pump();
    });
    inner.on("error", (err: Error) => this.destroy(err));
    inner.on("close", () => {
      if (this.closing || this.destroyed) return;
      if (!(this.innerEnded && inner.writableFinished)) this.destroy();
    });
    inner.on("drain", () => {
      this.needDrain = false;
      this.wakeWriter();
    });
  }

  /** One reply line (LF included) from `inner`; deliver() what the other side should read. */
  protected abstract onReplyLine(line: Buffer): undefined | Promise<void>;

  /** Bytes written to the stream (commands): send() what goes on to `inner`. */
  protected abstract fromOuter(chunk: Buffer): void;

  /** At end of the outer stream: what is left of an unterminated command. */
  protected abstract flushOuter(): void;

  /** False holds the writer back (called again after wakeWriter()). */
  protected writeReady(): boolean {
    return true;
  }

  /** Forgets session state (listeners, grants) when the stream closes. */
  protected cleanup(): void {}

  protected send(buf: Buffer): void {
    if (buf.length === 0 || this.closing || this.inner.destroyed) return;
    if (!this.inner.write(buf)) this.needDrain = true;
  }

  protected deliver(buf: Buffer | string): void {
    if (this.pushedEnd || this.closing) return;
    if (!this.push(typeof buf === "string" ? Buffer.from(buf, "latin1") : buf)) {
      this.readWanted = false;
      this.inner.pause();
    }
  }

  /** Calls the held-back writer again (the outstanding-command count went down). */
  protected wakeWriter(): void {
    const w = this.waitingWrite;
    this.waitingWrite = undefined;
    w?.();
  }

  /**
   * Ends the connection for a protocol error: `reply` is the last thing the FTP client reads, then
   * the stream ends (the pipe flushes it and ends the other side); `inner` is closed at once.
   */
  protected fail(problem: ControlProblem, reply: string): void {
    if (this.closing) return;
    this.deliver(reply);
    this.closing = true;
    this.problem = problem;
    this.emit("problem", problem);
    this.pushedEnd = true;
    this.push(null);
    this.inner.destroy();
    this.wakeWriter();
    setTimeout(() => this.destroy(), CLOSE_GRACE_MS).unref();
  }

  override _read(): void {
    this.readWanted = true;
    if (!this.busy && !this.closing) this.inner.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (!this.closing) this.fromOuter(chunk);
    const go = () => {
      if (this.closing || this.destroyed) {
        cb();
        return;
      }
      if (this.needDrain || !this.writeReady()) {
        this.waitingWrite = go;
        return;
      }
      cb();
    };
    go();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.closing) this.flushOuter();
    if (this.closing || this.inner.destroyed) {
      cb();
      return;
    }
    this.inner.end();
    if (this.inner.writableFinished) {
      cb();
      return;
    }
    const done = () => {
      this.inner.off("finish", done);
      this.inner.off("close", done);
      cb();
    };
    this.inner.on("finish", done);
    this.inner.on("close", done);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.inner.destroy();
    this.waitingWrite = undefined;
    this.cleanup();
    cb(err);
  }

  private fromInner(chunk: Buffer): void {
    if (this.closing) return;
    const { lines, overflow } = this.replies.push(chunk);
    for (const l of lines) this.queue.push(l);
    if (overflow) this.queue.push(OVERFLOW);
    this.pump();
  }

  private pump(): void {
    while (!this.busy && !this.closing) {
      const line = this.queue.shift();
      if (line === undefined) break;
      if (line === OVERFLOW) {
        this.fail(
          {
            reason: "reply_too_long",
            detail: `the FTP server sent a line longer than ${FTP_MAX_LINE} bytes`,
          },
          `\r\n421 mtls: a reply line longer than ${FTP_MAX_LINE} bytes; closing the connection\r\n`,
        );
        return;
      }
      const pending = this.onReplyLine(line);
      if (pending) {
        this.busy = true;
        this.inner.pause();
        pending.then(
          () => {
            this.busy = false;
            if (this.readWanted && !this.closing) this.inner.resume();
            this.pump();
          },
          (err: Error) => this.destroy(err),
        );
        return;
      }
    }
    if (!this.busy && this.queue.length === 0 && this.innerEnded && !this.pushedEnd && !this.closing) {
      const rest = this.replies.rest();
      if (rest.length > 0) this.deliver(rest);
      this.pushedEnd = true;
      this.push(null);
    }
  }
}

// ---------------------------------------------------------------------------------------------

/** What the server end's control stream asks of its session. */
export interface ServerControlHooks {
  /** The address the control connection to the FTP server goes to: the only host data may go to. */
  backendHost: string;
  /** Records an announced data port; returns its token. */
  grant(host: string, port: number): string;
  /** For logs and metrics. */
  onRefusedCommand(verb: string): void;
  onPassive(
    result: "rewritten" | "foreign_host" | "privileged_port" | "unsolicited" | "unreadable",
    detail: string,
  ): void;
}

type Expected = { verb: string } | { local: string };

/**
 * The server end: refuses active-mode commands with a reply of its own (kept in order with the
 * FTP server's replies) and turns each solicited 227/229 reply into the private form with a token.
 */
export class FtpServerControl extends ControlStream {
  private readonly commands = new LineSplitter(FTP_MAX_LINE);
  private readonly tracker = new ReplyTracker();
  /** Replies still due, in order: the FTP server's (per forwarded command) or one of ours. */
  private readonly expected: Expected[] = [{ verb: "" }];
  private collecting: { code: 227 | 229; lines: Buffer[]; size: number } | undefined;

  constructor(
    backend: Duplex,
    private readonly hooks: ServerControlHooks,
  ) {
    super(backend);
  }

  /** Replies due (for tests). */
  get outstanding(): number {
    return this.expected.length;
  }

  protected override writeReady(): boolean {
    return this.expected.length < FTP_MAX_OUTSTANDING;
  }

  protected override fromOuter(chunk: Buffer): void {
    const { lines, overflow } = this.commands.push(chunk);
    for (const line of lines) this.command(line);
    if (overflow) {
      this.fail(
        { reason: "command_too_long", detail: `a command line longer than ${FTP_MAX_LINE} bytes` },
        `500 Command line too long (over ${FTP_MAX_LINE} bytes); mtls closes the connection\r\n`,
      );
    }
  }

  protected override flushOuter(): void {
    // An unterminated last command: forwarded unless it is one we refuse.
    const rest = this.commands.rest();
    if (rest.length > 0 && !REFUSED_COMMANDS.has(commandVerb(rest))) this.send(rest);
  }

  private command(line: Buffer): void {
    const verb = commandVerb(line);
    const refusal = REFUSED_COMMANDS.get(verb);
    if (refusal) {
      this.hooks.onRefusedCommand(verb);
      if (this.expected.length === 0 && !this.midReply()) this.deliver(refusal);
      else this.expected.push({ local: refusal });
      return;
    }
    this.expected.push({ verb });
    this.send(line);
  }

  private midReply(): boolean {
    return this.tracker.inReply || this.collecting !== undefined;
  }

  protected override onReplyLine(line: Buffer): undefined {
    const info = this.tracker.next(line);
    if (this.collecting) {
      const c = this.collecting;
      c.lines.push(line);
      c.size += line.length;
      if (info.last) {
        this.collecting = undefined;
        this.passive(c.code, c.lines);
      } else if (c.size > FTP_MAX_LINE) {
        // A passive reply is one short line; a long one is not worth keeping in memory.
        this.collecting = undefined;
        this.fail(
          { reason: "reply_too_long", detail: `a ${c.code} reply longer than ${FTP_MAX_LINE} bytes` },
          `421 mtls: a ${c.code} reply longer than ${FTP_MAX_LINE} bytes; closing the connection\r\n`,
        );
      }
      return undefined;
    }
    if (info.first && (info.code === 227 || info.code === 229)) {
      if (info.last) this.passive(info.code, [line]);
      else this.collecting = { code: info.code, lines: [line], size: line.length };
      return undefined;
    }
    this.deliver(line);
    if (info.last && info.code !== undefined && info.code >= 200) this.finalReply();
    return undefined;
  }

  private passive(code: 227 | 229, lines: Buffer[]): void {
    const text = Buffer.concat(lines).toString("latin1");
    const front = this.expected[0];
    const want = code === 227 ? "PASV" : "EPSV";
    let reply: string;
    if (!front || !("verb" in front) || front.verb !== want) {
      const detail = `a ${code} reply that answers no ${want} command`;
      this.hooks.onPassive("unsolicited", detail);
      reply = `425 mtls refused ${detail}\r\n`;
    } else {
      const addr = code === 227 ? parse227(text) : parse229(text);
      const host = addr?.host ?? this.hooks.backendHost;
      if (!addr) {
        const detail = `cannot read the address in the FTP server's reply ${JSON.stringify(text.trim().slice(0, 120))}`;
        this.hooks.onPassive("unreadable", detail);
        reply = `425 mtls ${detail}\r\n`;
      } else if (host !== this.hooks.backendHost) {
        const detail = `the FTP server announced a data port on ${host}, not on its own address ${this.hooks.backendHost}`;
        this.hooks.onPassive("foreign_host", detail);
        reply = `425 mtls refused the passive address: ${detail}\r\n`;
      } else if (addr.port < 1024) {
        const detail = `the FTP server announced the privileged port ${addr.port}`;
        this.hooks.onPassive("privileged_port", detail);
        reply = `425 mtls refused the passive address: ${detail}\r\n`;
      } else {
        const token = this.hooks.grant(host, addr.port);
        this.hooks.onPassive("rewritten", `${host}:${addr.port}`);
        reply = privateReply(code, token);
      }
    }
    this.deliver(reply);
    this.finalReply();
  }

  /** A final reply came: the front command is answered; our own replies next in line go out. */
  private finalReply(): void {
    const front = this.expected[0];
    if (front && "verb" in front) this.expected.shift();
    while (!this.midReply()) {
      const next = this.expected[0];
      if (!next || !("local" in next)) break;
      this.expected.shift();
      this.deliver(next.local);
    }
    this.wakeWriter();
  }
}

// ---------------------------------------------------------------------------------------------

/** What the client end's control stream asks of its session. */
export interface ClientControlHooks {
  /**
   * Opens a local data port for the token and resolves with the reply for the FTP client (the
   * 227/229 naming that port, or a 425 saying why not). Never rejects.
   */
  openData(code: 227 | 229, token: string): Promise<string>;
}

/**
 * The client end: carries commands as they are and rewrites the server end's private-form passive
 * replies into ones that name a local data port.
 */
export class FtpClientControl extends ControlStream {
  private readonly tracker = new ReplyTracker();

  constructor(
    tls: Duplex,
    private readonly hooks: ClientControlHooks,
  ) {
    super(tls);
  }

  protected override fromOuter(chunk: Buffer): void {
    this.send(chunk);
  }

  protected override flushOuter(): void {}

  protected override onReplyLine(line: Buffer): undefined | Promise<void> {
    const info = this.tracker.next(line);
    if (info.first && info.last && (info.code === 227 || info.code === 229)) {
      const p = parsePrivateReply(line.toString("latin1"));
      if (p) return this.hooks.openData(p.code, p.token).then((reply) => this.deliver(reply));
    }
    this.deliver(line);
    return undefined;
  }
}
