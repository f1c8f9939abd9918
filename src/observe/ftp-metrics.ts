import { Counter, type Registry } from "prom-client";

/** What FTP tunnels (`--protocol ftp`) count on top of the tunnel metrics. */
export interface FtpMetrics {
  /** Data connections, by outcome: "allowed", or why one was refused (unknown_token, wrong_certificate, ...). */
  dataConnections: Counter<"tunnel" | "result">;
  /** Passive-mode replies of the FTP server: "rewritten", "foreign_host", "privileged_port", "unsolicited", "unreadable". */
  passiveReplies: Counter<"tunnel" | "result">;
  /** Commands answered by the tunnel instead of the FTP server (PORT, EPRT, LPRT, LPSV), by command. */
  commandsRefused: Counter<"tunnel" | "command">;
}

const byRegistry = new WeakMap<Registry, FtpMetrics>();

/**
 * The FTP metrics, registered once per registry:
 *   mtls_tunnel_ftp_data_connections_total{tunnel,result}   counter
 *   mtls_tunnel_ftp_passive_replies_total{tunnel,result}     counter (server end)
 *   mtls_tunnel_ftp_commands_refused_total{tunnel,command}   counter (server end)
 */
export function ftpMetrics(registry: Registry): FtpMetrics {
  const existing = byRegistry.get(registry);
  if (existing) return existing;
  const registers = [registry];
  const metrics: FtpMetrics = {
    dataConnections: new Counter({
      name: "mtls_tunnel_ftp_data_connections_total",
      help: "FTP data connections carried over mTLS, by result (allowed, or the refusal reason)",
      labelNames: ["tunnel", "result"],
      registers,
    }),
    passiveReplies: new Counter({
      name: "mtls_tunnel_ftp_passive_replies_total",
      help: "Passive-mode replies (227/229) of the FTP server, by what the tunnel did with them",
      labelNames: ["tunnel", "result"],
      registers,
    }),
    commandsRefused: new Counter({
      name: "mtls_tunnel_ftp_commands_refused_total",
      help: "FTP commands the tunnel answered itself instead of forwarding (active mode), by command",
      labelNames: ["tunnel", "command"],
      registers,
    }),
  };
  byRegistry.set(registry, metrics);
  return metrics;
}
