/**
 * The agent's schedule, driven by a fake clock and fake timers: renewal at 2/3 of the lifetime,
 * backoff on failure that never sleeps past expiry − margin, files replaced by someone else,
 * expiry, reload actions, metrics and stop. The renewal itself is injected (renew.ts and
 * client.test.ts test the real one against an HTTPS server).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { MtlsError } from "../errors.js";
import { createRegistry } from "../observe/metrics.js";
import { buildCertificate, randomSerial } from "../pki/certificate.js";
import { certToPem } from "../pki/certinfo.js";
import { generateKeyPair, pkcs8Of } from "../pki/keys.js";
import { buildName } from "../pki/names.js";
import { pemEncode } from "../pki/pem.js";
import { keyObjectSigner } from "../pki/signer.js";
import { type AgentCertificate, CertAgent, type Timers } from "./agent.js";
import { CaHttpError } from "./client.js";
import { type CertFiles, writeCertFiles } from "./files.js";
import type { RenewResult } from "./renew.js";
import { backoffDelay, expiryMargin } from "./schedule.js";

const root = mkdtempSync(join(tmpdir(), "mtls-agent-sched-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const H = 3_600_000;

/** Fake time: timers run only when advance() passes them. */
class FakeTime {
  // Ten days ahead of the real clock: the files' modification times (real) then say nothing about
  // issuance (schedule.ts issuedAtFromMtime), and every lifetime counts from notBefore.
  now = Math.floor(Date.now() / 1000) * 1000 + 10 * 24 * H;
  private seq = 0;
  private pending = new Map<number, { at: number; fn: () => void }>();
  readonly clock = () => new Date(this.now);
  readonly timers: Timers = {
    setTimeout: (fn, ms) => {
      const id = ++this.seq;
      this.pending.set(id, { at: this.now + Math.max(ms, 0), fn });
      return id;
    },
    clearTimeout: (id) => {
      this.pending.delete(id as number);
    },
  };
  get timerCount(): number {
    return this.pending.size;
  }
  next(): number | undefined {
    let min: number | undefined;
    for (const t of this.pending.values()) if (min === undefined || t.at < min) min = t.at;
    return min;
  }
  /** Moves time forward by `ms`, running every timer due on the way (and what they start). */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    for (let guard = 0; guard < 10_000; guard++) {
      let first: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.pending) if (!first || e[1].at < first[1].at) first = e;
      if (!first || first[1].at > end) break;
      this.now = first[1].at;
      this.pending.delete(first[0]);
      first[1].fn();
      await settle();
    }
    this.now = end;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/** Writes a self-signed pair valid from `from` for `lifetimeMs` and returns its serial. */
async function writePair(files: CertFiles, from: number, lifetimeMs: number): Promise<RenewResult> {
  const { privateKey } = generateKeyPair("ec-p256");
  const signer = keyObjectSigner(privateKey);
  const name = buildName({ commonName: "web" });
  const serial = randomSerial();
  const notBefore = new Date(from);
  const notAfter = new Date(from + lifetimeMs);
  const der = await buildCertificate(
    { serial, issuer: name, subject: name, notBefore, notAfter, spki: signer.spki, extensions: [] },
    signer,
  );
  writeCertFiles(
    files,
    { chainPem: certToPem(der), keyPem: pemEncode("PRIVATE KEY", pkcs8Of(privateKey)) },
    { overwrite: true },
  );
  return { previousSerial: "", serial, notBefore, notAfter, rekeyed: false };
}

interface Setup {
  time: FakeTime;
  agent: CertAgent;
  spec: AgentCertificate;
  calls: number[];
  /** Renewals fail while this returns an error. */
  failWith: { current: (() => Error) | undefined };
  registry: ReturnType<typeof createRegistry>;
  reloads: string[];
}

