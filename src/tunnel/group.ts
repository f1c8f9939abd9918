import { isMtlsError, MtlsError } from "../errors.js";
import type { Logger, Readiness, Registry } from "../observe/index.js";
import { type Address, formatAddress } from "./address.js";
import {
  type BuiltTunnel,
  buildTunnel,
  type PreparedUpdate,
  restartReason,
  type TunnelSpec,
} from "./build.js";

export interface TunnelGroupOptions {
  logger: Logger;
  registry?: Registry;
  /** Called when a tunnel (new, or restarted) listens. */
  onListening?: (tunnel: BuiltTunnel, bound: Address) => void;
}

/** What apply() did, by tunnel name. */
export interface ApplyReport {
  started: string[];
  /** Certificate, revocation sources or routes swapped in place. */
  updated: string[];
  /** Nothing to change. */
  unchanged: string[];
  restarted: string[];
  stopped: string[];
  /** Tunnels that could not start listening (they are not running). */
  failed: { name: string; error: Error }[];
}

/** How long a restarted tunnel retries its address while the old listener lets go of it. */
const REBIND_MS = 2000;

/**
 * Many tunnels in one process, by name, as `mtls up` runs them. apply() puts a whole set of specs
 * in force in two steps: first everything new is prepared (certificates and CRLs loaded, rules
 * compiled); if anything fails, nothing changes and the error says which tunnel. Then tunnels
 * whose listening side is unchanged take their new certificates, revocation sources and routes in
 * place (open connections keep running), removed tunnels stop gracefully (draining for their
 * shutdown timeout), changed ones are restarted (the old one drains while the new one listens),
 * and new ones start.
 */
