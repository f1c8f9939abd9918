import type { Registry } from "prom-client";
import type { ReloadConfig } from "../config/load.js";
import { type FileWatch, watchFile } from "../config/watch.js";
import { isMtlsError } from "../errors.js";
import type { Logger } from "../observe/logger.js";
import { silentLogger } from "../observe/logger.js";
import { defaultRegistry } from "../observe/metrics.js";
import type { Readiness } from "../observe/status-server.js";
import { CaHttpError, isRetryable } from "./client.js";
import { type CertFiles, readCurrent } from "./files.js";
import { type AgentMetrics, agentMetrics } from "./metrics.js";
import { type ReloadContext, runReload } from "./reload.js";
import {
  expiredError,
  type RenewOptions,
  type RenewResult,
  type RenewTarget,
  renewCertificate,
} from "./renew.js";
import { isExpired, renewalTime, retryDelay, type Validity } from "./schedule.js";

/** One certificate the agent keeps fresh. */
export interface AgentCertificate {
  name: string;
  files: CertFiles;
  caUrl: string;
  caCert: string;
  /** A new key with every renewal. */
  rekey?: boolean;
  reload?: ReloadConfig;
}

/** setTimeout/clearTimeout, injectable so tests drive time by hand. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface AgentDeps {
  clock?: () => Date;
  timers?: Timers;
  random?: () => number;
  log?: Logger;
  registry?: Registry;
  /** The renewal itself (default renewCertificate), replaceable in tests. */
  renew?: (target: RenewTarget, opts: RenewOptions) => Promise<RenewResult>;
  /** The reload action (default runReload). */
  reload?: (action: ReloadConfig, ctx: ReloadContext) => Promise<string>;
  /** Watches a file for changes by others (default config/watch.ts; tests pass a no-op). */
  watch?: (file: string, onChange: () => void, onError: (err: Error) => void) => FileWatch;
  /** Deadline of one CA request (default 30 s, less when the certificate expires sooner). */
  requestTimeoutMs?: number;
  /** Longest single timer: long waits are re-armed, so a clock jump (suspend) is noticed. */
  maxTimerMs?: number;
}

export type CertState =
  | "starting"
  | "waiting"
  | "renewing"
  | "retrying"
  | "expired"
  | "unreadable"
  | "stopped";

/** What the agent knows about one certificate (for logs, /readyz and tests). */
export interface CertStatus {
  name: string;
  state: CertState;
  serial?: string;
  notBefore?: Date;
  notAfter?: Date;
  /** When the next renewal attempt (or re-read) happens. */
  nextAt?: Date;
  /** Failed attempts since the last success. */
  failures: number;
  lastRenewal?: Date;
  lastError?: string;
}

const DEFAULT_MAX_TIMER_MS = 60 * 60_000;
const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/** Keeps one certificate fresh: reads it, schedules its renewal, retries, reloads. */
class CertWorker {
  readonly status: CertStatus;
  private timer: unknown;
  private watches: FileWatch[] = [];
  /** A watch could not be set up (its folder missing at start): tried again once the files read. */
  private watchFailed = false;
  private known: { fingerprint: string; validity: Validity } | undefined;
  private running: Promise<void> | undefined;
  private changedWhileBusy = false;
  private stopped = false;
  private readonly untrack: () => void;

  constructor(
    readonly spec: AgentCertificate,
    private readonly d: Required<Omit<AgentDeps, "registry">> & { metrics: AgentMetrics },
  ) {
    this.status = { name: spec.name, state: "starting", failures: 0 };
    this.untrack = d.metrics.watchCertificate(spec.name, () => this.status.notAfter);
  }

  private get log(): Logger {
    return this.d.log;
  }

  start(): void {
    this.startWatches();
    this.load("start");
  }