async function setup(
  lifetimeMs: number,
  opts: { random?: number; startAt?: number; reloadFails?: boolean } = {},
): Promise<Setup> {
  const time = new FakeTime();
  const dir = join(root, `c${++n}`);
  mkdirSync(dir);
  const files = { cert: join(dir, "web.crt"), key: join(dir, "web.key") };
  // Issued "now" on the fake clock, one second back-dated.
  await writePair(files, time.now - 1000 + (opts.startAt ?? 0), lifetimeMs);
  const spec: AgentCertificate = {
    name: "web",
    files,
    caUrl: "https://127.0.0.1:1",
    caCert: join(dir, "ca.crt"),
    reload: { kind: "command", argv: ["true"], shell: false, timeoutMs: 1000 },
  };
  const calls: number[] = [];
  const failWith: Setup["failWith"] = { current: undefined };
  const reloads: string[] = [];
  const registry = createRegistry();
  const agent = new CertAgent([spec], {
    clock: time.clock,
    timers: time.timers,
    random: () => opts.random ?? 0.5,
    registry,
    watch: () => ({ close() {} }),
    renew: async (target) => {
      calls.push(time.now);
      const fail = failWith.current;
      if (fail) throw fail();
      const r = await writePair(target.files, time.now - 1000, lifetimeMs);
      return { ...r, previousSerial: "old" };
    },
    reload: async (_action, ctx) => {
      reloads.push(ctx.serial);
      if (opts.reloadFails) throw new MtlsError("E_IO", "reload broke");
      return "";
    },
  });
  return { time, agent, spec, calls, failWith, registry, reloads };
}

const metric = async (s: Setup, name: string): Promise<number | undefined> => {
  const m = (await s.registry.getMetricsAsJSON()).find((x) => x.name === name);
  return m?.values.find((v) => v.labels.name === "web")?.value;
};

