import cluster, { type Worker } from "node:cluster";
import type { ListenOptions } from "node:net";
import { availableParallelism } from "node:os";
import { AggregatorRegistry, Counter, Gauge, Registry } from "prom-client";
import { ERROR_CODES, type ErrorCode, isMtlsError, MtlsError } from "../errors.js";
import {
  defaultRegistry,
  type Logger,
  type Readiness,
  type StatusServer,
  startStatusServer,
} from "../observe/index.js";

/**
 * Several cores for one long-running command (`mtls gateway --workers N`): the process becomes a
 * node:cluster primary that forks N workers, each running the same service on the one listening
 * socket. The primary serves nothing itself but the status endpoint (metrics summed over the
 * workers), restarts a worker that dies (with backoff), passes SIGHUP on as a reload and
 * SIGTERM/SIGINT as a graceful stop (a second one: stop now), and fails once, with the worker's own
 * one-line error, when the workers cannot start.
 *
 * Signals reach the workers only through the primary, as IPC messages: a terminal's Ctrl-C goes to
 * the whole process group, and a worker that also counted it would take the primary's drain for a
 * second signal. A worker ignores SIGINT and SIGHUP for that reason; SIGTERM sent to a worker alone
 * drains that worker, and the primary starts a new one in its place.
 */

/** What a worker runs, once started. */
export interface WorkerService {
  /** For the start-up line: "listening on 127.0.0.1:8443: / → http://127.0.0.1:3000 (require)". */
  describe: string;
  ready(): Promise<Readiness>;
  /** Re-reads the TLS files (SIGHUP); resolves whether anything changed. */
  reload(): Promise<boolean>;
  /** Stops accepting and drains for up to `deadlineMs` (0: cut every connection now). */
  stop(deadlineMs: number): Promise<unknown>;
  /** Releases what is left (file watchers, revocation data) after stop(). */
  close(): void;
}

export interface WorkersOptions {
  /** How many workers (at least 2 for a primary; see parseWorkers). */
  workers: number;
  log: Logger;
  /** "gateway": names the service in log lines and errors. */
  what: string;
  /** Where the primary serves /healthz, /readyz and /metrics. */
  statusListen?: ListenOptions;
  /** How long requests in flight may finish on a graceful stop. */
  deadlineMs: number;
  /** Run in each worker: builds and starts the service (a rejection is the worker's start-up error). */
  start: (log: Logger) => Promise<WorkerService>;
  /** Run in the primary once every worker listens, with what the first one said. */
  onListening: (describe: string, status: StatusServer | undefined) => void;
  /** Tests: what the workers run (default: this process's script and arguments). */
  exec?: string;
  args?: string[];
  /** Tests: first restart delay (default 200 ms; doubles per quick failure, at most 30 s). */
  backoffMs?: number;
  /** A worker that dies within this of its start counts as a quick failure (default 10 s). */
  stableMs?: number;
}

/** Consecutive start-up failures of restarted workers after which the primary gives up. */
const START_FAILURE_LIMIT = 5;
const MAX_BACKOFF_MS = 30_000;
/** Gauges that must not be summed over workers: each worker reports the same certificate. */
const MIN_AGGREGATED = new Set(["mtls_certificate_expiry_seconds"]);

/** `--workers`: a whole number from 1, or `auto` (one per CPU). */
export function parseWorkers(text: string, flag = "--workers"): number {
  if (text === "auto") return availableParallelism();
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 1024) {
    throw new MtlsError("E_USAGE", `invalid ${flag} "${text}" (a number from 1, or auto)`);
  }
  return Number(text);
}

/** Whether this process is a worker forked by runWorkers (it then runs the service alone). */
export const isWorkerProcess = (): boolean => cluster.isWorker;

/** Primary → worker. */
type Command =
  | { mtls: "reload" }
  | { mtls: "stop"; deadlineMs: number }
  | { mtls: "ask"; id: number; what: "ready" | "metrics" };

/** Worker → primary. */
type Report =
  | { mtls: "listening"; describe: string }
  | { mtls: "failed"; code?: string; message: string }
  | { mtls: "answer"; id: number; value: unknown };

const isMessage = (m: unknown): m is { mtls: string } =>
  typeof m === "object" && m !== null && typeof (m as { mtls?: unknown }).mtls === "string";

/**
 * In the primary: forks the workers and supervises them until SIGTERM/SIGINT, then drains them.
 * In a worker: runs the service until the primary says stop. Rejects (in the primary) with the
 * workers' start-up error.
 */
export function runWorkers(opts: WorkersOptions): Promise<void> {
  return cluster.isWorker ? runWorker(opts) : supervise(opts);
}

