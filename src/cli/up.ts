import type { Command } from "commander";
import { loadConfig, type MtlsConfig, watchFile } from "../config/index.js";
import { isMtlsError, MtlsError } from "../errors.js";
import { buildGateway, compileRoutes, GatewayGroup, type GatewaySpec } from "../gateway/index.js";
import {
  createLogger,
  createRegistry,
  defaultRegistry,
  type Logger,
  type StatusServer,
  silentLogger,
  startStatusServer,
} from "../observe/index.js";
import {
  type Address,
  buildTunnel,
  describeListening,
  describeTargets,
  formatAddress,
  listenOptions,
  statusAddressFromConfig,
  TunnelGroup,
  type TunnelSpec,
  tunnelSpecsFromConfig,
} from "../tunnel/index.js";
import { note, out } from "./common.js";
import { describeGateway, gatewaySpecsFromConfig } from "./gateway.js";
import { formatStatus } from "./run.js";
import { exitSoon } from "./tunnel.js";

interface UpOpts {
  config: string;
  check?: boolean;
}

export function registerUp(program: Command): void {
  program
    .command("up")
    .description(
      "run every tunnel of a config file in one process; reloads on SIGHUP and when the file changes (docs/config.md)",
    )
    .option("-c, --config <file>", "the config file (YAML)", "mtls.yaml")
    .option(
      "--check",
      "check the file and load the certificates it names, then exit (0: good, 1: the first problem)",
    )
    .action((opts: UpOpts) => (opts.check ? checkConfig(opts.config) : runUp(opts.config)));
}

interface Loaded {
  config: MtlsConfig;
  specs: TunnelSpec[];
  gateways: GatewaySpec[];
  status: Address | undefined;
}

/** The file, checked: structure, addresses, rules (every problem one line naming its place). */
async function load(file: string): Promise<Loaded> {
  const config = await loadConfig(file);
  const specs = tunnelSpecsFromConfig(config);
  const gateways = gatewaySpecsFromConfig(config);
  for (const [i, g] of gateways.entries()) {
    try {
      compileRoutes(g.routes, { unsafeUpstream: g.unsafeUpstream ?? false });
    } catch (err) {
      throw inFile(config.source, new MtlsError("E_BAD_INPUT", `gateways[${i}]: ${(err as Error).message}`));
    }
  }
  return { config, specs, gateways, status: statusAddressFromConfig(config) };
}

/** Names the file in front of an error about one of its tunnels ("mtls.yaml: tunnel vnc: …"). */
function inFile(source: string, err: unknown): MtlsError {
  const e = err as Error;
  if (isMtlsError(err) && err.message.startsWith(`${source}: `)) return err;
  return new MtlsError(
    isMtlsError(err) ? err.code : "E_BAD_INPUT",
    `${source}: ${e?.message ?? String(err)}`,
    {
      cause: err,
    },
  );
}

/** --check: everything `up` would do short of listening. */
async function checkConfig(file: string): Promise<void> {
  const { config, specs, gateways } = await load(file);
  const registry = createRegistry();
  for (const spec of specs) {
    try {
      const built = await buildTunnel(spec, { logger: silentLogger(), registry });
      built.close();
    } catch (err) {
      throw inFile(
        config.source,
        new MtlsError(
          isMtlsError(err) ? err.code : "E_BAD_INPUT",
          `tunnel ${spec.name}: ${(err as Error).message}`,
        ),
      );
    }
  }
  for (const spec of gateways) {
    try {
      (await buildGateway(spec, { logger: silentLogger(), registry })).close();
    } catch (err) {
      throw inFile(
        config.source,
        new MtlsError(
          isMtlsError(err) ? err.code : "E_BAD_INPUT",
          `gateway ${spec.name}: ${(err as Error).message}`,
        ),
      );
    }
  }
  const parts = [
    ...(specs.length || !gateways.length
      ? [`${specs.length} tunnel${specs.length === 1 ? "" : "s"}: ${specs.map((s) => s.name).join(", ")}`]
      : []),
    ...(gateways.length
      ? [
          `${gateways.length} gateway${gateways.length === 1 ? "" : "s"}: ${gateways.map((g) => g.name).join(", ")}`,
        ]
      : []),
  ];
  out(`${config.source}: ok (${parts.join("; ")})`);
}