export class TunnelGroup {
  private readonly byName = new Map<string, BuiltTunnel>();
  /** Tunnels stopped by a reload, still draining. */
  private readonly draining = new Set<BuiltTunnel>();
  private readonly drains = new Set<Promise<unknown>>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: TunnelGroupOptions) {}

  /** The running tunnels, in the order they were given. */
  get tunnels(): BuiltTunnel[] {
    return [...this.byName.values()];
  }

  get(name: string): BuiltTunnel | undefined {
    return this.byName.get(name);
  }

  /** Puts `specs` in force (one apply at a time). Rejects, changing nothing, when one cannot be prepared. */
  apply(specs: TunnelSpec[]): Promise<ApplyReport> {
    const run = this.queue.then(
      () => this.applyNow(specs),
      () => this.applyNow(specs),
    );
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async applyNow(specs: TunnelSpec[]): Promise<ApplyReport> {
    const names = specs.map((s, i) => s.name ?? `#${i}`);
    if (new Set(names).size !== names.length)
      throw new MtlsError("E_USAGE", "two tunnels with the same name");
    const log = this.opts.logger;

    // 1. Prepare: nothing running changes here.
    const updates: { tunnel: BuiltTunnel; prepared: PreparedUpdate }[] = [];
    const fresh: { spec: TunnelSpec; built: BuiltTunnel; replaces?: BuiltTunnel; why?: string }[] = [];
    try {
      for (const [i, spec] of specs.entries()) {
        const name = names[i] as string;
        const running = this.byName.get(name);
        try {
          const why = running ? restartReason(running.spec, spec) : undefined;
          if (running && !why) {
            updates.push({ tunnel: running, prepared: await running.prepare(spec) });
          } else {
            const built = await buildTunnel(spec, {
              logger: log,
              ...(this.opts.registry ? { registry: this.opts.registry } : {}),
            });
            fresh.push({ spec, built, ...(running ? { replaces: running, why: why as string } : {}) });
          }
        } catch (err) {
          throw tunnelError(name, err);
        }
      }
    } catch (err) {
      for (const u of updates) u.prepared.discard();
      for (const f of fresh) f.built.close();
      throw err;
    }

    // 2. Put in force.
    const report: ApplyReport = {
      started: [],
      updated: [],
      unchanged: [],
      restarted: [],
      stopped: [],
      failed: [],
    };
    const wanted = new Set(names);
    for (const [name, t] of [...this.byName]) {
      if (wanted.has(name)) continue;
      this.byName.delete(name);
      this.retire(t);
      report.stopped.push(name);
      log.info({ tunnel: name }, "tunnel removed from the config: stopping (open connections drain)");
    }
    for (const { tunnel, prepared } of updates) {
      prepared.apply();
      if (prepared.changes.length === 0) {
        report.unchanged.push(tunnel.name);
        continue;
      }
      report.updated.push(tunnel.name);
      log.info({ tunnel: tunnel.name, changes: prepared.changes }, "tunnel updated in place");
    }
    for (const f of fresh) {
      const name = f.built.name;
      if (f.replaces) {
        log.info({ tunnel: name, why: f.why }, "restarting the tunnel (open connections drain)");
        this.byName.delete(name);
        this.retire(f.replaces);
      }
      try {
        // A tunnel that just stopped may still be letting go of the address this one wants.
        const retry = f.replaces || report.stopped.length > 0 ? REBIND_MS : 0;
        const bound = await this.startWithRetry(f.built, retry);
        this.byName.set(name, f.built);
        (f.replaces ? report.restarted : report.started).push(name);
        this.opts.onListening?.(f.built, bound);
      } catch (err) {
        void f.built.stop(0);
        const error = err instanceof Error ? err : new Error(String(err));
        report.failed.push({ name, error });
        log.error({ tunnel: name, err: error.message }, "tunnel could not start");
      }
    }
    // Keep the order of the file.
    const ordered = names.flatMap((n) => {
      const t = this.byName.get(n);
      return t ? [[n, t] as const] : [];
    });
    this.byName.clear();
    for (const [n, t] of ordered) this.byName.set(n, t);
    return report;
  }

  private async startWithRetry(t: BuiltTunnel, retryMs: number): Promise<Address> {
    const until = Date.now() + retryMs;
    for (;;) {
      try {
        return await t.start();
      } catch (err) {
        const inUse = isMtlsError(err, "E_IO") && /address already in use/.test(err.message);
        if (!inUse || Date.now() >= until) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** Stops a tunnel that left the config (or is replaced): no new connections, the open ones drain. */
  private retire(t: BuiltTunnel, deadlineMs?: number): void {
    this.draining.add(t);
    const p = t
      .stop(deadlineMs)
      .then(
        (r) => this.opts.logger.info({ tunnel: t.name, ...r }, "tunnel stopped"),
        (err: Error) => this.opts.logger.error({ tunnel: t.name, err: err.message }, "stop failed"),
      )
      .finally(() => {
        this.draining.delete(t);
        this.drains.delete(p);
      });
    this.drains.add(p);
  }

  /** /readyz: every tunnel ready; one line per tunnel. */
  async ready(): Promise<Readiness> {
    const tunnels = this.tunnels;
    if (tunnels.length === 0) return { ok: false, detail: "no tunnel running" };
    const results = await Promise.all(
      tunnels.map(async (t) => {
        try {
          return { name: t.name, ...(await t.ready()) };
        } catch (err) {
          return { name: t.name, ok: false, detail: (err as Error).message };
        }
      }),
    );
    return {
      ok: results.every((r) => r.ok),
      detail: results.map((r) => `${r.name}: ${r.ok ? "ready" : "NOT READY"}: ${r.detail}`).join("\n"),
    };
  }

  /** Re-reads every tunnel's certificate files (SIGHUP); true if any changed. */
  async reloadFiles(): Promise<boolean> {
    const results = await Promise.all(this.tunnels.map((t) => t.reloadFiles().catch(() => false)));
    return results.some(Boolean);
  }

  /**
   * Stops every tunnel: no new connections, open ones drain for each tunnel's shutdown timeout (or
   * `deadlineMs` for all; 0 cuts them at once). Tunnels still draining from a reload are included.
   */
  async stop(deadlineMs?: number): Promise<void> {
    // Tunnels already draining (a reload removed them, or an earlier stop) are cut to the new deadline.
    if (deadlineMs !== undefined) for (const t of this.draining) void t.tunnel.stop(deadlineMs);
    for (const [name, t] of [...this.byName]) {
      this.byName.delete(name);
      this.retire(t, deadlineMs);
    }
    await Promise.all([...this.drains]);
  }
}

function tunnelError(name: string, err: unknown): MtlsError {
  if (isMtlsError(err)) return new MtlsError(err.code, `tunnel ${name}: ${err.message}`, { cause: err });
  return new MtlsError("E_BAD_INPUT", `tunnel ${name}: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
  });
}

/** "vnc (server) listening on 127.0.0.1:5901" for a start-up line. */
export function describeListening(t: BuiltTunnel, bound: Address): string {
  return `${t.name} (${t.spec.mode}) listening on ${formatAddress(bound)}`;
}
