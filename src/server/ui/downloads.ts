import { randomBytes } from "node:crypto";

/** How long a prepared .p12 waits for its download. */
export const DOWNLOAD_TTL_MS = 10 * 60_000;
/** At most this many files wait at once (each a few KB); the oldest go first. */
const MAX_WAITING = 1000;

export interface Download {
  filename: string;
  contentType: string;
  data: Uint8Array;
}

/**
 * Files handed out once: a PKCS#12 made for a person waits here, in memory only, under a random
 * 256-bit id until it is fetched (then it is gone) or for 10 minutes. Nothing touches the disk, so
 * a restart forgets them, which is the point.
 */
export class OneTimeDownloads {
  private readonly waiting = new Map<string, Download & { expiresAt: number }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly clock: () => Date = () => new Date(),
    private readonly ttlMs = DOWNLOAD_TTL_MS,
  ) {
    this.sweeper = setInterval(() => this.sweep(), Math.min(60_000, ttlMs));
    this.sweeper.unref();
  }

  /** Keeps `d` and returns the id that fetches it once. */
  put(d: Download): string {
    this.sweep();
    while (this.waiting.size >= MAX_WAITING) {
      const oldest = this.waiting.keys().next().value;
      if (oldest === undefined) break;
      this.waiting.delete(oldest);
    }
    const id = randomBytes(32).toString("base64url");
    this.waiting.set(id, { ...d, expiresAt: this.clock().getTime() + this.ttlMs });
    return id;
  }

  /** The file, removed as it is handed out; undefined when unknown, fetched already or expired. */
  take(id: string): Download | undefined {
    const d = this.waiting.get(id);
    if (!d) return undefined;
    this.waiting.delete(id);
    if (d.expiresAt <= this.clock().getTime()) return undefined;
    return { filename: d.filename, contentType: d.contentType, data: d.data };
  }

  get size(): number {
    return this.waiting.size;
  }

  private sweep(): void {
    const now = this.clock().getTime();
    for (const [id, d] of this.waiting) if (d.expiresAt <= now) this.waiting.delete(id);
  }

  close(): void {
    clearInterval(this.sweeper);
    this.waiting.clear();
  }
}
