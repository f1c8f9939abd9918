import { readFile, stat } from "node:fs/promises";
import { isIP, type Socket } from "node:net";
import {
  type ConnectionOptions,
  createSecureContext,
  type SecureContext,
  type TLSSocket,
  connect as tlsConnect,
} from "node:tls";
import { MtlsError } from "../errors.js";
import type { PeerIdentity } from "../policy/index.js";
import { type Address, formatAddress } from "./address.js";
import type { IdentityMinter, MintedIdentity } from "./mint.js";

/**
 * TLS (or mTLS) on a server tunnel's leg to its target (`--target-tls`): the target's certificate
 * must chain to `ca` and carry the target's name; the tunnel presents either nothing, a fixed client
 * certificate (`cert`/`key`), or a short-lived certificate minted for each caller's identity
 * (`identity: "mint"`, see mint.ts), so an mTLS-aware backend sees who is really calling.
 */
export interface TargetTlsOptions {
  /** PEM trust anchors for the target's certificate. */
  ca: string;
  /**
   * The name sent as SNI and required in the target's certificate (default: the target's host; an
   * IP target is checked against the certificate's IP SANs, without SNI). Required for Unix sockets.
   */
  serverName?: string;
  /** A fixed client certificate (PEM chain) and key presented to the target. */
  cert?: string;
  key?: string;
  /** "mint": present a certificate minted for the caller instead (needs a minter). */
  identity?: "mint";
}

/** Why the TLS leg to a target failed: counted and audited as reason "target_tls". */
export class TargetTlsError extends Error {
  readonly reason = "target_tls";
}

/** Files are checked for changes at most this often (on a connection), besides reload(). */
const FILE_CHECK_MS = 1_000;

interface Loaded {
  /** mtime+size of each file, to tell a change. */
  stamp: string;
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
  /** The context of a connection without a minted identity (the fixed certificate, or none). */
  context: SecureContext;
}

/**
 * Wraps connections to one target in TLS. Its files are read when it is opened (a bad file throws
 * then) and re-read when they change; a bad new file keeps the old ones in force. No TLS session is
 * reused towards the target: a session resumed under one caller's minted certificate must never
 * carry another caller.
 */
export class TargetTls {
  private loaded: Loaded;
  /** Contexts of minted certificates, per minted certificate, for the files loaded now. */
  private mintedContexts = new WeakMap<MintedIdentity, SecureContext>();
  private lastCheck = 0;
  private checking: Promise<boolean> | undefined;
  /** The host name checked (and sent as SNI), or the IP address checked. */
  readonly checkName: string;
  private readonly sni: string | undefined;

  private constructor(
    readonly options: TargetTlsOptions,
    readonly target: Address,
    private readonly minter: IdentityMinter | undefined,
    loaded: Loaded,
  ) {
    this.loaded = loaded;
    const name = options.serverName ?? (target.kind === "tcp" ? target.host : undefined);
    if (!name) {
      throw new MtlsError(
        "E_USAGE",
        `TLS to ${formatAddress(target)} needs the name its certificate carries (--target-server-name)`,
      );
    }
    this.checkName = name.replace(/^\[|\]$/g, "");
    this.sni = isIP(this.checkName) ? undefined : this.checkName;
  }

  /** Reads the files and checks the options; E_USAGE / E_NOT_FOUND / E_BAD_INPUT when wrong. */
  static async open(options: TargetTlsOptions, target: Address, minter?: IdentityMinter): Promise<TargetTls> {
    if ((options.cert === undefined) !== (options.key === undefined)) {
      throw new MtlsError(
        "E_USAGE",
        "a client certificate for the target needs both --target-cert and --target-key",
      );
    }
    if (options.identity !== undefined && options.identity !== "mint") {
      throw new MtlsError("E_USAGE", `invalid --target-identity "${String(options.identity)}" (mint)`);
    }
    if (options.identity === "mint") {
      if (options.cert !== undefined)
        throw new MtlsError(
          "E_USAGE",
          "give either --target-cert/--target-key or --target-identity mint, not both",
        );
      if (!minter)
        throw new MtlsError(
          "E_USAGE",
          "--target-identity mint needs the local CA (--state DIR and its passphrase)",
        );
    }
    return new TargetTls(options, target, minter, await load(options));
  }

  /** What it presents, for log lines: "no client certificate", "certificate FILE", "minted per caller". */
  get presents(): string {
    if (this.options.identity === "mint") return "a certificate minted per caller";
    return this.options.cert ? `the certificate ${this.options.cert}` : "no client certificate";
  }

