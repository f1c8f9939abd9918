import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/**
 * The CA service's metrics (served on `--status ADDR` at /metrics):
 *   mtls_ca_http_requests_total{listener,route,status}   counter
 *   mtls_ca_http_request_seconds{listener,route}          histogram
 *   mtls_ca_rate_limited_total{bucket}                    counter
 *   mtls_ca_ocsp_responses_total{status}                  counter (good, revoked, unknown, malformedRequest, …)
 *   mtls_ca_certificates_issued_total{via}                counter (enroll, renew, console)
 *   mtls_ca_server_certificate_expiry_seconds             gauge (computed at scrape)
 *   mtls_ca_revocation_streams                            gauge (open /v1/revocations/stream)
 *   mtls_ca_revocation_events_sent_total{phase}           counter (snapshot, catchup, live)
 *   mtls_ca_revocation_notify_up                          gauge (1: PostgreSQL LISTEN up; 0 down or SQLite)
 */
export interface ServerMetrics {
  requests: Counter<"listener" | "route" | "status">;
  duration: Histogram<"listener" | "route">;
  rateLimited: Counter<"bucket">;
  ocsp: Counter<"status">;
  issued: Counter<"via">;
  /** Reports the API certificate's remaining life at every scrape. */
  watchServerCertificate(notAfter: () => Date | undefined): void;
  revocationStreams: Gauge;
  revocationEvents: Counter<"phase">;
  /** Reports at every scrape whether the revocation feed's LISTEN is up (null: no LISTEN, SQLite). */
  watchRevocationFeed(listening: () => boolean | null): void;
}

const byRegistry = new WeakMap<Registry, ServerMetrics>();

export function serverMetrics(registry: Registry, clock: () => Date = () => new Date()): ServerMetrics {
  const existing = byRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  let serverNotAfter: () => Date | undefined = () => undefined;
  let feedListening: () => boolean | null = () => null;
  const metrics: ServerMetrics = {
    requests: new Counter({
      name: "mtls_ca_http_requests_total",
      help: "Requests answered by the CA service, by listener, route and status",
      labelNames: ["listener", "route", "status"],
      registers,
    }),
    duration: new Histogram({
      name: "mtls_ca_http_request_seconds",
      help: "Time to answer a request, by listener and route",
      labelNames: ["listener", "route"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    rateLimited: new Counter({
      name: "mtls_ca_rate_limited_total",
      help: "Requests refused with 429, by bucket",
      labelNames: ["bucket"],
      registers,
    }),
    ocsp: new Counter({
      name: "mtls_ca_ocsp_responses_total",
      help: "OCSP responses sent, by certificate or response status",
      labelNames: ["status"],
      registers,
    }),
    issued: new Counter({
      name: "mtls_ca_certificates_issued_total",
      help: "Certificates issued through the API, by way (enroll, renew, console)",
      labelNames: ["via"],
      registers,
    }),
    watchServerCertificate(notAfter) {
      serverNotAfter = notAfter;
    },
    revocationStreams: new Gauge({
      name: "mtls_ca_revocation_streams",
      help: "Open revocation streams (GET /v1/revocations/stream)",
      registers,
    }),
    revocationEvents: new Counter({
      name: "mtls_ca_revocation_events_sent_total",
      help: "Revocation events sent on revocation streams, by phase (snapshot, catchup, live)",
      labelNames: ["phase"],
      registers,
    }),
    watchRevocationFeed(listening) {
      feedListening = listening;
    },
  };
  new Gauge({
    name: "mtls_ca_revocation_notify_up",
    help: "1 while the revocation feed's PostgreSQL LISTEN connection is up (0 when down, and on SQLite)",
    registers,
    collect() {
      this.set(feedListening() === true ? 1 : 0);
    },
  });
  new Gauge({
    name: "mtls_ca_server_certificate_expiry_seconds",
    help: "Seconds until the CA service's own HTTPS certificate expires",
    registers,
    collect() {
      const at = serverNotAfter();
      if (at) this.set(Math.round((at.getTime() - clock().getTime()) / 1000));
    },
  });
  byRegistry.set(registry, metrics);
  return metrics;
}
