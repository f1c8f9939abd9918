// Types only at load time: the CA (and its store) is imported when a minter is created, so tunnels
// that do not mint keep it out of their heap.
import type { CertificateAuthority, Clock } from "../ca/index.js";
import { statePaths } from "../config/state.js";
import { MtlsError } from "../errors.js";
import { type Logger, silentLogger } from "../observe/index.js";
import type { San } from "../pki/names.js";
import type { PeerIdentity } from "../policy/index.js";

/** Lifetime of a minted certificate unless told otherwise (`--mint-ttl`). */
export const DEFAULT_MINT_TTL_MS = 60 * 60_000;
/** A minted certificate is used until this share of its lifetime has passed, then a new one is minted. */
const REFRESH_AT = 2 / 3;
/** Cache entries kept at most (the oldest go first); one per caller certificate. */
const MAX_ENTRIES = 10_000;

/** A client certificate minted for one caller, with its key (in memory only, never written). */
export interface MintedIdentity {
  /** The name it is filed under in the inventory: "mint-<first 16 hex of the caller's fingerprint>". */
  name: string;
  serial: string;
  /** Leaf then intermediate, PEM. */
  certPem: string;
  /** PKCS#8 PEM of its private key. */
  keyPem: string;
  notAfter: Date;
  /** Clock ms after which a new one is minted for the next connection. */
  refreshAt: number;
  /** The fingerprint of the caller's certificate it stands for. */
  callerFingerprint: string;
}

export interface IdentityMinterOptions {
  ca: CertificateAuthority;
  /** The tunnel's name: the actor "tunnel:<name>" in the audit log. */
  tunnel: string;
  /** Lifetime of a minted certificate (default 1 h); never beyond the caller's own notAfter. */
  ttlMs?: number;
  logger?: Logger;
  clock?: () => Date;
  /** Close the CA's store on close() (when the minter opened it). */
  ownsCa?: boolean;
}

/**
 * Mints short-lived client certificates from the local CA that carry a caller's identity (subject
 * CN and OUs, DNS/URI/e-mail/IP SANs of the caller's verified certificate), for a tunnel that
 * presents them to an mTLS-aware target (`--target-identity mint`). One per caller certificate
 * (by fingerprint), cached until 2/3 of its lifetime; concurrent connections of one caller share
 * one issuance. Every minted certificate is in the inventory and the audit log like any other.
 */
export class IdentityMinter {
  private readonly cache = new Map<string, MintedIdentity>();
  private readonly inflight = new Map<string, Promise<MintedIdentity>>();
  private readonly ttlMs: number;
  private readonly clock: () => Date;
  private readonly log: Logger;
  private closed = false;
  /** Certificates minted so far (not served from the cache). */
  minted = 0;

  constructor(private readonly opts: IdentityMinterOptions) {
    const ttl = opts.ttlMs ?? DEFAULT_MINT_TTL_MS;
    if (!Number.isFinite(ttl) || ttl < 60_000) {
      throw new MtlsError(
        "E_USAGE",
        `a minted certificate's lifetime must be at least 1 minute (got ${ttl} ms)`,
      );
    }
    this.ttlMs = ttl;
    this.clock = opts.clock ?? (() => new Date());
    this.log = (opts.logger ?? silentLogger()).child({ component: "mint" });
  }

  /** The CA the certificates chain to (its root is what a target trusts). */
  get ca(): CertificateAuthority {
    return this.opts.ca;
  }

