import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import { sampleCertificate } from "./contract.js";
import { openSqliteStore } from "./sqlite.js";
import type { Store, StoreTx } from "./types.js";

const root = mkdtempSync(join(tmpdir(), "mtls-group-"));
after(() => rmSync(root, { recursive: true, force: true }));
let files = 0;
const freshFile = () => join(root, `group-${++files}.db`);

/** What ca.issue() commits: an inventory row and its audit event. */
async function issueLike(tx: StoreTx, serial: string): Promise<string> {
  await tx.insertCertificate(sampleCertificate({ serial, name: `n-${serial}` }));
  await tx.appendAudit({ at: new Date(), actor: "test", action: "cert.issue", subject: serial, details: {} });
  return serial;
}

const serialOf = (i: number) => (0x10000 + i).toString(16).padStart(32, "0");

async function auditSubjects(store: Store): Promise<string[]> {
  return (await store.listAudit()).map((e) => e.subject ?? "");
}

describe("SQLite group commit", () => {
  it("commits concurrent transactions together: each durable when its promise resolves, the chain intact", async () => {
    const file = freshFile();
    const store = await openSqliteStore(file);
    const other = await openSqliteStore(file);
    const n = 40;
    // A member that joined a shared transaction sees the rows of the members before it while their
    // promises are still pending: proof that they share one transaction (and one commit).
    const settled = new Set<number>();
    let sawUncommittedNeighbour = false;
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        store
          .transaction(async (tx) => {
            if (i > 0 && !settled.has(i - 1) && (await tx.getCertificate(serialOf(i - 1)))) {
              sawUncommittedNeighbour = true;
            }
            return issueLike(tx, serialOf(i));
          })
          .then(async (serial) => {
            settled.add(i);
            // Resolved means committed: another connection to the file sees the row at once.
            assert.ok(await other.getCertificate(serial), `row ${i} visible to another connection`);
            return serial;
          }),
      ),
    );
    assert.equal(results.length, n);
    assert.ok(sawUncommittedNeighbour, "members shared a transaction");
    assert.deepEqual(await store.verifyAudit(), { ok: true, count: n });
    assert.deepEqual(
      await auditSubjects(store),
      Array.from({ length: n }, (_, i) => serialOf(i)),
    );
    await store.close();
    await other.close();
    // And after reopening the file.
    const again = await openSqliteStore(file);
    assert.equal((await again.findCertificates()).length, n);
    assert.deepEqual(await again.verifyAudit(), { ok: true, count: n });
    await again.close();
  });

  it("rolls back only the member that throws; the others commit and the chain verifies", async () => {
    const store = await openSqliteStore(freshFile());
    const boom = new Error("member 0 and member 5 fail");
    const outcomes = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        store.transaction(async (tx) => {
          await issueLike(tx, serialOf(i));
          // Member 0 runs first in its transaction (no savepoint), member 5 inside one.
          if (i === 0 || i === 5) throw boom;
          return i;
        }),
      ),
    );
    outcomes.forEach((o, i) => {
      if (i === 0 || i === 5) assert.deepEqual(o, { status: "rejected", reason: boom }, `member ${i}`);
      else assert.deepEqual(o, { status: "fulfilled", value: i }, `member ${i}`);
    });
    const stored = (await store.findCertificates()).map((r) => r.serial).sort();
    const expected = [1, 2, 3, 4, 6, 7, 8, 9].map(serialOf);
    assert.deepEqual(stored, expected);
    assert.deepEqual(await auditSubjects(store), expected);
    assert.deepEqual(await store.verifyAudit(), { ok: true, count: 8 });
    await store.close();
  });

  it("keeps the others when a member fails in the database (a duplicate serial)", async () => {
    const store = await openSqliteStore(freshFile());
    await store.transaction((tx) => issueLike(tx, serialOf(1)));
    const outcomes = await Promise.allSettled(
      [2, 1, 3].map((i) => store.transaction((tx) => issueLike(tx, serialOf(i)))),
    );
    assert.equal(outcomes[0]?.status, "fulfilled");
    assert.equal(outcomes[2]?.status, "fulfilled");
    const failed = outcomes[1];
    assert.ok(failed?.status === "rejected" && isMtlsError(failed.reason, "E_STORE"), "duplicate is E_STORE");
    assert.deepEqual(await auditSubjects(store), [1, 2, 3].map(serialOf));
    assert.deepEqual(await store.verifyAudit(), { ok: true, count: 3 });
    await store.close();
  });

  it("fails queued callers one by one when no transaction can begin, instead of spinning", async () => {
    const store = await openSqliteStore(":memory:");
    await store.close();
    const outcomes = await Promise.allSettled(
      [1, 2, 3].map((i) => store.transaction((tx) => issueLike(tx, serialOf(i)))),
    );
    for (const o of outcomes) assert.ok(o.status === "rejected" && isMtlsError(o.reason, "E_STORE"));
  });

  it("still refuses store calls from inside a member, and runs one caller alone as before", async () => {
    const store = await openSqliteStore(":memory:");
    const [inside, alone] = await Promise.allSettled([
      store.transaction(() => store.getSetting("k")),
      store.transaction(async (tx) => {
        await tx.setSetting("k", "v");
        return "ok";
      }),
    ]);
    assert.ok(inside?.status === "rejected" && isMtlsError(inside.reason, "E_STORE"));
    assert.deepEqual(alone, { status: "fulfilled", value: "ok" });
    assert.equal(await store.getSetting("k"), "v");
    assert.equal(await store.transaction(async (tx) => tx.getSetting("k")), "v");
    await store.close();
  });
});