  private startWatches(): void {
    for (const w of this.watches) w.close();
    this.watchFailed = false;
    this.watches = [...new Set([this.spec.files.cert, this.spec.files.key])].map((f) =>
      this.d.watch(
        f,
        () => this.onFileChange(),
        (err) => {
          this.watchFailed = true;
          this.log.warn(
            { certificate: this.spec.name, file: f, err: err.message },
            "cannot watch the file; changes by others are noticed at the next renewal or SIGHUP",
          );
        },
      ),
    );
  }

  /** Stops timers and watches; resolves once a renewal in flight has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.status.state = "stopped";
    this.clearTimer();
    for (const w of this.watches) w.close();
    this.watches = [];
    this.untrack();
    await this.running;
  }

  /** Someone (or we) changed a file: re-read it and, when it holds another certificate, re-plan. */
  onFileChange(): void {
    if (this.stopped) return;
    if (this.running) {
      this.changedWhileBusy = true;
      return;
    }
    this.load("change");
  }

  /** Reads the files and plans the next step. */
  load(why: "start" | "change" | "reread"): void {
    if (this.stopped) return;
    let current: ReturnType<typeof readCurrent>;
    try {
      current = readCurrent(this.spec.files);
    } catch (err) {
      const message = (err as Error).message;
      if (why === "change" && this.known) {
        // A file replaced in two steps (certificate, then key) reads as a mismatch in between;
        // the second change brings the pair. Keep the plan made for the certificate we know.
        this.log.warn(
          { certificate: this.spec.name, err: message },
          "certificate files changed but cannot be read yet",
        );
        return;
      }
      this.status.state = "unreadable";
      this.status.lastError = message;
      this.status.failures++;
      const delay = Math.min(5 * 60_000, 1_000 * 2 ** Math.min(this.status.failures, 9));
      this.log.error(
        { certificate: this.spec.name, err: message, retryInMs: delay },
        "cannot read the certificate files",
      );
      this.arm(this.d.clock().getTime() + delay, () => this.load("reread"));
      return;
    }
    if (this.watchFailed && !this.stopped) this.startWatches();
    const changed = this.known?.fingerprint !== current.fingerprint;
    if (!changed && why === "change" && this.status.state !== "unreadable") return;
    if (changed && why === "change") {
      this.log.info(
        { certificate: this.spec.name, serial: current.serial, notAfter: current.notAfter.toISOString() },
        "certificate file changed: rescheduling",
      );
      this.status.failures = 0;
    }
    this.known = { fingerprint: current.fingerprint, validity: current };
    this.status.serial = current.serial;
    this.status.notBefore = current.notBefore;
    this.status.notAfter = current.notAfter;
    delete this.status.lastError;
    if (why === "reread") this.status.failures = 0;
    this.plan();
  }

  /** Schedules the renewal of the known certificate at 2/3 of its lifetime ± jitter. */
  private plan(): void {
    const v = this.known?.validity;
    if (!v || this.stopped) return;
    const now = this.d.clock();
    if (isExpired(v, now)) {
      this.markExpired(v);
      return;
    }
    const at = renewalTime(v, now, this.d.random);
    this.status.state = "waiting";
    this.log.info(
      {
        certificate: this.spec.name,
        serial: this.status.serial,
        notAfter: v.notAfter.toISOString(),
        renewAt: new Date(at).toISOString(),
      },
      "renewal scheduled",
    );
    this.arm(at, () => this.renewNow());
  }

  private markExpired(v: Validity): void {
    this.clearTimer();
    this.status.state = "expired";
    delete this.status.nextAt;
    const message = expiredError(this.spec.name, v.notAfter).message;
    this.status.lastError = message;
    this.log.error({ certificate: this.spec.name, notAfter: v.notAfter.toISOString() }, message);
  }

  /** Arms the timer for `at`, in steps of at most maxTimerMs (a suspended machine wakes up late). */
  private arm(at: number, fn: () => void): void {
    this.clearTimer();
    if (this.stopped) return;
    this.status.nextAt = new Date(at);
    const step = () => {
      this.timer = undefined;
      if (this.stopped) return;
      const left = at - this.d.clock().getTime();
      if (left > 0) {
        this.timer = this.d.timers.setTimeout(step, Math.min(left, this.d.maxTimerMs));
        return;
      }
      fn();
    };
    const left = Math.max(at - this.d.clock().getTime(), 0);
    this.timer = this.d.timers.setTimeout(step, Math.min(left, this.d.maxTimerMs));
  }

