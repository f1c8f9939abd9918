import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RateLimiter } from "./rate-limit.js";

describe("RateLimiter", () => {
  it("lets a burst through, then refuses with the seconds until the next token", () => {
    let now = 0;
    const rl = new RateLimiter({ rate: 2, burst: 3, now: () => now });
    for (let i = 0; i < 3; i++) assert.equal(rl.take("enroll", "10.0.0.1").ok, true);
    const refused = rl.take("enroll", "10.0.0.1");
    assert.deepEqual(refused, { ok: false, retryAfter: 1 });
    now += 500; // one token at 2/s
    assert.equal(rl.take("enroll", "10.0.0.1").ok, true);
    assert.equal(rl.take("enroll", "10.0.0.1").ok, false);
  });

  it("keeps clients and buckets apart", () => {
    const rl = new RateLimiter({ rate: 1, burst: 1, now: () => 0 });
    assert.equal(rl.take("enroll", "a").ok, true);
    assert.equal(rl.take("enroll", "a").ok, false);
    assert.equal(rl.take("enroll", "b").ok, true);
    assert.equal(rl.take("ocsp", "a").ok, true);
  });

  it("says how long to wait at slow rates", () => {
    const rl = new RateLimiter({ rate: 0.1, burst: 1, now: () => 0 });
    rl.take("x", "a");
    assert.equal(rl.take("x", "a").retryAfter, 10);
  });

  it("rate 0 turns limiting off", () => {
    const rl = new RateLimiter({ rate: 0 });
    for (let i = 0; i < 1000; i++) assert.equal(rl.take("x", "a").ok, true);
    assert.equal(rl.size, 0);
  });

  it("stays bounded: idle buckets go first, then the least recently used", () => {
    let now = 0;
    const rl = new RateLimiter({ rate: 1, burst: 1, maxClients: 100, now: () => now });
    for (let i = 0; i < 100; i++) rl.take("x", `c${i}`);
    now += 5_000; // everyone refilled: all idle
    rl.take("x", "new");
    assert.equal(rl.size, 1);
    for (let i = 0; i < 500; i++) rl.take("x", `busy${i}`); // none refills in time
    assert.ok(rl.size <= 100, `size ${rl.size}`);
  });
});