/**
 * Runs the tunnels of the file until SIGTERM/SIGINT. A change of the file (or SIGHUP, which also
 * re-reads every certificate file) reloads it: a config that does not pass keeps the one in force
 * and the log says why; one that passes is put in force without dropping open connections.
 */
async function runUp(file: string): Promise<void> {
  const first = await load(file);
  const source = first.config.source;
  const log = createLogger({ level: first.config.logLevel, name: "mtls-up" });
  const registry = defaultRegistry();
  const group = new TunnelGroup({
    logger: log,
    registry,
    onListening: (t, bound) =>
      note(`mtls: tunnel ${describeListening(t, bound)} → ${describeTargets(t.spec)}`),
  });
  const gateways = new GatewayGroup({ logger: log, registry }, (g) =>
    note(`mtls: gateway ${g.gateway.name} ${describeGateway(g)}`),
  );
  let status: StatusServer | undefined;
  let statusAt: string | undefined;

  const startStatus = async (at: Address | undefined): Promise<void> => {
    const key = at ? formatAddress(at) : undefined;
    if (key === statusAt) return;
    const next = at
      ? await startStatusServer({
          listen: listenOptions(at),
          registry,
          ready: async () => {
            const [t, g] = await Promise.all([group.ready(), gateways.ready()]);
            if (gateways.size === 0) return t;
            if (group.tunnels.length === 0) return g;
            return { ok: t.ok && g.ok, detail: `${t.detail}\n${g.detail}` };
          },
        })
      : undefined;
    await status?.close();
    status = next;
    statusAt = key;
    if (next) note(`mtls: status on ${formatStatus(next)}`);
  };

  try {
    let report: Awaited<ReturnType<TunnelGroup["apply"]>>;
    try {
      report = await group.apply(first.specs);
    } catch (err) {
      throw inFile(source, err);
    }
    const failed = report.failed[0];
    if (failed) {
      await group.stop(0);
      throw inFile(
        source,
        new MtlsError(
          isMtlsError(failed.error) ? failed.error.code : "E_IO",
          `tunnel ${failed.name}: ${failed.error.message}`,
        ),
      );
    }
    const started = await gateways.apply(first.gateways);
    const failedGateway = started.failed[0];
    if (failedGateway) {
      await Promise.all([group.stop(0), gateways.stop(0)]);
      throw inFile(
        source,
        new MtlsError(
          isMtlsError(failedGateway.error) ? failedGateway.error.code : "E_IO",
          `gateway ${failedGateway.name}: ${failedGateway.error.message}`,
        ),
      );
    }
    try {
      await startStatus(first.status);
    } catch (err) {
      await Promise.all([group.stop(0), gateways.stop(0)]);
      throw inFile(source, new MtlsError("E_IO", (err as Error).message.replace("--status", "status")));
    }
    const gatewaysText = gateways.size ? `, ${gateways.size} gateway${gateways.size === 1 ? "" : "s"}` : "";
    note(
      `mtls: up: ${group.tunnels.length} tunnel${group.tunnels.length === 1 ? "" : "s"}${gatewaysText} from ${source}`,
    );
    await supervise(file, first, group, gateways, log, startStatus);
  } finally {
    await status?.close();
  }
  exitSoon();
}

