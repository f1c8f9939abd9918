import { resolve } from "node:path";
import type { Command } from "commander";
import { type AgentCertificate, CertAgent } from "../agent/index.js";
import { type AgentConfig, loadConfig, type ReloadConfig } from "../config/index.js";
import { RELOAD_COMMAND_TIMEOUT_MS } from "../config/load.js";
import { MtlsError } from "../errors.js";
import {
  createLogger,
  defaultRegistry,
  type Logger,
  parseLogLevel,
  type StatusServer,
  startStatusServer,
} from "../observe/index.js";
import { note } from "./common.js";

interface AgentOpts {
  config?: string;
  name?: string;
  cert?: string;
  key?: string;
  caUrl?: string;
  caCert?: string;
  rekey?: boolean;
  reloadSignal?: string;
  pidFile?: string;
  reloadCommand?: string;
  status?: string;
  logLevel?: string;
}

export function registerAgent(program: Command): void {
  program
    .command("agent")
    .description(
      "keep certificates fresh: renew at 2/3 of their lifetime, write atomically, reload; -c mtls.yaml (agent section) or flags for one certificate",
    )
    .option("-c, --config <file>", "the config file with an agent section (docs/agent.md)")
    .option("--name <name>", "one certificate from flags: its name (default: the certificate file's name)")
    .option("--cert <file>", "one certificate from flags: the certificate file (leaf + intermediate)")
    .option("--key <file>", "its key")
    .option("--ca-url <url>", "the CA service, e.g. https://127.0.0.1:8443")
    .option("--ca-cert <file>", "the CA's root certificate")
    .option("--rekey", "a new key with every renewal")
    .option(
      "--reload-signal <signal>",
      "after a renewal, send this signal (HUP, USR1, ...) to the process in --pid-file",
    )
    .option("--pid-file <file>", "the process to signal")
    .option("--reload-command <command>", "after a renewal, run this command line (by /bin/sh -c)")
    .option("--status <address>", "serve /healthz, /readyz and /metrics here (e.g. 127.0.0.1:9100)")
    .option(
      "--log-level <level>",
      "fatal, error, warn, info, debug, trace or silent (default: the config's, else info)",
    )
    .action((opts: AgentOpts) => runAgent(opts));
}

interface Loaded {
  certificates: AgentCertificate[];
  status: string | undefined;
  logLevel: string;
}

function toCertificates(agent: AgentConfig): AgentCertificate[] {
  return agent.certificates.map((c) => ({
    name: c.name,
    files: { cert: c.cert, key: c.key },
    caUrl: c.caUrl,
    caCert: c.caCert,
    rekey: c.rekey,
    ...(c.reload ? { reload: c.reload } : {}),
  }));
}

/** The certificates from -c, or the one from flags. */
async function load(opts: AgentOpts): Promise<Loaded> {
  const flags = [opts.cert, opts.key, opts.caUrl, opts.caCert];
  if (opts.config !== undefined) {
    if (flags.some((f) => f !== undefined) || opts.reloadCommand || opts.reloadSignal || opts.pidFile) {
      throw new MtlsError("E_USAGE", "give either -c or the flags of one certificate, not both");
    }
    const config = await loadConfig(opts.config, { require: "agent" });
    const agent = config.agent as AgentConfig;
    return {
      certificates: toCertificates(agent),
      status: opts.status ?? agent.status,
      logLevel: opts.logLevel ?? config.logLevel,
    };
  }
  if (flags.some((f) => f === undefined)) {
    throw new MtlsError(
      "E_USAGE",
      "give -c mtls.yaml, or --cert, --key, --ca-url and --ca-cert for one certificate",
    );
  }
  const cert = resolve(opts.cert as string);
  const name = opts.name ?? (cert.split("/").pop() as string).replace(/\.(crt|pem)$/, "");
  return {
    certificates: [
      {
        name,
        files: { cert, key: resolve(opts.key as string) },
        caUrl: opts.caUrl as string,
        caCert: resolve(opts.caCert as string),
        rekey: opts.rekey ?? false,
        ...reloadFromFlags(opts),
      },
    ],
    status: opts.status,
    logLevel: opts.logLevel ?? "info",
  };
}