  /** The certificate standing for `caller`: the cached one while fresh, else a newly minted one. */
  forCaller(caller: PeerIdentity): Promise<MintedIdentity> {
    if (this.closed) return Promise.reject(new MtlsError("E_USAGE", "the identity minter is closed"));
    const key = caller.fingerprint;
    const now = this.clock().getTime();
    const cached = this.cache.get(key);
    if (cached && now < cached.refreshAt) return Promise.resolve(cached);
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const p = this.mint(caller).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  /** Forgets the cache and, when it opened the CA, closes the CA's store. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cache.clear();
    await Promise.allSettled([...this.inflight.values()]);
    if (this.opts.ownsCa) await this.opts.ca.store.close();
  }

  private async mint(caller: PeerIdentity): Promise<MintedIdentity> {
    const now = this.clock().getTime();
    const ttl = Math.min(this.ttlMs, caller.notAfter.getTime() - now);
    if (ttl <= 0) {
      throw new MtlsError(
        "E_EXPIRED",
        `the caller's certificate ${caller.serial} has expired: nothing to mint for`,
      );
    }
    const name = mintName(caller.fingerprint);
    const issued = await this.opts.ca.issue({
      profile: "client",
      name,
      ...(caller.commonName ? { commonName: caller.commonName } : {}),
      ...(caller.organizationalUnits.length ? { organizationalUnit: caller.organizationalUnits } : {}),
      sans: sansOf(caller),
      ttlMs: ttl,
      keyType: "ec-p256",
      actor: `tunnel:${this.opts.tunnel}`,
    });
    if (!issued.privateKey)
      throw new MtlsError("E_BAD_INPUT", "the CA returned no private key for a minted certificate");
    const minted: MintedIdentity = {
      name,
      serial: issued.record.serial,
      certPem: issued.chainPem,
      keyPem: issued.privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
      notAfter: issued.record.notAfter,
      refreshAt: now + Math.floor(ttl * REFRESH_AT),
      callerFingerprint: caller.fingerprint,
    };
    this.minted++;
    if (!this.closed) this.remember(caller.fingerprint, minted);
    this.log.info(
      {
        name,
        serial: minted.serial,
        subject: issued.record.subject,
        caller: caller.serial,
        notAfter: minted.notAfter.toISOString(),
      },
      "minted a certificate for a caller",
    );
    return minted;
  }

  private remember(key: string, minted: MintedIdentity): void {
    this.cache.delete(key);
    this.cache.set(key, minted);
    if (this.cache.size <= MAX_ENTRIES) return;
    const now = this.clock().getTime();
    for (const [k, v] of this.cache) if (v.refreshAt <= now) this.cache.delete(k);
    // Still too many: the oldest insertions go.
    for (const k of this.cache.keys()) {
      if (this.cache.size <= MAX_ENTRIES) break;
      this.cache.delete(k);
    }
  }
}

/** "mint-" and the first 16 hex digits of the caller's certificate fingerprint. */
export function mintName(fingerprint: string): string {
  return `mint-${fingerprint
    .replace(/[^0-9a-fA-F]/g, "")
    .slice(0, 16)
    .toLowerCase()}`;
}

/** The caller's SANs, as they are in its certificate. */
function sansOf(id: PeerIdentity): San[] {
  return [
    ...id.dnsNames.map((value): San => ({ type: "dns", value })),
    ...id.ips.map((value): San => ({ type: "ip", value })),
    ...id.emails.map((value): San => ({ type: "email", value })),
    ...id.uris.map((value): San => ({ type: "uri", value })),
  ];
}

export interface OpenMinterOptions {
  /** The state directory of the local CA. */
  state: string;
  /** --passphrase-file; else MTLS_PASSPHRASE; else STATE/passphrase (as openCa). */
  passphraseFile?: string;
  env?: NodeJS.ProcessEnv;
  tunnel: string;
  ttlMs?: number;
  logger?: Logger;
  clock?: Clock;
}

/**
 * Opens the local CA of `state` for minting and decrypts its intermediate key at once, so a wrong
 * or missing passphrase stops the tunnel at start rather than at its first connection.
 */
export async function openIdentityMinter(opts: OpenMinterOptions): Promise<IdentityMinter> {
  const { openCa } = await import("../ca/index.js");
  const ca = await openCa(statePaths(opts.state), {
    ...(opts.passphraseFile ? { passphraseFile: opts.passphraseFile } : {}),
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  try {
    ca.intermediateSigner();
    return new IdentityMinter({
      ca,
      tunnel: opts.tunnel,
      ownsCa: true,
      ...(opts.ttlMs !== undefined ? { ttlMs: opts.ttlMs } : {}),
      ...(opts.logger ? { logger: opts.logger } : {}),
      ...(opts.clock ? { clock: opts.clock } : {}),
    });
  } catch (err) {
    await ca.store.close();
    throw err;
  }
}
