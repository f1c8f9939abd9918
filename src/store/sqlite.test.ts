import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { sql } from "kysely";
import { isMtlsError } from "../errors.js";
import { kyselyTamper, sampleCertificate, storeContract } from "./contract.js";
import type { KyselyStore } from "./kysely-store.js";
import { openSqliteStore } from "./sqlite.js";
import type { Store } from "./types.js";

const root = mkdtempSync(join(tmpdir(), "mtls-store-"));
after(() => rmSync(root, { recursive: true, force: true }));
let files = 0;
const freshFile = () => join(root, `store-${++files}.db`);

storeContract("sqlite :memory:", () => openSqliteStore(":memory:"), { tamper: kyselyTamper });
storeContract("sqlite file", () => openSqliteStore(freshFile()), { tamper: kyselyTamper });

const modeOf = (path: string) => statSync(path).mode & 0o777;
const pragma = async (store: Store, name: string) => {
  const { rows } = await sql<Record<string, unknown>>`${sql.raw(`pragma ${name}`)}`.execute(
    (store as KyselyStore).kysely,
  );
  return Object.values(rows[0] ?? {})[0];
};

describe("openSqliteStore", () => {
  it("creates the database and its WAL files owner-only, whatever the umask", async () => {
    const file = freshFile();
    const previous = process.umask(0);
    try {
      const store = await openSqliteStore(file);
      await store.appendAudit({
        at: new Date(),
        actor: "system",
        action: "ca.init",
        subject: null,
        details: {},
      });
      for (const path of [file, `${file}-wal`, `${file}-shm`]) assert.equal(modeOf(path), 0o600, path);
      await store.close();
    } finally {
      process.umask(previous);
    }
  });

  it("tightens an existing database file to 0600", async () => {
    const file = freshFile();
    writeFileSync(file, "", { mode: 0o644 });
    const store = await openSqliteStore(file);
    assert.equal(modeOf(file), 0o600);
    await store.close();
  });

  it("runs with WAL, synchronous FULL, a busy timeout and foreign keys", async () => {
    const store = await openSqliteStore(freshFile());
    assert.equal(await pragma(store, "journal_mode"), "wal");
    assert.equal(await pragma(store, "synchronous"), 2);
    assert.equal(await pragma(store, "busy_timeout"), 5000);
    assert.equal(await pragma(store, "foreign_keys"), 1);
    await store.close();
  });

  it("keeps everything across close and reopen", async () => {
    const file = freshFile();
    const rec = sampleCertificate();
    const first = await openSqliteStore(file);
    await first.transaction(async (tx) => {
      await tx.insertCertificate(rec);
      await tx.appendAudit({
        at: new Date(),
        actor: "system",
        action: "cert.issue",
        subject: rec.serial,
        details: {},
      });
      await tx.setSetting("ca.name", "Example");
      await tx.nextCounter("crl:0a");
    });
    await first.close();
    await first.close(); // closing twice is harmless

    const second = await openSqliteStore(file);
    assert.deepEqual(await second.getCertificate(rec.serial), rec);
    assert.equal(await second.getSetting("ca.name"), "Example");
    assert.equal(await second.nextCounter("crl:0a"), 2);
    const next = await second.appendAudit({
      at: new Date(),
      actor: "system",
      action: "x",
      subject: null,
      details: {},
    });
    assert.equal(next.seq, 2);
    assert.deepEqual(await second.verifyAudit(), { ok: true, count: 2 });
    await second.close();
  });

  it("gives each :memory: store its own database", async () => {
    const a = await openSqliteStore(":memory:");
    const b = await openSqliteStore(":memory:");
    await a.setSetting("k", "a");
    assert.equal(await b.getSetting("k"), undefined);
    await Promise.all([a.close(), b.close()]);
  });

  it("fails with E_STORE when the file cannot be opened", async () => {
    await assert.rejects(openSqliteStore(join(root, "missing-dir", "x.db")), (err) =>
      isMtlsError(err, "E_STORE"),
    );
  });

  it("refuses store calls inside its own transaction instead of deadlocking", async () => {
    const store = await openSqliteStore(":memory:");
    await assert.rejects(
      store.transaction(() => store.getSetting("k")),
      (err) => isMtlsError(err, "E_STORE") && /tx argument/.test(err.message),
    );
    assert.equal(await store.getSetting("k"), undefined); // and the store still works
    await store.close();
  });

  it("lets several processes create, migrate and append to one file at once", async () => {
    const file = freshFile();
    const sqliteModule = fileURLToPath(new URL("./sqlite.ts", import.meta.url));
    const script = `
      const { openSqliteStore } = await import(${JSON.stringify(sqliteModule)});
      const store = await openSqliteStore(process.argv[1]);
      for (let i = 0; i < 400; i++) {
        await store.transaction(async (tx) => {
          // Reads first, then writes: with a deferred BEGIN this would fail with SQLITE_BUSY.
          await tx.appendAudit({ at: new Date(), actor: "worker:" + process.pid, action: "load", subject: null, details: { i } });
          await tx.nextCounter("shared");
        });
      }
      await store.close();`;
    const run = () =>
      new Promise<void>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          ["--import", "tsx", "--input-type=module", "-e", script, file],
          {
            stdio: ["ignore", "inherit", "inherit"],
          },
        );
        child.on("error", reject);
        child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`worker exited ${code}`))));
      });
    await Promise.all([run(), run(), run()]);
    const store = await openSqliteStore(file);
    assert.deepEqual(await store.verifyAudit(), { ok: true, count: 1200 });
    assert.equal(await store.nextCounter("shared"), 1201);
    await store.close();
  });
});
