import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";

export { Registry } from "prom-client";

let processRegistry: Registry | undefined;

/** A fresh registry with the default process metrics (CPU, memory, event loop lag, handles). */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}

/** The one registry of this process, created on first use: what /metrics serves. */
export function defaultRegistry(): Registry {
  processRegistry ??= createRegistry();
  return processRegistry;
}

export type Direction = "in" | "out";

/** Why a connection was turned away before TLS verification could even start. */
export type RejectReason =
  | "max_connections"
  | "shutting_down"
  | "target_unreachable"
  | "target_timeout"
  /** The TLS leg to a TLS target failed (its certificate, the handshake, minting the caller's). */
  | "target_tls";

export interface TunnelMetrics {
  connectionsOpen: Gauge<"tunnel">;
  connectionsTotal: Counter<"tunnel">;
  handshakeFailures: Counter<"tunnel" | "reason">;
  rejected: Counter<"tunnel" | "reason">;
  bytes: Counter<"tunnel" | "direction">;
  certificateExpiry: Gauge<"tunnel" | "certificate">;
  revocationsClosed: Counter<"tunnel">;
  resumed: Counter<"tunnel">;
  /**
   * Reports seconds until `notAfter()` under {tunnel, certificate} at every scrape (a value
   * computed at scrape time, so it never goes stale). Returns a function that removes it.
   */
  watchCertificate(tunnel: string, certificate: string, notAfter: () => Date | undefined): () => void;
}

const byRegistry = new WeakMap<Registry, TunnelMetrics>();

/**
 * The tunnel metrics, registered once per registry (several tunnels in one process share them and
 * are told apart by the `tunnel` label).
 *   mtls_tunnel_connections_open{tunnel}                    gauge
 *   mtls_tunnel_connections_total{tunnel}                   counter (connections accepted)
 *   mtls_tunnel_handshake_failures_total{tunnel,reason}     counter, reason = tls RefusalReason
 *   mtls_tunnel_connections_rejected_total{tunnel,reason}   counter, reason = RejectReason
 *   mtls_tunnel_bytes_total{tunnel,direction}               counter, in = read from the listening side
 *   mtls_certificate_expiry_seconds{tunnel,certificate}     gauge (computed at scrape)
 *   mtls_tunnel_revocations_closed_total{tunnel}            counter (open connections cut)
 *   mtls_tunnel_sessions_resumed_total{tunnel}              counter (TLS session resumptions)
 */
export function tunnelMetrics(registry: Registry, clock: () => Date = () => new Date()): TunnelMetrics {
  const existing = byRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const watched = new Map<
    string,
    { tunnel: string; certificate: string; notAfter: () => Date | undefined }
  >();
  const metrics: TunnelMetrics = {
    connectionsOpen: new Gauge({
      name: "mtls_tunnel_connections_open",
      help: "Connections currently open through the tunnel",
      labelNames: ["tunnel"],
      registers,
    }),
    connectionsTotal: new Counter({
      name: "mtls_tunnel_connections_total",
      help: "Connections accepted by the tunnel",
      labelNames: ["tunnel"],
      registers,
    }),
    handshakeFailures: new Counter({
      name: "mtls_tunnel_handshake_failures_total",
      help: "Peers refused during or right after the TLS handshake, by reason",
      labelNames: ["tunnel", "reason"],
      registers,
    }),
    rejected: new Counter({
      name: "mtls_tunnel_connections_rejected_total",
      help: "Connections turned away for a reason other than the peer's identity",
      labelNames: ["tunnel", "reason"],
      registers,
    }),
    bytes: new Counter({
      name: "mtls_tunnel_bytes_total",
      help: "Bytes carried; in = read from the listening side, out = written to it",
      labelNames: ["tunnel", "direction"],
      registers,
    }),
    certificateExpiry: new Gauge({
      name: "mtls_certificate_expiry_seconds",
      help: "Seconds until the certificate expires (negative when expired)",
      labelNames: ["tunnel", "certificate"],
      registers,
      collect() {
        this.reset();
        const now = clock().getTime();
        for (const w of watched.values()) {
          const notAfter = w.notAfter();
          if (notAfter)
            this.set(
              { tunnel: w.tunnel, certificate: w.certificate },
              Math.round((notAfter.getTime() - now) / 1000),
            );
        }
      },
    }),
    revocationsClosed: new Counter({
      name: "mtls_tunnel_revocations_closed_total",
      help: "Open connections closed because the peer's certificate became revoked",
      labelNames: ["tunnel"],
      registers,
    }),
    resumed: new Counter({
      name: "mtls_tunnel_sessions_resumed_total",
      help: "TLS connections that resumed an earlier session instead of a full handshake",
      labelNames: ["tunnel"],
      registers,
    }),
    watchCertificate(tunnel, certificate, notAfter) {
      const key = `${tunnel}\u0000${certificate}`;
      const entry = { tunnel, certificate, notAfter };
      watched.set(key, entry);
      return () => {
        if (watched.get(key) === entry) watched.delete(key);
      };
    },
  };
  byRegistry.set(registry, metrics);
  return metrics;
}
