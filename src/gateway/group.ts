import { MtlsError } from "../errors.js";
import {
  type BuiltGateway,
  buildGateway,
  type GatewayDeps,
  type GatewaySpec,
  restartKeyOf,
} from "./build.js";

export interface GatewayApplyReport {
  started: string[];
  restarted: string[];
  /** Changed in place (routes, rules, modes, upstreams, identity headers, limits): nothing dropped. */
  updated: string[];
  unchanged: string[];
  stopped: string[];
  failed: { name: string; error: Error }[];
}

/**
 * The gateways of one config file (mtls up), by name. apply() puts a new list in force: new names
 * start, removed ones stop (draining for their shutdown timeout); a changed one takes the change in
 * place when only its routes, rules, modes, upstreams, identity headers or limits changed (the
 * listener and open connections stay), and restarts when its listen address, TLS files, revocation
 * sources, HTTP/2 or handshake timeout changed (the old one stops accepting at once and drains
 * while the new one takes its address); the rest keep running untouched.
 */
export class GatewayGroup {
  private readonly running = new Map<string, { key: string; built: BuiltGateway }>();

  constructor(
    private readonly deps: GatewayDeps,
    private readonly onListening?: (built: BuiltGateway) => void,
  ) {}

  get size(): number {
    return this.running.size;
  }

  get names(): string[] {
    return [...this.running.keys()];
  }

  async apply(specs: GatewaySpec[]): Promise<GatewayApplyReport> {
    const report: GatewayApplyReport = {
      started: [],
      restarted: [],
      updated: [],
      unchanged: [],
      stopped: [],
      failed: [],
    };
    const wanted = new Map(specs.map((s) => [nameOf(s), s]));
    for (const [name, held] of [...this.running]) {
      if (wanted.has(name)) continue;
      this.running.delete(name);
      await held.built.stop();
      report.stopped.push(name);
    }
    for (const [name, spec] of wanted) {
      const key = JSON.stringify(spec);
      const held = this.running.get(name);
      if (held?.key === key) {
        report.unchanged.push(name);
        continue;
      }
      if (held && restartKeyOf(held.built.spec) === restartKeyOf(spec)) {
        try {
          // Routes that do not pass (or unreadable upstream files) leave the ones in force.
          await held.built.reconfigure(spec);
          held.key = key;
          report.updated.push(name);
        } catch (err) {
          report.failed.push({ name, error: err as Error });
        }
        continue;
      }
      let oldStopped = false;
      try {
        // A spec that cannot be built (bad file, bad route) leaves the gateway in force as it was.
        const built = await buildGateway(spec, this.deps);
        // The old one closes its listener synchronously, then drains in the background.
        const draining = held?.built.stop();
        oldStopped = held !== undefined;
        try {
          await startWithRetry(built);
        } catch (err) {
          built.close();
          throw err;
        }
        void draining?.catch(() => undefined);
        this.running.set(name, { key, built });
        (held ? report.restarted : report.started).push(name);
        this.onListening?.(built);
      } catch (err) {
        if (oldStopped) this.running.delete(name);
        report.failed.push({ name, error: err as Error });
      }
    }
    return report;
  }

  /** Ready when every gateway is (one line each). */
  async ready(): Promise<{ ok: boolean; detail: string }> {
    const all = await Promise.all(
      [...this.running].map(async ([name, h]) => ({ name, r: await h.built.ready() })),
    );
    return {
      ok: all.every((a) => a.r.ok),
      detail: all
        .map((a) => `gateway ${a.name}: ${a.r.ok ? "ready" : "not ready"}: ${a.r.detail}`)
        .join("\n"),
    };
  }

  /** Re-reads every gateway's certificate files (SIGHUP); true if any changed. */
  async reloadFiles(): Promise<boolean> {
    const results = await Promise.all([...this.running.values()].map((h) => h.built.reloadFiles()));
    return results.some(Boolean);
  }

  /** Stops every gateway (each drains for `deadlineMs`, default its own shutdown timeout). */
  async stop(deadlineMs?: number): Promise<void> {
    const all = [...this.running.values()];
    this.running.clear();
    await Promise.all(all.map((h) => h.built.stop(deadlineMs)));
  }
}

function nameOf(spec: GatewaySpec): string {
  if (!spec.name) throw new MtlsError("E_USAGE", "a gateway in a group needs a name");
  return spec.name;
}

/** The address a restarted gateway takes over may need a moment to be free again. */
async function startWithRetry(built: BuiltGateway): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await built.start();
      return;
    } catch (err) {
      if (attempt >= 20 || !/EADDRINUSE/.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