// ---------------------------------------------------------------------------------------------
// the worker

async function runWorker(opts: WorkersOptions): Promise<void> {
  const id = cluster.worker?.id;
  const log = opts.log.child({ worker: id });
  const send = (r: Report) =>
    new Promise<void>((resolve) => {
      if (!process.connected) return resolve();
      process.send?.(r, undefined, {}, () => resolve());
    });
  const registry = defaultRegistry();
  let service: WorkerService | undefined;
  /** The stop asked for while the service was still starting, if any. */
  let stopAsked: number | undefined;
  let stopping: Promise<unknown> | undefined;
  let stopped: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    stopped = resolve;
  });
  const stop = (deadlineMs: number) => {
    if (!service) {
      stopAsked = Math.min(stopAsked ?? deadlineMs, deadlineMs);
      return;
    }
    if (stopping && deadlineMs > 0) return;
    log.info({ deadlineMs }, deadlineMs > 0 ? "worker draining" : "worker closing every connection now");
    const now = service
      .stop(deadlineMs)
      .catch((err: Error) => log.error({ err: err.message }, "stop failed"));
    stopping ??= now.then(stopped);
  };
  const onTerm = () => stop(opts.deadlineMs);
  const ignore = () => undefined;
  const onMessage = (m: unknown) => {
    if (!isMessage(m)) return;
    const c = m as Command;
    if (c.mtls === "stop") stop(c.deadlineMs);
    else if (c.mtls === "reload") {
      service?.reload().then(
        (changed) => log.info({ changed }, changed ? "TLS files reloaded" : "TLS files unchanged"),
        (err: Error) => log.warn({ err: err.message }, "reload failed"),
      );
    } else if (c.mtls === "ask") {
      const answer: Promise<unknown> =
        c.what === "metrics"
          ? registry.getMetricsAsJSON()
          : service
            ? service.ready().catch((err: Error) => ({ ok: false, detail: err.message }))
            : Promise.resolve({ ok: false, detail: "starting" });
      void answer.then(
        (value) => send({ mtls: "answer", id: c.id, value }),
        () => send({ mtls: "answer", id: c.id, value: undefined }),
      );
    }
  };
  process.on("message", onMessage);
  process.on("SIGTERM", onTerm);
  process.on("SIGINT", ignore);
  process.on("SIGHUP", ignore);
  try {
    service = await opts.start(log);
  } catch (err) {
    const message = isMtlsError(err) ? err.message : `unexpected error: ${(err as Error)?.message ?? err}`;
    await send({ mtls: "failed", ...(isMtlsError(err) ? { code: err.code } : {}), message });
    // The primary prints the error once for all workers.
    process.exit(1);
  }
  await send({ mtls: "listening", describe: service.describe });
  if (stopAsked !== undefined) stop(stopAsked);
  await done;
  service.close();
  process.off("message", onMessage);
  process.off("SIGTERM", onTerm);
  process.off("SIGINT", ignore);
  process.off("SIGHUP", ignore);
  // Lets the IPC channel go so the process ends; the primary sees a deliberate exit.
  if (process.connected) cluster.worker?.disconnect();
}

// ---------------------------------------------------------------------------------------------
// the primary

interface Slot {
  worker?: Worker;
  forkedAt: number;
  listening: boolean;
  /** Quick failures in a row (restart delay doubles with each). */
  failures: number;
  /** Restarted workers that failed before they listened, in a row. */
  startFailures: number;
  timer?: NodeJS.Timeout;
}

/** One registry's metrics as `getMetricsAsJSON()` gives them (and IPC carries them). */
type MetricsJson = { name: string; aggregator?: string }[];

/** Sums the workers' metrics (prom-client's aggregation), with the primary's own. */
class WorkerMetrics extends Registry {
  constructor(
    private readonly gather: () => Promise<MetricsJson[]>,
    private readonly own: Registry,
  ) {
    super();
  }

  override async metrics(): Promise<string> {
    const lists = await this.gather();
    for (const list of lists) for (const m of list) if (MIN_AGGREGATED.has(m.name)) m.aggregator = "min";
    lists.push(await this.own.getMetricsAsJSON());
    return AggregatorRegistry.aggregate(lists).metrics();
  }
}

function primaryMetrics(registry: Registry) {
  return {
    running: new Gauge({
      name: "mtls_workers_listening",
      help: "Worker processes listening (mtls gateway --workers)",
      registers: [registry],
    }),
    restarts: new Counter({
      name: "mtls_worker_restarts_total",
      help: "Worker processes started again after one died",
      registers: [registry],
    }),
  };
}

