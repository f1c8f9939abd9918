import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  BACKOFF_CAP_MS,
  backoffDelay,
  dueAt,
  expiryMargin,
  isDue,
  isExpired,
  issuedAtFromMtime,
  MAX_JITTER_MS,
  renewalTime,
  retryDelay,
  type Validity,
} from "./schedule.js";

const T0 = Date.parse("2030-01-01T00:00:00Z");
const H = 3_600_000;
const D = 24 * H;
const at = (ms: number) => new Date(T0 + ms);
const validity = (lifetimeMs: number, extra: Partial<Validity> = {}): Validity => ({
  notBefore: at(0),
  notAfter: at(lifetimeMs),
  ...extra,
});
const fixed = (r: number) => () => r;
/** Random numbers spread over [0, 1), the edges included. */
const SAMPLES = [0, 1e-9, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999999999];

describe("due at two thirds of the lifetime", () => {
  test("a 24 h certificate is due at 16 h, not a millisecond before", () => {
    const v = validity(D);
    assert.equal(dueAt(v), T0 + 16 * H);
    assert.equal(isDue(v, at(16 * H - 1)), false);
    assert.equal(isDue(v, at(16 * H)), true);
    assert.equal(isExpired(v, at(D - 1)), false);
    assert.equal(isExpired(v, at(D)), true);
  });

  test("a back-dated notBefore counts from the issuance when the file dates it", () => {
    // Issued at T0 + 60 s with notBefore back-dated by a minute, 30 s of life after that.
    const v = validity(90_000, { issuedAt: at(60_000) });
    assert.equal(dueAt(v), T0 + 60_000 + 20_000);
    assert.equal(isDue(v, at(60_001)), false, "not due the moment it arrives");
    // Without the issuance moment the same certificate would be due at once.
    assert.equal(dueAt(validity(90_000)), T0 + 60_000);
  });

  test("issuedAtFromMtime: only a write shortly after notBefore dates the issuance", () => {
    const nb = at(0);
    const na = at(30 * D);
    assert.deepEqual(issuedAtFromMtime(nb, na, at(60_000)), at(60_000));
    assert.equal(issuedAtFromMtime(nb, na, at(-1)), undefined, "before notBefore");
    assert.equal(issuedAtFromMtime(nb, na, at(0)), undefined, "at notBefore: nothing to correct");
    assert.equal(issuedAtFromMtime(nb, na, at(6 * 60_000)), undefined, "copied or touched later");
    assert.equal(issuedAtFromMtime(nb, at(60_000), at(60_000)), undefined, "not after notAfter");
  });
});

describe("renewal time with jitter", () => {
  test("stays within 2/3 ± 5% of the lifetime for short certificates", () => {
    const v = validity(12 * H);
    const amp = 0.05 * 12 * H;
    for (const r of SAMPLES) {
      const t = renewalTime(v, at(0), fixed(r));
      assert.ok(t >= T0 + 8 * H - amp && t <= T0 + 8 * H + amp, `r=${r}: ${t - T0}`);
    }
    assert.equal(renewalTime(v, at(0), fixed(0.5)), T0 + 8 * H, "the middle is 2/3");
    assert.equal(renewalTime(v, at(0), fixed(0)), T0 + 8 * H - amp, "the low edge");
  });

  test("the jitter is at most an hour either way for long-lived certificates", () => {
    const v = validity(365 * D);
    const due = dueAt(v);
    for (const r of SAMPLES) {
      const t = renewalTime(v, at(0), fixed(r));
      assert.ok(Math.abs(t - due) <= MAX_JITTER_MS, `r=${r}: ${t - due}`);
    }
  });

  test("spreads: different random numbers give different times", () => {
    const v = validity(24 * H);
    const times = new Set(SAMPLES.map((r) => renewalTime(v, at(0), fixed(r))));
    assert.ok(times.size >= SAMPLES.length - 1);
  });

  test("never before now: a certificate found past due renews at once", () => {
    const v = validity(24 * H);
    const now = at(20 * H);
    for (const r of SAMPLES) assert.equal(renewalTime(v, now, fixed(r)), now.getTime());
  });

  test("never after notAfter − margin, whatever the jitter", () => {
    const v = validity(30_000);
    for (const r of SAMPLES) {
      assert.ok(renewalTime(v, at(0), fixed(r)) <= T0 + 30_000 - expiryMargin(v));
    }
  });

  test("the margin is 5% of the lifetime, between 1 s and 5 min", () => {
    assert.equal(expiryMargin(validity(10_000)), 1_000);
    assert.equal(expiryMargin(validity(60_000)), 3_000);
    assert.equal(expiryMargin(validity(D)), 5 * 60_000);
  });
});

describe("exponential backoff with jitter", () => {
  test("doubles from 1 s, each delay within [half, full] of its step", () => {
    for (let attempt = 1; attempt <= 8; attempt++) {
      const full = Math.min(1000 * 2 ** (attempt - 1), BACKOFF_CAP_MS);
      for (const r of SAMPLES) {
        const d = backoffDelay(attempt, fixed(r));
        assert.ok(d >= full / 2 && d <= full, `attempt ${attempt}, r=${r}: ${d}`);
      }
    }
    assert.equal(backoffDelay(1, fixed(0)), 500);
    assert.equal(backoffDelay(4, fixed(0.999999999)), 8000);
  });

  test("is capped at 5 minutes, however many attempts failed", () => {
    for (const attempt of [10, 20, 100, 10_000]) {
      for (const r of SAMPLES) assert.ok(backoffDelay(attempt, fixed(r)) <= BACKOFF_CAP_MS);
    }
    assert.equal(backoffDelay(50, fixed(0)), BACKOFF_CAP_MS / 2);
  });

  test("retryDelay never sleeps past notAfter − margin", () => {
    const v = validity(D);
    const deadline = T0 + D - expiryMargin(v);
    // 3 minutes before the deadline, a 5-minute backoff is cut to 3 minutes.
    const now = at(D - expiryMargin(v) - 3 * 60_000);
    assert.equal(retryDelay(v, now, 50, { random: fixed(0.999999999) }), deadline - now.getTime());
    // Far from it, the backoff stands.
    assert.equal(retryDelay(v, at(16 * H), 3, { random: fixed(0) }), 2000);
  });

  test("past the deadline it keeps trying at half the remaining time, at least 1 s apart", () => {
    const v = validity(D);
    const now = at(D - 60_000); // inside the 5-minute margin
    assert.equal(retryDelay(v, now, 20, { random: fixed(0.5) }), 30_000);
    assert.equal(retryDelay(v, at(D - 1_500), 20, { random: fixed(0.5) }), 1_000);
    assert.equal(retryDelay(v, at(D - 400), 20, { random: fixed(0.5) }), 400, "never past notAfter");
  });

  test("an expired certificate is not retried", () => {
    const v = validity(D);
    assert.equal(retryDelay(v, at(D), 1), undefined);
    assert.equal(retryDelay(v, at(2 * D), 1), undefined);
  });

  test("a Retry-After longer than the backoff is honoured, within the deadline", () => {
    const v = validity(D);
    assert.equal(retryDelay(v, at(16 * H), 1, { random: fixed(0), retryAfterMs: 30_000 }), 30_000);
    const late = at(D - expiryMargin(v) - 10_000);
    assert.equal(retryDelay(v, late, 1, { random: fixed(0), retryAfterMs: 60_000 }), 10_000);
  });
});