  /** Re-reads the files now if they changed; resolves true when new ones are in force. */
  reload(): Promise<boolean> {
    this.checking ??= this.check().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  /**
   * Makes `socket` (open to the target) a TLS client of it, presenting what the options say for
   * `caller`, and resolves once the target's certificate is verified. Rejects with a TargetTlsError
   * (the socket destroyed) when minting, the handshake or the verification fails, or it takes
   * longer than `timeoutMs`.
   */
  async wrap(socket: Socket, caller: PeerIdentity, timeoutMs: number): Promise<TLSSocket> {
    const now = Date.now();
    if (now - this.lastCheck >= FILE_CHECK_MS) {
      this.lastCheck = now;
      void this.reload().catch(() => undefined);
    }
    let context = this.loaded.context;
    if (this.options.identity === "mint" && this.minter) {
      let minted: MintedIdentity;
      try {
        minted = await this.minter.forCaller(caller);
      } catch (err) {
        socket.destroy();
        throw new TargetTlsError(`cannot mint a certificate for the caller: ${(err as Error).message}`, {
          cause: err,
        });
      }
      context = this.mintedContext(minted);
    }
    if (socket.destroyed) throw new TargetTlsError("the connection to the target closed before TLS started");
    return new Promise<TLSSocket>((resolve, reject) => {
      const tls = tlsConnect({
        socket,
        secureContext: context,
        host: this.checkName,
        ...(this.sni ? { servername: this.sni } : {}),
        rejectUnauthorized: true,
        allowHalfOpen: true,
        // Node passes allowHalfOpen on to the TLSSocket (its types leave it out).
      } as ConnectionOptions);
      let settled = false;
      const fail = (detail: string, cause?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        tls.destroy();
        socket.destroy();
        reject(new TargetTlsError(detail, cause ? { cause } : undefined));
      };
      const timer = setTimeout(
        () => fail(`no TLS handshake with the target ${formatAddress(this.target)} within ${timeoutMs} ms`),
        timeoutMs,
      );
      const onError = (err: NodeJS.ErrnoException) => fail(describeTargetError(err, this.target), err);
      const onClose = () =>
        fail(`the target ${formatAddress(this.target)} closed the connection during the TLS handshake`);
      tls.once("error", onError);
      tls.once("close", onClose);
      tls.once("secureConnect", () => {
        if (settled) return;
        // rejectUnauthorized has already refused an unverified target; this is belt and braces.
        if (!tls.authorized) {
          fail(`the target's certificate is not trusted: ${String(tls.authorizationError)}`);
          return;
        }
        settled = true;
        clearTimeout(timer);
        tls.off("error", onError);
        tls.off("close", onClose);
        // Errors from here on are the pipe's to report; never crash on one in between.
        tls.on("error", () => undefined);
        tls.setNoDelay(true);
        resolve(tls);
      });
    });
  }

  private mintedContext(minted: MintedIdentity): SecureContext {
    let ctx = this.mintedContexts.get(minted);
    if (!ctx) {
      ctx = contextOf(this.loaded.ca, Buffer.from(minted.certPem), Buffer.from(minted.keyPem));
      this.mintedContexts.set(minted, ctx);
    }
    return ctx;
  }

  private async check(): Promise<boolean> {
    const stamp = await stampOf(this.options);
    if (stamp === this.loaded.stamp) return false;
    try {
      this.loaded = await load(this.options);
      this.mintedContexts = new WeakMap();
      return true;
    } catch {
      // A bad new file keeps the old ones in force; the stamp is remembered so it is not retried
      // until the files change again.
      this.loaded = { ...this.loaded, stamp };
      return false;
    }
  }
}

function contextOf(ca: Buffer, cert?: Buffer, key?: Buffer): SecureContext {
  return createSecureContext({
    ca,
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    minVersion: "TLSv1.2",
  });
}

async function stampOf(o: TargetTlsOptions): Promise<string> {
  const parts = await Promise.all(
    [o.ca, o.cert, o.key].map(async (f) => {
      if (f === undefined) return "-";
      try {
        const s = await stat(f);
        return `${s.mtimeMs}:${s.size}:${s.ino}`;
      } catch {
        return "missing";
      }
    }),
  );
  return parts.join("|");
}

async function readOrThrow(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new MtlsError(
      code === "ENOENT" ? "E_NOT_FOUND" : "E_IO",
      `cannot read the ${what} ${file}: ${code === "ENOENT" ? "no such file" : (err as Error).message}`,
      { cause: err },
    );
  }
}

async function load(o: TargetTlsOptions): Promise<Loaded> {
  const stamp = await stampOf(o);
  const ca = await readOrThrow(o.ca, "target CA file (--target-ca)");
  const cert = o.cert !== undefined ? await readOrThrow(o.cert, "target client certificate") : undefined;
  const key = o.key !== undefined ? await readOrThrow(o.key, "target client key") : undefined;
  if (!ca.includes("-----BEGIN CERTIFICATE-----")) {
    throw new MtlsError("E_BAD_INPUT", `${o.ca} holds no PEM certificate (the target's trust anchors)`);
  }
  let context: SecureContext;
  try {
    context = contextOf(ca, cert, key);
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", `TLS files for the target refused: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return { stamp, ca, ...(cert ? { cert } : {}), ...(key ? { key } : {}), context };
}

/** One line for the audit detail: what went wrong on the TLS leg to the target. */
export function describeTargetError(
  err: NodeJS.ErrnoException & { reason?: string },
  target: Address,
): string {
  const where = `the target ${formatAddress(target)}`;
  switch (err.code) {
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return `${where}: its certificate does not carry the expected name (${err.reason ?? err.message})`;
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
      return `${where}: its certificate does not chain to the target CA (${err.code})`;
    case "CERT_HAS_EXPIRED":
      return `${where}: its certificate has expired`;
    case "CERT_NOT_YET_VALID":
      return `${where}: its certificate is not valid yet`;
    default:
      return `${where}: TLS failed: ${err.reason ?? err.message}${err.code ? ` (${err.code})` : ""}`;
  }
}