async function supervise(opts: WorkersOptions): Promise<void> {
  const { log } = opts;
  const backoffMs = opts.backoffMs ?? 200;
  const stableMs = opts.stableMs ?? 10_000;
  // Round-robin: the primary accepts each connection and hands it to the next worker. With
  // SCHED_NONE (each worker accepting on the shared socket) the kernel woke one worker for all 8
  // keep-alive connections in one of four runs here, leaving the other core idle for as long as
  // they lasted; handing a connection over costs the primary far less than the worker's TLS
  // handshake. NODE_CLUSTER_SCHED_POLICY=none|rr still decides when set (docs/gateway.md).
  if (!process.env.NODE_CLUSTER_SCHED_POLICY) cluster.schedulingPolicy = cluster.SCHED_RR;
  cluster.setupPrimary({
    ...(opts.exec ? { exec: opts.exec } : {}),
    ...(opts.args ? { args: opts.args } : {}),
  });
  const registry = defaultRegistry();
  const m = primaryMetrics(registry);
  const slots: Slot[] = Array.from({ length: opts.workers }, () => ({
    forkedAt: 0,
    listening: false,
    failures: 0,
    startFailures: 0,
  }));
  const answers = new Map<number, (value: unknown) => void>();
  let nextAsk = 0;
  let stopping = false;
  let startedAll = false;
  let fatal: MtlsError | undefined;
  let onFatal: (() => void) | undefined;
  let onAllExited: (() => void) | undefined;
  let onAllListening: ((describe: string) => void) | undefined;
  let firstDescribe = "";

  const countListening = () => slots.filter((s) => s.listening).length;
  const live = () => slots.flatMap((s) => (s.worker && !s.worker.isDead() ? [s.worker] : []));
  /** Live workers whose IPC channel is still open (a stopping worker lets it go before it exits). */
  const reachable = () => live().filter((w) => w.isConnected());

  const ask = (worker: Worker, what: "ready" | "metrics", ms = 3000): Promise<unknown> =>
    new Promise((resolve) => {
      const id = nextAsk++;
      const timer = setTimeout(() => {
        answers.delete(id);
        resolve(undefined);
      }, ms);
      answers.set(id, (value) => {
        clearTimeout(timer);
        answers.delete(id);
        resolve(value);
      });
      try {
        worker.send({ mtls: "ask", id, what } satisfies Command);
      } catch {
        answers.get(id)?.(undefined);
      }
    });

  const failWith = (err: MtlsError) => {
    fatal ??= err;
    onFatal?.();
  };

  const fork = (slot: Slot) => {
    slot.timer = undefined;
    if (stopping) return;
    const worker = cluster.fork();
    slot.worker = worker;
    slot.forkedAt = Date.now();
    slot.listening = false;
    let failure: { code?: string; message: string } | undefined;
    // A message to a worker whose channel just closed: nothing to do, it is exiting.
    worker.on("error", (err: Error) =>
      log.debug({ worker: worker.id, err: err.message }, "worker IPC error"),
    );
    worker.on("message", (msg: unknown) => {
      if (!isMessage(msg)) return;
      const r = msg as Report;
      if (r.mtls === "listening") {
        slot.listening = true;
        slot.startFailures = 0;
        m.running.set(countListening());
        firstDescribe ||= r.describe;
        log.info({ worker: worker.id, pid: worker.process.pid }, "worker listening");
        if (countListening() === slots.length) onAllListening?.(firstDescribe);
      } else if (r.mtls === "failed") {
        failure = { ...(r.code ? { code: r.code } : {}), message: r.message };
      } else if (r.mtls === "answer") answers.get(r.id)?.(r.value);
    });
    worker.on("exit", (code, signal) => {
      const wasListening = slot.listening;
      slot.listening = false;
      slot.worker = undefined;
      m.running.set(countListening());
      if (stopping) {
        if (live().length === 0) onAllExited?.();
        return;
      }
      const why = failure?.message ?? (signal ? `killed by ${signal}` : `exit code ${code}`);
      const error = () =>
        new MtlsError(
          failure?.code && failure.code in ERROR_CODES ? (failure.code as ErrorCode) : "E_IO",
          failure?.message ?? `${opts.what} worker exited (${why}) before it listened`,
        );
      if (!startedAll) {
        // Bad flags or files: every worker would fail the same way. Say it once and stop.
        failWith(error());
        return;
      }
      if (!wasListening) slot.startFailures++;
      if (slot.startFailures >= START_FAILURE_LIMIT) {
        log.error({ worker: worker.id, err: why }, "workers keep failing to start; giving up");
        const e = error();
        failWith(
          new MtlsError(
            e.code,
            `${opts.what} workers failed to start ${START_FAILURE_LIMIT} times in a row: ${e.message}`,
          ),
        );
        return;
      }
      const quick = !wasListening || Date.now() - slot.forkedAt < stableMs;
      slot.failures = quick ? slot.failures + 1 : 0;
      const delay = Math.min(MAX_BACKOFF_MS, backoffMs * 2 ** Math.max(0, slot.failures - 1));
      log.warn(
        {
          worker: worker.id,
          pid: worker.process.pid,
          code,
          signal,
          err: failure?.message,
          restartInMs: delay,
        },
        "worker died; starting another",
      );
      m.restarts.inc();
      slot.timer = setTimeout(() => fork(slot), delay);
    });
  };

  const stopAll = (deadlineMs: number): Promise<void> => {
    stopping = true;
    for (const s of slots) {
      clearTimeout(s.timer);
      s.timer = undefined;
    }
    const workers = live();
    if (workers.length === 0) return Promise.resolve();
    const exited = new Promise<void>((resolve) => {
      onAllExited = resolve;
    });
    for (const w of workers) {
      try {
        w.send({ mtls: "stop", deadlineMs } satisfies Command);
      } catch {
        w.kill("SIGKILL");
      }
    }
    // A worker that does not finish within the deadline (plus time to close) is killed.
    const killer = setTimeout(() => {
      for (const w of live()) w.process.kill("SIGKILL");
    }, deadlineMs + 5000);
    return exited.finally(() => clearTimeout(killer));
  };

  let status: StatusServer | undefined;
  const signals: NodeJS.Signals[] = ["SIGTERM", "SIGINT", "SIGHUP"];
  const handlers = new Map<NodeJS.Signals, () => void>();
  try {
    if (opts.statusListen) {
      status = await startStatusServer({
        listen: opts.statusListen,
        registry: new WorkerMetrics(
          async () =>
            (await Promise.all(reachable().map((w) => ask(w, "metrics")))).filter((x): x is MetricsJson =>
              Array.isArray(x),
            ),
          registry,
        ),
        ready: async () => {
          const workers = slots
            .filter((s) => s.listening && s.worker?.isConnected())
            .map((s) => s.worker as Worker);
          const said = (await Promise.all(workers.map((w) => ask(w, "ready")))) as (Readiness | undefined)[];
          const ok = said.filter((r) => r?.ok);
          const first = ok[0] ?? said.find((r) => r) ?? { ok: false, detail: "no worker listening" };
          return {
            ok: ok.length > 0 && !stopping,
            detail: `${ok.length} of ${slots.length} workers ready${stopping ? ", shutting down" : ""}; ${first.detail}`,
          };
        },
      });
    }
    // Every worker up, or the first start-up failure.
    await new Promise<void>((resolve, reject) => {
      onAllListening = () => resolve();
      onFatal = () => reject(fatal);
      for (const slot of slots) fork(slot);
    });
    startedAll = true;
    onAllListening = undefined;
    opts.onListening(firstDescribe, status);
    log.info({ workers: slots.length, policy: schedulingPolicyName() }, "workers listening");

    await new Promise<void>((resolve, reject) => {
      let count = 0;
      const onStop = (signal: NodeJS.Signals) => {
        count++;
        if (count > 1) {
          log.warn({ signal }, "second signal: every worker closes every connection now");
          for (const w of reachable()) w.send({ mtls: "stop", deadlineMs: 0 } satisfies Command);
          return;
        }
        log.info({ signal, deadlineMs: opts.deadlineMs }, "shutting down the workers");
        void stopAll(opts.deadlineMs).then(resolve);
      };
      handlers.set("SIGTERM", () => onStop("SIGTERM"));
      handlers.set("SIGINT", () => onStop("SIGINT"));
      handlers.set("SIGHUP", () => {
        log.info("SIGHUP: the workers reload the TLS files");
        for (const w of reachable()) w.send({ mtls: "reload" } satisfies Command);
      });
      for (const s of signals) process.on(s, handlers.get(s) as () => void);
      onFatal = () => {
        void stopAll(opts.deadlineMs).then(() => reject(fatal));
      };
    });
    log.info("every worker stopped");
  } catch (err) {
    await stopAll(0);
    throw err;
  } finally {
    for (const [s, h] of handlers) process.off(s, h);
    await status?.close();
  }
}

function schedulingPolicyName(): string {
  return cluster.schedulingPolicy === cluster.SCHED_NONE ? "none" : "rr";
}
