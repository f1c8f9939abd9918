import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import {
  canonicalEventJson,
  canonicalJson,
  computeAuditHash,
  GENESIS_HASH,
  type HashedAuditEvent,
  verifyChain,
} from "./audit-chain.js";
import type { AuditEvent } from "./types.js";

const hashed = (seq: number): HashedAuditEvent => ({
  seq,
  at: new Date(Date.UTC(2025, 0, seq)),
  actor: "system",
  action: "test",
  subject: null,
  details: { seq },
});

function chain(length: number): AuditEvent[] {
  const events: AuditEvent[] = [];
  let prevHash = GENESIS_HASH;
  for (let seq = 1; seq <= length; seq++) {
    const e = hashed(seq);
    const hash = computeAuditHash(prevHash, e);
    events.push({ ...e, prevHash, hash });
    prevHash = hash;
  }
  return events;
}

describe("audit chain", () => {
  it("writes canonical JSON with sorted keys at every depth and ISO dates", () => {
    const when = new Date("2025-01-02T03:04:05.006Z");
    assert.equal(
      canonicalJson({ b: 1, a: { d: [3, { z: 0, y: when }], c: undefined } }),
      '{"a":{"d":[3,{"y":"2025-01-02T03:04:05.006Z","z":0}]},"b":1}',
    );
    assert.equal(
      canonicalEventJson({
        seq: 7,
        at: when,
        actor: "cli:me",
        action: "x",
        subject: "0a",
        details: { k: "v" },
      }),
      '{"action":"x","actor":"cli:me","at":"2025-01-02T03:04:05.006Z","details":{"k":"v"},"seq":7,"subject":"0a"}',
    );
  });

  it("refuses details that are not JSON data", () => {
    assert.throws(
      () => canonicalJson({ n: 1n }),
      (err) => isMtlsError(err, "E_BAD_INPUT"),
    );
  });

  it("hashes prevHash, a newline and the canonical JSON with SHA-256", () => {
    const e = hashed(1);
    const expected = createHash("sha256")
      .update(`${GENESIS_HASH}\n${canonicalEventJson(e)}`)
      .digest("hex");
    assert.equal(computeAuditHash(GENESIS_HASH, e), expected);
    assert.match(expected, /^[0-9a-f]{64}$/);
    assert.equal(GENESIS_HASH, "0".repeat(64));
  });

  it("verifies an intact chain and pinpoints the first broken event", () => {
    assert.deepEqual(verifyChain([]), { ok: true, count: 0 });
    assert.deepEqual(verifyChain(chain(5)), { ok: true, count: 5 });

    const changed = chain(5);
    changed[2] = { ...(changed[2] as AuditEvent), actor: "mallory" };
    assert.deepEqual(
      { ...verifyChain(changed), reason: undefined },
      { ok: false, count: 2, brokenAt: 3, reason: undefined },
    );

    const gap = chain(5).filter((e) => e.seq !== 4);
    assert.equal(verifyChain(gap).brokenAt, 5);

    const swapped = chain(3);
    [swapped[1], swapped[2]] = [swapped[2] as AuditEvent, swapped[1] as AuditEvent];
    assert.equal(verifyChain(swapped).brokenAt, 3);

    const relinked = chain(3).map((e) => (e.seq === 2 ? { ...e, prevHash: GENESIS_HASH } : e));
    assert.equal(verifyChain(relinked).brokenAt, 2);
  });
});
