import { EventEmitter } from "node:events";
import type { SecureContext, SecureContextOptions } from "node:tls";
import type { CertInfo } from "../pki/certinfo.js";
import type { RevocationFeedState } from "./revocation-feed.js";
import type { RevocationChecker, RevocationStatus, TlsFiles, TlsMaterial } from "./types.js";

/**
 * A TlsMaterial that stands for another one, which can be replaced while the endpoint runs: a
 * config reload that names other certificate files swaps the material under a running tunnel
 * without restarting it. Events of the material in force ("reload", "reloadError") are passed on;
 * a swap itself is announced as "reload", so the endpoint takes the new context for new connections
 * (open connections keep theirs).
 */
export class SwappableMaterial extends EventEmitter implements TlsMaterial {
  private inner: TlsMaterial;
  private readonly onReload = (cert: CertInfo) => this.emit("reload", cert);
  private readonly onReloadError = (err: Error) => this.emit("reloadError", err);
  private watching: { intervalMs?: number } | undefined;

  constructor(inner: TlsMaterial) {
    super();
    this.inner = inner;
    this.attach(inner);
  }

  /** The material in force. */
  get material(): TlsMaterial {
    return this.inner;
  }

  /**
   * Puts `next` in force and returns the one it replaces (not closed: the caller decides). `next`
   * is watched as the old one was.
   */
  swap(next: TlsMaterial): TlsMaterial {
    const old = this.inner;
    if (next === old) return old;
    old.off("reload", this.onReload);
    old.off("reloadError", this.onReloadError);
    this.inner = next;
    this.attach(next);
    if (this.watching) next.watch(this.watching);
    this.emit("reload", next.certificate);
    return old;
  }

  private attach(m: TlsMaterial): void {
    m.on("reload", this.onReload);
    m.on("reloadError", this.onReloadError);
  }

  get files(): TlsFiles {
    return this.inner.files;
  }
  current(): SecureContext {
    return this.inner.current();
  }
  contextOptions(): SecureContextOptions {
    return this.inner.contextOptions();
  }
  get certificate(): CertInfo {
    return this.inner.certificate;
  }
  get anchors(): CertInfo[] {
    return this.inner.anchors;
  }
  get chain(): CertInfo[] {
    return this.inner.chain;
  }
  reload(): Promise<boolean> {
    return this.inner.reload();
  }
  watch(opts: { intervalMs?: number } = {}): void {
    this.watching = opts;
    this.inner.watch(opts);
  }
  close(): void {
    this.inner.off("reload", this.onReload);
    this.inner.off("reloadError", this.onReloadError);
    this.inner.close();
  }
}

const NONE: RevocationStatus = { status: "unknown", source: "none" };

/**
 * A RevocationChecker that stands for another one (or for none: every check answers "unknown",
 * source "none", as when no checker is configured), replaceable while the endpoint runs. "update"
 * events of the checker in force are passed on, and a swap is announced as an "update" so that
 * open connections are checked against the new sources at once.
 */
export class SwappableRevocation extends EventEmitter implements RevocationChecker {
  private inner: RevocationChecker | undefined;
  private readonly onUpdate = (info: unknown) => this.emit("update", info);

  constructor(inner?: RevocationChecker) {
    super();
    this.inner = inner;
    inner?.on("update", this.onUpdate);
  }

  get checker(): RevocationChecker | undefined {
    return this.inner;
  }

  /** Puts `next` (or none) in force; returns the one it replaces, not closed. */
  swap(next: RevocationChecker | undefined): RevocationChecker | undefined {
    const old = this.inner;
    if (next === old) return old;
    old?.off("update", this.onUpdate);
    this.inner = next;
    next?.on("update", this.onUpdate);
    this.emit("update", { source: "swap" });
    return old;
  }

  check(leaf: CertInfo, issuer: CertInfo | undefined): Promise<RevocationStatus> {
    return this.inner ? this.inner.check(leaf, issuer) : Promise.resolve({ ...NONE });
  }

  /** The feed state of the checker in force (a swap to a checker without a feed: undefined). */
  feedState(): RevocationFeedState | undefined {
    return this.inner?.feedState?.();
  }

  /** Only while a checker is in force, and as that checker says. */
  needsIssuer(): boolean {
    return this.inner ? (this.inner.needsIssuer?.() ?? true) : false;
  }

  close(): void {
    this.inner?.off("update", this.onUpdate);
    this.inner?.close();
  }
}