  private clearTimer(): void {
    if (this.timer !== undefined) this.d.timers.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Renews now (from the timer, or by hand in tests). */
  renewNow(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.attempt().finally(() => {
      this.running = undefined;
      if (this.changedWhileBusy && !this.stopped) {
        this.changedWhileBusy = false;
        this.load("change");
      }
    });
    return this.running;
  }

  private async attempt(): Promise<void> {
    const v = this.known?.validity;
    if (!v || this.stopped) return;
    this.clearTimer();
    if (isExpired(v, this.d.clock())) {
      this.markExpired(v);
      return;
    }
    this.status.state = "renewing";
    delete this.status.nextAt;
    const started = this.d.clock();
    const left = v.notAfter.getTime() - started.getTime();
    const timeoutMs = Math.max(Math.min(this.d.requestTimeoutMs, Math.floor(left / 2)), 1_000);
    let result: RenewResult;
    try {
      result = await this.d.renew(
        { name: this.spec.name, files: this.spec.files, caUrl: this.spec.caUrl, caCert: this.spec.caCert },
        { rekey: this.spec.rekey ?? false, timeoutMs, clock: this.d.clock },
      );
    } catch (err) {
      this.onFailure(err, v);
      return;
    }
    if (this.stopped) return;
    this.status.failures = 0;
    this.status.lastRenewal = this.d.clock();
    this.d.metrics.lastRenewal.set({ name: this.spec.name }, Math.floor(this.d.clock().getTime() / 1000));
    this.log.info(
      {
        certificate: this.spec.name,
        previousSerial: result.previousSerial,
        serial: result.serial,
        notAfter: result.notAfter.toISOString(),
        rekeyed: result.rekeyed,
      },
      "certificate renewed",
    );
    // Take the files as written (the change events of our own write then find nothing new).
    this.load("reread");
    if (this.spec.reload) await this.runReload(result);
  }

  private onFailure(err: unknown, v: Validity): void {
    if (this.stopped) return;
    this.status.failures++;
    this.d.metrics.failures.inc({ name: this.spec.name });
    const message = (err as Error)?.message ?? String(err);
    this.status.lastError = message;
    const now = this.d.clock();
    if (isMtlsError(err, "E_EXPIRED") || isExpired(v, now)) {
      this.markExpired(v);
      return;
    }
    const retryAfterMs = err instanceof CaHttpError ? err.retryAfterMs : undefined;
    const delay = retryDelay(v, now, this.status.failures, {
      random: this.d.random,
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    });
    if (delay === undefined) {
      this.markExpired(v);
      return;
    }
    this.status.state = "retrying";
    const fields = {
      certificate: this.spec.name,
      err: message,
      code: isMtlsError(err) ? err.code : undefined,
      attempt: this.status.failures,
      retryInMs: delay,
      notAfter: v.notAfter.toISOString(),
    };
    if (isRetryable(err)) this.log.warn(fields, "renewal failed; retrying");
    else this.log.error(fields, "renewal refused; retrying in case it was temporary");
    this.arm(now.getTime() + delay, () => this.renewNow());
  }

  private async runReload(result: RenewResult): Promise<void> {
    const action = this.spec.reload as ReloadConfig;
    try {
      const out = await this.d.reload(action, {
        name: this.spec.name,
        cert: this.spec.files.cert,
        key: this.spec.files.key,
        serial: result.serial,
        notAfter: result.notAfter,
      });
      this.log.info(
        { certificate: this.spec.name, action: action.kind, output: out || undefined },
        "reload done",
      );
    } catch (err) {
      this.d.metrics.reloadFailures.inc({ name: this.spec.name });
      this.log.error(
        { certificate: this.spec.name, action: action.kind, err: (err as Error).message },
        "reload failed",
      );
    }
  }
}

/**
 * `mtls agent`: keeps certificates fresh. For each one it renews at 2/3 of the lifetime (± 5% jitter,
 * at most an hour), writes the files atomically and runs the reload action; retries with
 * exponential backoff and jitter (capped at 5 minutes, never sleeping past expiry − margin) when the
 * CA cannot be reached; re-reads and re-plans when someone else replaces the files. Time, timers and
 * randomness are injectable, so the whole schedule is testable without sleeping.
 */
export class CertAgent {
  private workers = new Map<string, CertWorker>();
  private readonly d: Required<Omit<AgentDeps, "registry">> & { metrics: AgentMetrics };

