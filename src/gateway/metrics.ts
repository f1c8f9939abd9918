import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/**
 * The gateway's metrics, registered once per registry (gateways in one process are told apart by
 * the `gateway` label):
 *   mtls_gateway_requests_total{gateway,route,status}         counter (answered requests)
 *   mtls_gateway_request_duration_seconds{gateway,route}      histogram (until the response ended)
 *   mtls_gateway_refusals_total{gateway,route,reason}         counter (401/403 by refusal reason, 404, 413)
 *   mtls_gateway_upstream_errors_total{gateway,route,reason}  counter (unreachable, timeout, reset)
 *   mtls_gateway_requests_in_flight{gateway}                  gauge
 *   mtls_gateway_bytes_total{gateway,direction}               counter (request / response bodies)
 *   mtls_gateway_connections_cut_total{gateway,reason}        counter (open connections closed because
 *                                                              their client certificate was revoked or expired)
 */
export interface GatewayMetrics {
  requests: Counter<"gateway" | "route" | "status">;
  duration: Histogram<"gateway" | "route">;
  refusals: Counter<"gateway" | "route" | "reason">;
  upstreamErrors: Counter<"gateway" | "route" | "reason">;
  inFlight: Gauge<"gateway">;
  bytes: Counter<"gateway" | "direction">;
  connectionsCut: Counter<"gateway" | "reason">;
}

const byRegistry = new WeakMap<Registry, GatewayMetrics>();

export function gatewayMetrics(registry: Registry): GatewayMetrics {
  const existing = byRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const metrics: GatewayMetrics = {
    requests: new Counter({
      name: "mtls_gateway_requests_total",
      help: "Requests answered by the gateway, by route and status",
      labelNames: ["gateway", "route", "status"],
      registers,
    }),
    duration: new Histogram({
      name: "mtls_gateway_request_duration_seconds",
      help: "Time from a request's arrival to the end of its response",
      labelNames: ["gateway", "route"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    refusals: new Counter({
      name: "mtls_gateway_refusals_total",
      help: "Requests refused by the gateway itself, by reason",
      labelNames: ["gateway", "route", "reason"],
      registers,
    }),
    upstreamErrors: new Counter({
      name: "mtls_gateway_upstream_errors_total",
      help: "Requests whose upstream could not be reached or failed, by reason",
      labelNames: ["gateway", "route", "reason"],
      registers,
    }),
    inFlight: new Gauge({
      name: "mtls_gateway_requests_in_flight",
      help: "Requests being handled right now",
      labelNames: ["gateway"],
      registers,
    }),
    bytes: new Counter({
      name: "mtls_gateway_bytes_total",
      help: "Body bytes carried; in = request bodies from clients, out = response bodies to them",
      labelNames: ["gateway", "direction"],
      registers,
    }),
    connectionsCut: new Counter({
      name: "mtls_gateway_connections_cut_total",
      help: "Open client connections closed because their certificate no longer passed (revoked, expired)",
      labelNames: ["gateway", "reason"],
      registers,
    }),
  };
  byRegistry.set(registry, metrics);
  return metrics;
}

/**
 * The WebSocket relay's metrics (src/gateway/relay.ts), registered once per registry:
 *   mtls_relay_sessions_total{gateway,relay,result}       counter (ended sessions, by how they ended)
 *   mtls_relay_sessions_active{gateway,relay}             gauge
 *   mtls_relay_bytes_total{gateway,relay,direction}       counter (to_target | from_target, WebSocket payload)
 *   mtls_relay_refused_total{gateway,relay,reason}        counter (refused before the upgrade; relay "-": unknown name)
 */
export interface RelayMetrics {
  sessions: Counter<"gateway" | "relay" | "result">;
  active: Gauge<"gateway" | "relay">;
  bytes: Counter<"gateway" | "relay" | "direction">;
  refused: Counter<"gateway" | "relay" | "reason">;
}

const relayByRegistry = new WeakMap<Registry, RelayMetrics>();

export function relayMetrics(registry: Registry): RelayMetrics {
  const existing = relayByRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const metrics: RelayMetrics = {
    sessions: new Counter({
      name: "mtls_relay_sessions_total",
      help: "Relay sessions that ended, by relay and how they ended",
      labelNames: ["gateway", "relay", "result"],
      registers,
    }),
    active: new Gauge({
      name: "mtls_relay_sessions_active",
      help: "Relay sessions open right now",
      labelNames: ["gateway", "relay"],
      registers,
    }),
    bytes: new Counter({
      name: "mtls_relay_bytes_total",
      help: "Bytes relayed: to_target = from the browser to the target, from_target = back",
      labelNames: ["gateway", "relay", "direction"],
      registers,
    }),
    refused: new Counter({
      name: "mtls_relay_refused_total",
      help: "Relay sessions refused before the WebSocket upgrade, by reason",
      labelNames: ["gateway", "relay", "reason"],
      registers,
    }),
  };
  relayByRegistry.set(registry, metrics);
  return metrics;
}
