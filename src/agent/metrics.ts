import { Counter, Gauge, type Registry } from "prom-client";

export interface AgentMetrics {
  lastRenewal: Gauge<"name">;
  failures: Counter<"name">;
  reloadFailures: Counter<"name">;
  /**
   * Reports seconds until `notAfter()` under {name} at every scrape (computed then, so it never goes
   * stale). Returns a function that removes it.
   */
  watchCertificate(name: string, notAfter: () => Date | undefined): () => void;
}

const byRegistry = new WeakMap<Registry, AgentMetrics>();

/**
 * The agent's metrics, registered once per registry:
 *   mtls_agent_cert_seconds_to_expiry{name}           gauge (computed at scrape; negative once expired)
 *   mtls_agent_last_renewal_timestamp_seconds{name}   gauge (Unix time of the last successful renewal)
 *   mtls_agent_renewal_failures_total{name}           counter (failed renewal attempts)
 *   mtls_agent_reload_failures_total{name}            counter (reload actions that failed)
 */
export function agentMetrics(registry: Registry, clock: () => Date = () => new Date()): AgentMetrics {
  const existing = byRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const watched = new Map<string, () => Date | undefined>();
  const metrics: AgentMetrics = {
    lastRenewal: new Gauge({
      name: "mtls_agent_last_renewal_timestamp_seconds",
      help: "Unix time of the certificate's last successful renewal by this agent",
      labelNames: ["name"],
      registers,
    }),
    failures: new Counter({
      name: "mtls_agent_renewal_failures_total",
      help: "Renewal attempts that failed (CA unreachable, refused, files not writable)",
      labelNames: ["name"],
      registers,
    }),
    reloadFailures: new Counter({
      name: "mtls_agent_reload_failures_total",
      help: "Reload actions (signal, command) that failed after a renewal",
      labelNames: ["name"],
      registers,
    }),
    watchCertificate(name, notAfter) {
      watched.set(name, notAfter);
      return () => {
        if (watched.get(name) === notAfter) watched.delete(name);
      };
    },
  };
  new Gauge({
    name: "mtls_agent_cert_seconds_to_expiry",
    help: "Seconds until the certificate on disk expires (negative when expired)",
    labelNames: ["name"],
    registers,
    collect() {
      this.reset();
      const now = clock().getTime();
      for (const [name, notAfter] of watched) {
        const at = notAfter();
        if (at) this.set({ name }, Math.round((at.getTime() - now) / 1000));
      }
    },
  });
  byRegistry.set(registry, metrics);
  return metrics;
}
