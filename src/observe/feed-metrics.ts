import { Counter, Gauge, type Registry } from "prom-client";

/** What the metrics read of a revocation feed at each scrape (tls' RevocationFeedState has it). */
export interface FeedMetricSource {
  connected: boolean;
  stale: boolean;
  lastContactAt: Date | undefined;
  /** Revocations learned from the feed since start (never goes down). */
  received: number;
}

export interface FeedMetricLabels {
  /** "tunnel" or "gateway". */
  component: string;
  /** The tunnel's or gateway's name. */
  name: string;
}

export interface FeedMetrics {
  /**
   * Reports `state()` under `labels` at every scrape (nothing while it returns undefined: no feed
   * in force). Returns a function that removes it.
   */
  watch(labels: FeedMetricLabels, state: () => FeedMetricSource | undefined): () => void;
}

const byRegistry = new WeakMap<Registry, FeedMetrics>();

/**
 * The revocation feed metrics, registered once per registry, all computed at scrape time from the
 * watched feeds (so they never go stale themselves):
 *   mtls_revocation_feed_connected{component,name}              gauge 0/1 (a stream is open)
 *   mtls_revocation_feed_stale{component,name}                  gauge 0/1 (not current, or silent too long:
 *                                                               revocations may arrive late; CRL/OCSP still apply)
 *   mtls_revocation_feed_last_contact_seconds{component,name}   gauge, seconds since the feed last sent
 *                                                               anything (-1: never)
 *   mtls_revocation_feed_revocations_total{component,name}      counter, revocations learned from the feed
 */
export function feedMetrics(registry: Registry, clock: () => Date = () => new Date()): FeedMetrics {
  const existing = byRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const labelNames = ["component", "name"] as const;
  const watched = new Map<string, { labels: FeedMetricLabels; state: () => FeedMetricSource | undefined }>();
  const each = (fn: (labels: FeedMetricLabels, s: FeedMetricSource) => void) => {
    for (const w of watched.values()) {
      const s = w.state();
      if (s) fn(w.labels, s);
    }
  };
  new Gauge({
    name: "mtls_revocation_feed_connected",
    help: "1 while the revocation feed's stream is open",
    labelNames,
    registers,
    collect() {
      this.reset();
      each((l, s) => this.set({ ...l }, s.connected ? 1 : 0));
    },
  });
  new Gauge({
    name: "mtls_revocation_feed_stale",
    help: "1 while the revocation feed is not current (down, catching up, or silent too long); CRL and OCSP still apply",
    labelNames,
    registers,
    collect() {
      this.reset();
      each((l, s) => this.set({ ...l }, s.stale ? 1 : 0));
    },
  });
  new Gauge({
    name: "mtls_revocation_feed_last_contact_seconds",
    help: "Seconds since the revocation feed last sent anything (-1: never)",
    labelNames,
    registers,
    collect() {
      this.reset();
      const now = clock().getTime();
      each((l, s) =>
        this.set({ ...l }, s.lastContactAt ? Math.max(0, (now - s.lastContactAt.getTime()) / 1000) : -1),
      );
    },
  });
  new Counter({
    name: "mtls_revocation_feed_revocations_total",
    help: "Revocations learned from the revocation feed",
    labelNames,
    registers,
    collect() {
      this.reset();
      each((l, s) => this.inc({ ...l }, s.received));
    },
  });
  const metrics: FeedMetrics = {
    watch(labels, state) {
      const key = `${labels.component}\u0000${labels.name}`;
      const entry = { labels, state };
      watched.set(key, entry);
      return () => {
        if (watched.get(key) === entry) watched.delete(key);
      };
    },
  };
  byRegistry.set(registry, metrics);
  return metrics;
}
