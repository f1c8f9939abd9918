import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { AuditVerification } from "../../store/index.js";
import { AuditVerifier } from "./audit-verifier.js";

/** A store whose verifyAudit() calls are settled by the test. */
function slowStore() {
  const calls: ((v: AuditVerification) => void)[] = [];
  return {
    calls,
    verifyAudit: () => new Promise<AuditVerification>((resolve) => calls.push(resolve)),
  };
}

describe("audit chain verdict for the page", () => {
  it("is fresh when the verification is quick", async () => {
    let count = 0;
    const v = new AuditVerifier(
      { verifyAudit: async () => ({ ok: true, count: ++count }) },
      () => new Date(0),
    );
    assert.deepEqual((await v.verdict()).last, { result: { ok: true, count: 1 }, at: new Date(0) });
    assert.deepEqual((await v.verdict()).last, { result: { ok: true, count: 2 }, at: new Date(0) });
  });

  it("does not wait past its budget, runs one verification at a time, shows the last result", async () => {
    const store = slowStore();
    const v = new AuditVerifier(store, () => new Date(5), 20);
    const first = await v.verdict();
    assert.deepEqual(first, { running: true });
    await v.verdict();
    assert.equal(store.calls.length, 1, "a reload does not start a second verification");
    store.calls[0]?.({ ok: false, count: 9, brokenAt: 4, reason: "hash mismatch" });
    await new Promise((r) => setImmediate(r));
    const next = await v.verdict(); // starts the next one, which does not finish within 20 ms
    assert.equal(next.running, true);
    assert.deepEqual(next.last, {
      result: { ok: false, count: 9, brokenAt: 4, reason: "hash mismatch" },
      at: new Date(5),
    });
    assert.equal(store.calls.length, 2);
  });

  it("reports a failing verification as such", async () => {
    const v = new AuditVerifier(
      { verifyAudit: async () => Promise.reject(new Error("database locked")) },
      () => new Date(1),
    );
    assert.deepEqual((await v.verdict()).last, { error: "database locked", at: new Date(1) });
  });
});