/** Reloads on file change and SIGHUP; resolves after a graceful stop on SIGTERM/SIGINT. */
function supervise(
  file: string,
  first: Loaded,
  group: TunnelGroup,
  gateways: GatewayGroup,
  log: Logger,
  startStatus: (at: Address | undefined) => Promise<void>,
): Promise<void> {
  let applied = first.config.digest;
  let chain: Promise<void> = Promise.resolve();
  const reload = (why: "SIGHUP" | "file changed") => {
    chain = chain
      .then(() => reloadNow(why))
      .catch((err: Error) => log.error({ err: err.message }, "reload failed"));
  };
  const refuse = (err: unknown) =>
    log.warn(
      { err: inFile(first.config.source, err).message, file },
      "new config refused; the previous one stays in force",
    );

  const reloadNow = async (why: "SIGHUP" | "file changed") => {
    // SIGHUP re-reads every certificate file too, whatever becomes of the config.
    const rereadFiles = async () => {
      if (why !== "SIGHUP") return;
      const changed = (await Promise.all([group.reloadFiles(), gateways.reloadFiles()])).some(Boolean);
      log.info({ changed }, changed ? "TLS files reloaded" : "TLS files unchanged");
    };
    let next: Loaded;
    try {
      next = await load(file);
    } catch (err) {
      refuse(err);
      return rereadFiles();
    }
    if (why === "file changed" && next.config.digest === applied) return;
    log.info({ why }, "reloading the config");
    let report: Awaited<ReturnType<TunnelGroup["apply"]>>;
    try {
      report = await group.apply(next.specs);
    } catch (err) {
      refuse(err);
      return rereadFiles();
    }
    const gatewayReport = await gateways.apply(next.gateways);
    const gatewaysChanged =
      gatewayReport.started.length +
      gatewayReport.restarted.length +
      gatewayReport.updated.length +
      gatewayReport.stopped.length;
    if (gatewaysChanged > 0) {
      log.info(
        {
          started: gatewayReport.started,
          restarted: gatewayReport.restarted,
          // Changed in place: new requests see the new routes; listener and connections stay.
          updated: gatewayReport.updated,
          stopped: gatewayReport.stopped,
          failed: gatewayReport.failed.map((f) => `${f.name}: ${f.error.message}`),
        },
        gatewayReport.failed.length ? "gateways reloaded, but some could not start" : "gateways reloaded",
      );
    } else if (gatewayReport.failed.length) {
      log.error(
        { failed: gatewayReport.failed.map((f) => `${f.name}: ${f.error.message}`) },
        "some gateways could not start",
      );
    }
    applied = next.config.digest;
    log.level = next.config.logLevel;
    try {
      await startStatus(next.status);
    } catch (err) {
      log.error(
        { err: (err as Error).message },
        "the new status address could not be used; the old one stays",
      );
    }
    await rereadFiles();
    log.info(
      {
        started: report.started,
        updated: report.updated,
        unchanged: report.unchanged,
        restarted: report.restarted,
        stopped: report.stopped,
        failed: report.failed.map((f) => `${f.name}: ${f.error.message}`),
      },
      report.failed.length ? "config reloaded, but some tunnels could not start" : "config reloaded",
    );
  };

  const watcher = watchFile(file, () => reload("file changed"), {
    onError: (err) =>
      log.warn({ err: err.message, file }, "cannot watch the config file; reload with SIGHUP"),
  });

  return new Promise<void>((resolve) => {
    let signals = 0;
    const onHup = () => {
      log.info("SIGHUP: reloading the config and the TLS files");
      reload("SIGHUP");
    };
    const onStop = (signal: NodeJS.Signals) => {
      signals++;
      if (signals > 1) {
        log.warn({ signal }, "second signal: closing every connection now");
        void group.stop(0);
        void gateways.stop(0);
        return;
      }
      log.info({ signal }, "shutting down");
      watcher.close();
      void chain
        .then(() => Promise.all([group.stop(), gateways.stop()]))
        .then(
          () => {
            log.info("every tunnel stopped");
            process.off("SIGHUP", onHup);
            process.off("SIGTERM", onStop);
            process.off("SIGINT", onStop);
            resolve();
          },
          (err: Error) => {
            log.error({ err: err.message }, "stop failed");
            resolve();
          },
        );
    };
    process.on("SIGHUP", onHup);
    process.on("SIGTERM", onStop);
    process.on("SIGINT", onStop);
  });
}
