import { createHash } from "node:crypto";
import { type FSWatcher, readFileSync, statSync, watch } from "node:fs";
import { basename, dirname } from "node:path";
import { crlToPem } from "../pki/crl.js";
import type { CertificateAuthority } from "./authority.js";

const DEBOUNCE_MS = 100;
/** Safety net besides fs.watch. */
const DEFAULT_POLL_MS = 5_000;

const sha256 = (data: Uint8Array | string): string => createHash("sha256").update(data).digest("hex");

/** The CRL bundle exactly as publishCrls() writes it. */
export const crlBundlePem = (crls: { intermediate: Uint8Array; root: Uint8Array }): string =>
  crlToPem(crls.intermediate) + crlToPem(crls.root);

/**
 * Notices revocations made by *other* processes (`mtls revoke` beside a running `mtls ca serve`):
 * every revocation, and `mtls crl`, rewrites STATE/ca/crl.pem, so a change of that file whose bytes
 * this process did not publish itself (ca.events "crlPublished", or noteLocal) calls `onForeign`.
 * The folder is watched (writers rename a temp file over the target) and the file is also polled.
 */
export class CrlFileWatch {
  private readonly path: string;
  private watcher: FSWatcher | undefined;
  private readonly poll: NodeJS.Timeout | undefined;
  private timer: NodeJS.Timeout | undefined;
  private statKey = "";
  private lastHash = "";
  private readonly local: string[] = [];
  private closed = false;
  private readonly onPublished = (crls: { intermediate: Uint8Array; root: Uint8Array }) =>
    this.noteLocal(crlBundlePem(crls));

  constructor(
    private readonly ca: CertificateAuthority,
    private readonly onForeign: (content: Buffer) => void,
    opts: { pollMs?: number } = {},
  ) {
    this.path = ca.paths.crl;
    this.lastHash = this.hashOfFile() ?? "";
    this.statKey = this.stat();
    ca.events.on("crlPublished", this.onPublished);
    try {
      this.watcher = watch(dirname(this.path), { persistent: false }, (_event, name) => {
        if (name === null || name === basename(this.path)) this.schedule();
      });
      this.watcher.on("error", () => {
        this.watcher?.close();
        this.watcher = undefined;
      });
    } catch {
      this.watcher = undefined; // polling only
    }
    const pollMs = opts.pollMs ?? DEFAULT_POLL_MS;
    if (pollMs > 0) {
      this.poll = setInterval(() => {
        if (this.stat() !== this.statKey) this.schedule();
      }, pollMs);
      this.poll.unref();
    }
  }

  /** Content this process wrote itself (its change is not news). */
  noteLocal(pem: string | Uint8Array): void {
    this.local.push(sha256(pem));
    if (this.local.length > 8) this.local.shift();
  }

  close(): void {
    this.closed = true;
    this.ca.events.off("crlPublished", this.onPublished);
    this.watcher?.close();
    if (this.poll) clearInterval(this.poll);
    if (this.timer) clearTimeout(this.timer);
  }

  private schedule(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.check();
    }, DEBOUNCE_MS);
    this.timer.unref();
  }

  private check(): void {
    if (this.closed) return;
    this.statKey = this.stat();
    let content: Buffer;
    try {
      content = readFileSync(this.path);
    } catch {
      return;
    }
    const hash = sha256(content);
    if (hash === this.lastHash) return;
    this.lastHash = hash;
    if (this.local.includes(hash)) return;
    this.onForeign(content);
  }

  private stat(): string {
    try {
      const s = statSync(this.path);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return "missing";
    }
  }

  private hashOfFile(): string | undefined {
    try {
      return sha256(readFileSync(this.path));
    } catch {
      return undefined;
    }
  }
}