function reloadFromFlags(opts: AgentOpts): { reload?: ReloadConfig } {
  if (opts.reloadCommand !== undefined) {
    if (opts.reloadSignal !== undefined || opts.pidFile !== undefined) {
      throw new MtlsError("E_USAGE", "give either --reload-command or --reload-signal/--pid-file");
    }
    return {
      reload: {
        kind: "command",
        argv: [opts.reloadCommand],
        shell: true,
        timeoutMs: RELOAD_COMMAND_TIMEOUT_MS,
      },
    };
  }
  if (opts.reloadSignal === undefined && opts.pidFile === undefined) return {};
  if (opts.pidFile === undefined) throw new MtlsError("E_USAGE", "--reload-signal needs --pid-file");
  const sig = (opts.reloadSignal ?? "HUP").toUpperCase().replace(/^SIG/, "");
  if (!["HUP", "USR1", "USR2", "INT", "TERM"].includes(sig)) {
    throw new MtlsError(
      "E_USAGE",
      `invalid --reload-signal "${opts.reloadSignal}" (HUP, USR1, USR2, INT or TERM)`,
    );
  }
  return {
    reload: { kind: "signal", signal: `SIG${sig}` as NodeJS.Signals, pidFile: resolve(opts.pidFile) },
  };
}

/** "127.0.0.1:9100" or "[::1]:9100" → listen options. */
function statusListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) {
    throw new MtlsError("E_USAGE", `invalid status address "${text}" (host:port, e.g. 127.0.0.1:9100)`);
  }
  return { host: (m[1] ?? m[2]) as string, port };
}

/**
 * Runs the agent until SIGTERM/SIGINT. SIGHUP re-reads the config (-c) and every certificate file;
 * a config that does not load keeps the one in force.
 */
async function runAgent(opts: AgentOpts): Promise<void> {
  const first = await load(opts);
  const log = createLogger({ level: parseLogLevel(first.logLevel), name: "mtls-agent" });
  const registry = defaultRegistry();
  const statusAt = first.status ? statusListen(first.status) : undefined;
  const agent = new CertAgent(first.certificates, { log, registry });
  let status: StatusServer | undefined;
  if (statusAt) {
    status = await startStatusServer({ listen: statusAt, registry, ready: () => agent.ready() });
  }
  const addr = status?.address;
  note(
    `mtls: agent keeping ${first.certificates.length} certificate${first.certificates.length === 1 ? "" : "s"} fresh (${first.certificates.map((c) => c.name).join(", ")})${addr && typeof addr === "object" ? `; status on ${addr.address}:${addr.port}` : ""}`,
  );
  agent.start();
  try {
    await supervise(opts, agent, log);
  } finally {
    await status?.close();
  }
  // A CA request in flight may hold a socket for up to its timeout; the files are safe either way.
  setTimeout(() => process.exit(process.exitCode ?? 0), 2000).unref();
}

function supervise(opts: AgentOpts, agent: CertAgent, log: Logger): Promise<void> {
  let chain: Promise<void> = Promise.resolve();
  // Keeps the process alive while no certificate has a timer (all expired or unreadable).
  const keepAlive = setInterval(() => {}, 1 << 30);
  return new Promise<void>((resolvePromise) => {
    const onHup = () => {
      log.info("SIGHUP: re-reading the config and the certificate files");
      chain = chain
        .then(async () => {
          let next: Loaded;
          try {
            next = await load(opts);
          } catch (err) {
            log.warn({ err: (err as Error).message }, "new config refused; the previous one stays in force");
            for (const s of agent.statuses()) agent.fileChanged(s.name);
            return;
          }
          if (next.logLevel) log.level = parseLogLevel(next.logLevel);
          await agent.update(next.certificates);
          log.info({ certificates: next.certificates.map((c) => c.name) }, "config reloaded");
        })
        .catch((err: Error) => log.error({ err: err.message }, "reload failed"));
    };
    const onStop = (signal: NodeJS.Signals) => {
      log.info({ signal }, "shutting down");
      process.off("SIGHUP", onHup);
      process.off("SIGTERM", onStop);
      process.off("SIGINT", onStop);
      clearInterval(keepAlive);
      void chain
        .then(() => agent.stop())
        .then(() => {
          log.info("agent stopped");
          resolvePromise();
        });
    };
    process.on("SIGHUP", onHup);
    process.on("SIGTERM", onStop);
    process.on("SIGINT", onStop);
  });
}