describe("CertAgent schedule", () => {
  test("renews at 2/3 of the lifetime, writes, reloads, and schedules the next one", async () => {
    const s = await setup(24 * H);
    const t0 = s.time.now;
    s.agent.start();
    const first = s.agent.status("web");
    assert.equal(first?.state, "waiting");
    // Lifetime counts from notBefore (t0 − 1 s): due at t0 − 1 s + 16 h.
    const due = t0 - 1000 + 16 * H;
    assert.equal(first?.nextAt?.getTime(), due);
    await s.time.advance(due - t0 - 1);
    assert.equal(s.calls.length, 0, "not a moment early");
    await s.time.advance(1);
    assert.deepEqual(s.calls, [due]);
    const after1 = s.agent.status("web");
    assert.equal(after1?.state, "waiting");
    assert.notEqual(after1?.serial, first?.serial);
    assert.equal(s.reloads.length, 1);
    assert.equal(s.reloads[0], after1?.serial);
    assert.equal(after1?.nextAt?.getTime(), due - 1000 + 16 * H, "2/3 into the new certificate");
    assert.equal(await metric(s, "mtls_agent_last_renewal_timestamp_seconds"), Math.floor(due / 1000));
    // Several renewals in a row, each one at 2/3 of its predecessor's successor.
    await s.time.advance(3 * 16 * H);
    assert.equal(s.calls.length, 4);
    await s.agent.stop();
  });

  test("jitter moves the renewal by at most 5% of the lifetime (and at most an hour)", async () => {
    for (const [r, shift] of [
      [0, -0.05],
      [0.999999, 0.05],
    ] as const) {
      const s = await setup(12 * H, { random: r });
      s.agent.start();
      const due = s.time.now - 1000 + 8 * H;
      const at = s.agent.status("web")?.nextAt?.getTime() ?? 0;
      assert.ok(Math.abs(at - (due + shift * 12 * H)) < 100, `random ${r}: ${(at - due) / 1000} s`);
      await s.agent.stop();
    }
  });

  test("a CA that is down: exponential backoff with jitter, counted; success resets it", async () => {
    const s = await setup(24 * H, { random: 0 });
    s.agent.start();
    s.failWith.current = () => new MtlsError("E_UNAVAILABLE", "cannot reach the CA");
    const start = s.agent.status("web")?.nextAt?.getTime() ?? 0;
    await s.time.advance(start - s.time.now);
    assert.equal(s.calls.length, 1);
    await s.time.advance(60_000);
    const gaps = s.calls.slice(1).map((c, i) => c - (s.calls[i] as number));
    // random 0: each wait is half its step: 0.5 s, 1 s, 2 s, 4 s, 8 s, 16 s...
    assert.deepEqual(
      gaps.slice(0, 6),
      [1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, () => 0)),
    );
    const st = s.agent.status("web");
    assert.equal(st?.state, "retrying");
    assert.equal(st?.failures, s.calls.length);
    assert.equal(await metric(s, "mtls_agent_renewal_failures_total"), s.calls.length);
    s.failWith.current = undefined;
    await s.time.advance((s.agent.status("web")?.nextAt?.getTime() ?? 0) - s.time.now);
    assert.equal(s.agent.status("web")?.failures, 0);
    assert.equal(s.agent.status("web")?.state, "waiting");
    await s.agent.stop();
  });

  test("the backoff is capped at 5 minutes and a Retry-After is honoured", async () => {
    const s = await setup(30 * 24 * H, { random: 0.999999 });
    s.agent.start();
    s.failWith.current = () => new MtlsError("E_UNAVAILABLE", "down");
    await s.time.advance((s.agent.status("web")?.nextAt?.getTime() ?? 0) - s.time.now);
    await s.time.advance(2 * H);
    const gaps = s.calls.slice(1).map((c, i) => c - (s.calls[i] as number));
    assert.ok(Math.max(...gaps) <= 5 * 60_000, `largest gap ${Math.max(...gaps)}`);
    assert.ok(
      gaps.slice(-3).every((g) => g > 4 * 60_000),
      "reached the cap",
    );
    s.failWith.current = () => new CaHttpError("rate limited", 429, "E_RATE_LIMITED", 20 * 60_000);
    const before = s.calls.length;
    await s.time.advance(5 * 60_000);
    assert.equal(s.calls.length, before + 1);
    const limited = s.calls.at(-1) as number;
    await s.time.advance(limited + 20 * 60_000 - 1 - s.time.now);
    assert.equal(s.calls.length, before + 1, "waits the 20 minutes it was asked to");
    await s.time.advance(1);
    assert.equal(s.calls.length, before + 2);
    await s.agent.stop();
  });

  test("never sleeps past expiry − margin; stops at expiry and says to enroll again", async () => {
    const lifetime = 10 * 60_000;
    const s = await setup(lifetime, { random: 0.999999 });
    const notAfter = s.time.now - 1000 + lifetime;
    const margin = expiryMargin({ notBefore: new Date(0), notAfter: new Date(lifetime) });
    s.agent.start();
    s.failWith.current = () => new MtlsError("E_UNAVAILABLE", "down");
    await s.time.advance(lifetime + 60_000);
    assert.ok(s.calls.length > 5);
    assert.ok(
      s.calls.some((c) => c >= notAfter - margin && c < notAfter),
      "an attempt inside the margin",
    );
    assert.ok(
      s.calls.every((c) => c < notAfter),
      "no attempt after expiry",
    );
    const gapsBeforeMargin = s.calls
      .map((c, i) => [c, s.calls[i + 1]] as const)
      .filter(([c, next]) => next !== undefined && c < notAfter - margin && next > notAfter - margin);
    for (const [, next] of gapsBeforeMargin)
      assert.ok((next as number) <= notAfter - margin + 1, "lands on the deadline");
    const st = s.agent.status("web");
    assert.equal(st?.state, "expired");
    assert.match(st?.lastError ?? "", /can no longer renew itself: enroll again/);
    assert.equal(s.time.timerCount, 0, "no timer left");
    const ready = await s.agent.ready();
    assert.equal(ready.ok, false);
    await s.agent.stop();
  });

  test("a certificate already expired at start is not sent to the CA", async () => {
    const s = await setup(60_000, { startAt: -2 * H });
    s.agent.start();
    assert.equal(s.agent.status("web")?.state, "expired");
    await s.time.advance(H);
    assert.equal(s.calls.length, 0);
    await s.agent.stop();
  });

  test("a certificate found past due renews at once", async () => {
    const s = await setup(24 * H, { startAt: -20 * H });
    s.agent.start();
    await s.time.advance(0);
    assert.equal(s.calls.length, 1);
    await s.agent.stop();
  });

  test("files replaced by someone else: re-read and rescheduled; our own write is no change", async () => {
    const s = await setup(24 * H);
    s.agent.start();
    const first = s.agent.status("web");
    s.agent.fileChanged("web");
    assert.deepEqual(s.agent.status("web")?.nextAt, first?.nextAt, "same certificate: same plan");
    // Someone enrolls again with a 2-hour certificate.
    const replaced = await writePair(s.spec.files, s.time.now, 2 * H);
    s.agent.fileChanged("web");
    const st = s.agent.status("web");
    assert.equal(st?.serial, replaced.serial);
    assert.equal(st?.nextAt?.getTime(), s.time.now + (2 * H * 2) / 3);
    // An expired certificate comes back to life when re-enrolled.
    await s.agent.stop();
  });

  test("an expired certificate replaced by a new one is scheduled again", async () => {
    const s = await setup(60_000, { startAt: -H });
    s.agent.start();
    assert.equal(s.agent.status("web")?.state, "expired");
    await writePair(s.spec.files, s.time.now, 3 * H);
    s.agent.fileChanged("web");
    assert.equal(s.agent.status("web")?.state, "waiting");
    await s.time.advance(2 * H);
    assert.equal(s.calls.length, 1);
    await s.agent.stop();
  });

  test("a failing reload is counted and logged; the renewal stands", async () => {
    const s = await setup(H, { reloadFails: true });
    s.agent.start();
    await s.time.advance(H);
    assert.ok(s.calls.length >= 1);
    assert.equal(await metric(s, "mtls_agent_reload_failures_total"), s.calls.length);
    assert.equal(s.agent.status("web")?.failures, 0);
    await s.agent.stop();
  });

  test("metrics: seconds to expiry computed at scrape", async () => {
    const s = await setup(24 * H);
    s.agent.start();
    const expect = Math.round((s.time.now - 1000 + 24 * H - s.time.now) / 1000);
    assert.equal(await metric(s, "mtls_agent_cert_seconds_to_expiry"), expect);
    await s.time.advance(H);
    assert.equal(await metric(s, "mtls_agent_cert_seconds_to_expiry"), expect - 3600);
    const text = await s.registry.metrics();
    assert.match(text, /mtls_agent_cert_seconds_to_expiry\{name="web"\} \d+/);
    await s.agent.stop();
  });

  test("stop clears every timer; update() adds, keeps and removes certificates", async () => {
    const s = await setup(24 * H);
    s.agent.start();
    assert.equal(s.time.timerCount, 1);
    const dir = join(root, `u${++n}`);
    mkdirSync(dir);
    const other = {
      ...s.spec,
      name: "api",
      files: { cert: join(dir, "api.crt"), key: join(dir, "api.key") },
    };
    await writePair(other.files, s.time.now, 24 * H);
    await s.agent.update([s.spec, other]);
    assert.deepEqual(
      s.agent.statuses().map((x) => [x.name, x.state]),
      [
        ["web", "waiting"],
        ["api", "waiting"],
      ],
    );
    assert.equal(s.time.timerCount, 2);
    await s.agent.update([other]);
    assert.deepEqual(
      s.agent.statuses().map((x) => x.name),
      ["api"],
    );
    assert.equal(s.time.timerCount, 1);
    await s.agent.stop();
    assert.equal(s.time.timerCount, 0);
  });

  test("with the real file watch: a file replaced by someone else is noticed within a second", async () => {
    const dir = join(root, `w${++n}`);
    mkdirSync(dir);
    const files = { cert: join(dir, "w.crt"), key: join(dir, "w.key") };
    await writePair(files, Date.now() - 1000, 24 * H);
    const agent = new CertAgent([{ name: "w", files, caUrl: "https://127.0.0.1:1", caCert: "ca.crt" }], {
      registry: createRegistry(),
    });
    agent.start();
    try {
      const replaced = await writePair(files, Date.now() - 1000, 2 * H);
      for (let i = 0; i < 100 && agent.status("w")?.serial !== replaced.serial; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(agent.status("w")?.serial, replaced.serial);
      assert.equal(agent.status("w")?.state, "waiting");
    } finally {
      await agent.stop();
    }
  });

  test("unreadable files at start: not ready, re-read with backoff until they appear", async () => {
    const s = await setup(24 * H);
    const dir = join(root, `m${++n}`);
    mkdirSync(dir);
    const missing = {
      ...s.spec,
      name: "late",
      files: { cert: join(dir, "late.crt"), key: join(dir, "late.key") },
    };
    const agent = new CertAgent([missing], {
      clock: s.time.clock,
      timers: s.time.timers,
      registry: createRegistry(),
      watch: () => ({ close() {} }),
    });
    agent.start();
    assert.equal(agent.status("late")?.state, "unreadable");
    assert.equal((await agent.ready()).ok, false);
    await writePair(missing.files, s.time.now, 24 * H);
    await s.time.advance(10 * 60_000);
    assert.equal(agent.status("late")?.state, "waiting");
    assert.equal((await agent.ready()).ok, true);
    await agent.stop();
    await s.agent.stop();
  });
});
