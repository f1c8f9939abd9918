/**
 * Per-client token buckets for the endpoints anyone can call (enrollment, OCSP, CRL, and requests
 * without a valid client certificate). Each (bucket name, client address) pair refills at `rate`
 * tokens per second up to `burst`; a request takes one token or is refused with the seconds until
 * the next token. Memory is bounded: full (idle) buckets are dropped when the table grows past
 * `maxClients`, and if that is not enough, the oldest entries go.
 */
export interface RateLimitOptions {
  /** Tokens per second per client; 0 turns limiting off. */
  rate: number;
  /** Bucket size (default 2 × rate, at least 1). */
  burst?: number;
  /** Most clients tracked at once (default 10,000). */
  maxClients?: number;
  /** Milliseconds, injectable for tests. */
  now?: () => number;
}

export interface RateDecision {
  ok: boolean;
  /** Whole seconds to wait before retrying (≥ 1) when refused. */
  retryAfter: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly rate: number;
  private readonly burst: number;
  private readonly maxClients: number;
  private readonly now: () => number;

  constructor(opts: RateLimitOptions) {
    this.rate = Math.max(0, opts.rate);
    this.burst = Math.max(1, opts.burst ?? Math.ceil(this.rate * 2));
    this.maxClients = opts.maxClients ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  get enabled(): boolean {
    return this.rate > 0;
  }

  /** Takes one token from the bucket of (`name`, `client`). */
  take(name: string, client: string): RateDecision {
    if (!this.enabled) return { ok: true, retryAfter: 0 };
    const key = `${name}\u0000${client}`;
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (bucket) {
      bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.rate);
      bucket.at = now;
      // Re-insert so that Map order is least recently used first.
      this.buckets.delete(key);
    } else {
      bucket = { tokens: this.burst, at: now };
      if (this.buckets.size >= this.maxClients) this.prune(now);
    }
    this.buckets.set(key, bucket);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { ok: true, retryAfter: 0 };
    }
    return { ok: false, retryAfter: Math.max(1, Math.ceil((1 - bucket.tokens) / this.rate)) };
  }

  /** How many clients are tracked (for tests and metrics). */
  get size(): number {
    return this.buckets.size;
  }

  private prune(now: number): void {
    for (const [key, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.rate >= this.burst) this.buckets.delete(key);
    }
    // Still full: forget the least recently used tenth.
    if (this.buckets.size >= this.maxClients) {
      let drop = Math.max(1, Math.floor(this.maxClients / 10));
      for (const key of this.buckets.keys()) {
        if (drop-- <= 0) break;
        this.buckets.delete(key);
      }
    }
  }
}