  constructor(certificates: AgentCertificate[], deps: AgentDeps = {}) {
    const clock = deps.clock ?? (() => new Date());
    this.d = {
      clock,
      timers: deps.timers ?? realTimers,
      random: deps.random ?? Math.random,
      log: deps.log ?? silentLogger(),
      renew: deps.renew ?? renewCertificate,
      reload: deps.reload ?? runReload,
      watch:
        deps.watch ?? ((file, onChange, onError) => watchFile(file, onChange, { debounceMs: 300, onError })),
      requestTimeoutMs: deps.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      maxTimerMs: deps.maxTimerMs ?? DEFAULT_MAX_TIMER_MS,
      metrics: agentMetrics(deps.registry ?? defaultRegistry(), clock),
    };
    for (const c of certificates) this.workers.set(c.name, new CertWorker(c, this.d));
  }

  start(): void {
    for (const w of this.workers.values()) w.start();
  }

  /**
   * A new set of certificates (SIGHUP re-read the config): removed ones stop, new ones start,
   * changed ones restart, unchanged ones re-read their files.
   */
  async update(certificates: AgentCertificate[]): Promise<void> {
    const next = new Map(certificates.map((c) => [c.name, c]));
    const stops: Promise<void>[] = [];
    for (const [name, w] of this.workers) {
      const spec = next.get(name);
      if (!spec || JSON.stringify(spec) !== JSON.stringify(w.spec)) {
        stops.push(w.stop());
        this.workers.delete(name);
      }
    }
    await Promise.all(stops);
    for (const c of certificates) {
      const existing = this.workers.get(c.name);
      if (existing) {
        existing.onFileChange();
        continue;
      }
      const w = new CertWorker(c, this.d);
      this.workers.set(c.name, w);
      w.start();
    }
  }

  /** Renews one certificate now, whatever its schedule (tests, and a future `agent renew-now`). */
  renewNow(name: string): Promise<void> {
    const w = this.workers.get(name);
    return w ? w.renewNow() : Promise.resolve();
  }

  /** Tells the agent a file changed (tests; normally the file watch does). */
  fileChanged(name: string): void {
    this.workers.get(name)?.onFileChange();
  }

  statuses(): CertStatus[] {
    return [...this.workers.values()].map((w) => ({ ...w.status }));
  }

  status(name: string): CertStatus | undefined {
    const w = this.workers.get(name);
    return w ? { ...w.status } : undefined;
  }

  /** Ready when every certificate is readable and not expired. */
  async ready(): Promise<Readiness> {
    const bad = this.statuses().filter(
      (s) => s.state === "expired" || s.state === "unreadable" || s.state === "starting",
    );
    if (bad.length === 0) return { ok: true, detail: `ok (${this.workers.size} certificates)` };
    return {
      ok: false,
      detail: bad.map((s) => `${s.name}: ${s.state}${s.lastError ? ` (${s.lastError})` : ""}`).join("; "),
    };
  }

  /** Stops every timer and watch; waits for renewals in flight (at most `timeoutMs`). */
  async stop(timeoutMs = 10_000): Promise<void> {
    const all = Promise.all([...this.workers.values()].map((w) => w.stop()));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
    clearTimeout(timer);
  }
}
