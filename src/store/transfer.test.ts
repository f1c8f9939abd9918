import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { postgresUnavailable, TEST_POSTGRES_URL, testSchemas } from "../../test/fixtures/postgres.js";
import { isMtlsError } from "../errors.js";
import { kyselyTamper, sampleCertificate, sampleToken } from "./contract.js";
import { openPostgresStore } from "./postgres.js";
import { openSqliteStore } from "./sqlite.js";
import { backupStore, copyStore, restoreStore } from "./transfer.js";
import type { Store } from "./types.js";

const root = mkdtempSync(join(tmpdir(), "mtls-transfer-"));
after(() => rmSync(root, { recursive: true, force: true }));
let files = 0;
const fresh = (ext = "db") => join(root, `f-${++files}.${ext}`);

/** A store with some of everything, and more audit events than one page holds. */
async function populated(): Promise<Store> {
  const store = await openSqliteStore(fresh());
  await store.transaction(async (tx) => {
    await tx.setSetting("ca.name", "Acme");
    await tx.setSetting("ca.publicUrl", "https://ca.acme.test");
    await tx.nextCounter("crl:0a");
    await tx.nextCounter("crl:0a");
    await tx.insertCertificate(sampleCertificate({ certPath: "/x.crt", issuerSerial: null }));
    await tx.insertCertificate(
      sampleCertificate({ status: "revoked", revokedAt: new Date(), revocationReason: "superseded" }),
    );
    await tx.insertToken(sampleToken());
    await tx.insertToken(sampleToken({ ttlMs: null, usedAt: new Date(), usedBySerial: "0abc" }));
    for (let i = 0; i < 2100; i++) {
      await tx.appendAudit({ at: new Date(), actor: "t", action: "load", subject: null, details: { i } });
    }
  });
  return store;
}

/** Everything a store holds, as comparable data. */
async function contents(store: Store) {
  return {
    certificates: await store.findCertificates(),
    tokens: await store.findTokens(),
    audit: await store.listAudit(),
    settings: [await store.getSetting("ca.name"), await store.getSetting("ca.publicUrl")],
    verify: await store.verifyAudit(),
  };
}

describe("store backup and restore", () => {
  it("round-trips every record through a file, 0600, with the audit chain intact", async () => {
    const source = await populated();
    const file = fresh("jsonl");
    const counts = await backupStore(source, file);
    assert.deepEqual(counts, {
      settings: 2,
      counters: 1,
      certificates: 2,
      enrollment_tokens: 2,
      audit_events: 2100,
    });
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const target = await openSqliteStore(fresh());
    const result = await restoreStore(target, file);
    assert.deepEqual(result.counts, counts);
    assert.deepEqual(result.audit, { ok: true, count: 2100 });
    assert.deepEqual(await contents(target), await contents(source));
    // The counters carry on where they were.
    assert.equal(await target.nextCounter("crl:0a"), 3);
    await Promise.all([source.close(), target.close()]);
  });

  it("refuses to overwrite a backup file, or a non-empty store, unless forced", async () => {
    const source = await populated();
    const file = fresh("jsonl");
    await backupStore(source, file);
    await assert.rejects(backupStore(source, file), (err) => isMtlsError(err, "E_EXISTS"));
    await backupStore(source, file, { force: true });
    const target = await openSqliteStore(fresh());
    await target.setSetting("ca.name", "Other");
    await assert.rejects(
      restoreStore(target, file),
      (err) => isMtlsError(err, "E_EXISTS") && /--force/.test(err.message),
    );
    assert.equal(await target.getSetting("ca.name"), "Other");
    await restoreStore(target, file, { force: true });
    assert.deepEqual(await contents(target), await contents(source));
    await Promise.all([source.close(), target.close()]);
  });

  it("restores nothing from a changed, truncated or foreign file", async () => {
    const source = await populated();
    const file = fresh("jsonl");
    await backupStore(source, file);
    const text = readFileSync(file, "utf8");
    const changed = fresh("jsonl");
    writeFileSync(changed, text.replace('"ca.name","value":"Acme"', '"ca.name","value":"Evil"'));
    const truncated = fresh("jsonl");
    writeFileSync(truncated, text.split("\n").slice(0, -2).join("\n"));
    const foreign = fresh("jsonl");
    writeFileSync(foreign, '{"hello":"world"}\n');
    const target = await openSqliteStore(fresh());
    for (const [bad, why] of [
      [changed, /SHA-256/],
      [truncated, /end marker/],
      [foreign, /header/],
    ] as const) {
      await assert.rejects(
        restoreStore(target, bad),
        (err) => isMtlsError(err, "E_BAD_INPUT") && why.test(err.message),
      );
      assert.deepEqual(await target.findCertificates(), []);
      assert.equal(await target.getSetting("ca.name"), undefined);
    }
    await Promise.all([source.close(), target.close()]);
  });

  it("copies into an empty store only, unless forced, however large the source", async () => {
    const source = await populated();
    const target = await openSqliteStore(fresh());
    await target.appendAudit({ at: new Date(), actor: "t", action: "other", subject: null, details: {} });
    await assert.rejects(copyStore(source, target), (err) => isMtlsError(err, "E_EXISTS"));
    assert.equal((await target.listAudit()).length, 1);
    const result = await copyStore(source, target, { force: true });
    assert.deepEqual(result.audit, { ok: true, count: 2100 });
    assert.deepEqual(await contents(target), await contents(source));
    await Promise.all([source.close(), target.close()]);
  });

  it("refuses to carry a broken audit chain into a copy", async () => {
    const source = await populated();
    await kyselyTamper(source, `UPDATE audit_events SET details = '{"i":-1}' WHERE seq = 1500`);
    const target = await openSqliteStore(fresh());
    await assert.rejects(
      copyStore(source, target),
      (err) => isMtlsError(err, "E_AUDIT_TAMPERED") && /1500/.test(err.message),
    );
    assert.deepEqual(await target.listAudit({ limit: 1 }), []);
    await Promise.all([source.close(), target.close()]);
  });
});

const unavailable = await postgresUnavailable();
if (unavailable !== undefined) {
  console.warn(
    `\n*** SKIPPING SQLite <-> PostgreSQL migration tests: ${TEST_POSTGRES_URL} is unreachable (${unavailable}).\n`,
  );
}

describe("store migrate between SQLite and PostgreSQL", {
  skip: unavailable ? `PostgreSQL unreachable: ${unavailable}` : false,
}, () => {
  const schemas = testSchemas("mtls_transfer");
  after(() => schemas.dropAll());

  it("copies SQLite into PostgreSQL and back without losing or changing anything", async () => {
    const sqlite = await populated();
    const pg = await openPostgresStore(await schemas.create());
    const there = await copyStore(sqlite, pg);
    assert.deepEqual(there.audit, { ok: true, count: 2100 });
    assert.deepEqual(await contents(pg), await contents(sqlite));
    // The copy carries on: the next event links to the copied chain, the counter continues.
    await pg.appendAudit({ at: new Date(), actor: "t", action: "after", subject: null, details: {} });
    assert.deepEqual(await pg.verifyAudit(), { ok: true, count: 2101 });
    assert.equal(await pg.nextCounter("crl:0a"), 3);
    const back = await openSqliteStore(fresh());
    await copyStore(pg, back);
    assert.deepEqual(await contents(back), await contents(pg));
    await Promise.all([sqlite.close(), pg.close(), back.close()]);
  });
});
