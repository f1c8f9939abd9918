import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { postgresUnavailable, TEST_POSTGRES_URL, testSchemas } from "../../test/fixtures/postgres.js";
import { isMtlsError } from "../errors.js";
import { kyselyTamper, sampleCertificate, sampleToken, storeContract } from "./contract.js";
import { openPostgresStore, withDefaultUser } from "./postgres.js";
import type { AuditEvent, Store, StoreTx } from "./types.js";

const unavailable = await postgresUnavailable();
if (unavailable !== undefined) {
  console.warn(
    `\n*** SKIPPING the PostgreSQL store tests: ${TEST_POSTGRES_URL} is unreachable (${unavailable}).\n` +
      "*** Start PostgreSQL on 127.0.0.1:5432 with a database `test`, or set MTLS_TEST_POSTGRES.\n",
  );
}
const skip = unavailable === undefined ? false : `PostgreSQL unreachable: ${unavailable}`;

const schemas = testSchemas("mtls_test");
after(() => schemas.dropAll());

if (skip) {
  it("Store contract: postgres", { skip }, () => {});
} else {
  storeContract("postgres", async () => openPostgresStore(await schemas.create(), { poolSize: 4 }), {
    tamper: kyselyTamper,
  });
}

const serial = () => {
  const b = randomBytes(16);
  b[0] = ((b[0] as number) & 0x7f) | 0x40;
  return b.toString("hex");
};
const event = (action: string, subject: string | null, details: Record<string, unknown> = {}) => ({
  at: new Date(),
  actor: "test",
  action,
  subject,
  details,
});

/** What CertificateAuthority.issue() commits, optionally consuming a token the way enroll() does. */
async function issueLike(tx: StoreTx, tokenId?: string): Promise<string> {
  const s = serial();
  await tx.insertCertificate(sampleCertificate({ serial: s, name: `n-${s}`, issuerSerial: "ca" }));
  await tx.appendAudit(event("cert.issue", s));
  if (tokenId !== undefined && !(await tx.markTokenUsed(tokenId, new Date(), s))) {
    throw new Error("token used");
  }
  return s;
}

/** What revoke() commits: read, skip if already revoked, update, audit. True when this call revoked it. */
async function revokeLike(tx: StoreTx, s: string): Promise<boolean> {
  const rec = await tx.getCertificate(s);
  if (!rec || rec.status === "revoked") return false;
  await tx.updateCertificate(s, {
    status: "revoked",
    revokedAt: new Date(),
    revocationReason: "keyCompromise",
  });
  await tx.appendAudit(event("cert.revoke", s));
  return true;
}

/** What generateCrl() commits: the revoked list and the next CRL number, audited. */
async function crlLike(tx: StoreTx): Promise<{ number: number; entries: number }> {
  const entries = (await tx.listRevoked("ca", new Date(0))).length;
  const number = await tx.nextCounter("crl:ca");
  await tx.appendAudit(event("crl.generate", "ca", { crlNumber: number, entries }));
  return { number, entries };
}

describe("PostgreSQL store", { skip }, () => {
  it("keeps two nodes (two pools) correct while both hammer tokens, issuance, revocation, CRLs and the audit log", async () => {
    const url = await schemas.create();
    const [a, b] = await Promise.all([
      openPostgresStore(url, { poolSize: 6 }),
      openPostgresStore(url, { poolSize: 6 }),
    ]);
    const nodes: Store[] = [a, b];
    try {
      const tokens = Array.from({ length: 40 }, () => sampleToken({ id: randomBytes(8).toString("hex") }));
      for (const t of tokens) await a.insertToken(t);

      // 1. Every token enrolled for from both nodes at once, four attempts per token.
      const enrolled = await Promise.allSettled(
        tokens.flatMap((t, i) =>
          [0, 1, 2, 3].map((k) => (nodes[(i + k) % 2] as Store).transaction((tx) => issueLike(tx, t.id))),
        ),
      );
      const won = enrolled.filter((r) => r.status === "fulfilled");
      for (const r of enrolled) {
        if (r.status === "rejected") assert.equal((r.reason as Error).message, "token used");
      }
      assert.equal(won.length, tokens.length, "each token used exactly once");
      for (const t of tokens) assert.ok((await b.getToken(t.id))?.usedBySerial);

      // 2. Plain issuance and bare audit appends from both nodes, interleaved.
      const issued = await Promise.all(
        Array.from({ length: 60 }, (_, i) => (nodes[i % 2] as Store).transaction((tx) => issueLike(tx))),
      );
      await Promise.all(
        Array.from({ length: 60 }, (_, i) => (nodes[i % 2] as Store).appendAudit(event("note", null, { i }))),
      );

      // 3. Revoke every plain certificate twice (once per node) while both nodes publish CRLs.
      const [revocations, crls] = await Promise.all([
        Promise.all(issued.flatMap((s) => nodes.map((n) => n.transaction((tx) => revokeLike(tx, s))))),
        Promise.all(Array.from({ length: 20 }, (_, i) => (nodes[i % 2] as Store).transaction(crlLike))),
      ]);
      assert.equal(revocations.filter(Boolean).length, issued.length, "each certificate revoked once");
      const finalCrl = await a.transaction(crlLike);
      assert.equal(finalCrl.entries, issued.length, "the newest CRL lists every revocation");

      // CRL numbers are unique and, in commit order (the audit log's order), strictly increasing,
      // and a higher number never lists fewer revocations.
      const events: AuditEvent[] = await b.listAudit();
      const crlEvents = events
        .filter((e) => e.action === "crl.generate")
        .map((e) => e.details as { crlNumber: number; entries: number });
      assert.equal(crlEvents.length, crls.length + 1);
      for (let i = 1; i < crlEvents.length; i++) {
        const [prev, cur] = [crlEvents[i - 1], crlEvents[i]] as [
          (typeof crlEvents)[0],
          (typeof crlEvents)[0],
        ];
        assert.ok(cur.crlNumber > prev.crlNumber, `CRL ${cur.crlNumber} after ${prev.crlNumber}`);
        assert.ok(cur.entries >= prev.entries, `CRL ${cur.crlNumber} lists no fewer than ${prev.crlNumber}`);
      }

      // Counts match exactly, serials are unique, and the chain is one chain.
      const certs = await a.findCertificates();
      assert.equal(certs.length, tokens.length + issued.length);
      assert.equal(new Set(certs.map((c) => c.serial)).size, certs.length);
      const count = (action: string) => events.filter((e) => e.action === action).length;
      assert.equal(count("cert.issue"), tokens.length + issued.length);
      assert.equal(count("note"), 60);
      assert.equal(count("cert.revoke"), issued.length);
      assert.deepEqual(await a.verifyAudit(), { ok: true, count: events.length });
      assert.deepEqual(await b.verifyAudit(), { ok: true, count: events.length });
    } finally {
      await Promise.all(nodes.map((n) => n.close()));
    }
  });

  it("keeps three processes on one schema correct: one chain, one counter, each token used once", async () => {
    const url = await schemas.create();
    const setup = await openPostgresStore(url, { poolSize: 1 });
    const tokenIds = Array.from({ length: 30 }, () => randomBytes(8).toString("hex"));
    for (const id of tokenIds) await setup.insertToken(sampleToken({ id }));
    const postgresModule = fileURLToPath(new URL("./postgres.ts", import.meta.url));
    const script = `
      const { openPostgresStore } = await import(${JSON.stringify(postgresModule)});
      const [url, ids] = [process.argv[1], JSON.parse(process.argv[2])];
      const store = await openPostgresStore(url, { poolSize: 4 });
      let won = 0;
      const work = [];
      for (let i = 0; i < 150; i++) {
        work.push(store.transaction(async (tx) => {
          await tx.appendAudit({ at: new Date(), actor: "worker:" + process.pid, action: "load", subject: null, details: { i } });
          await tx.nextCounter("shared");
          const id = ids[i % ids.length];
          if (i < ids.length && await tx.markTokenUsed(id, new Date(), "0" + process.pid)) won++;
        }));
      }
      await Promise.all(work);
      await store.close();
      process.stdout.write(String(won));`;
    const run = () =>
      new Promise<number>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          ["--import", "tsx", "--input-type=module", "-e", script, url, JSON.stringify(tokenIds)],
          { stdio: ["ignore", "pipe", "inherit"] },
        );
        let output = "";
        child.stdout.on("data", (d) => {
          output += d;
        });
        child.on("error", reject);
        child.on("exit", (code) =>
          code === 0 ? resolve(Number(output)) : reject(new Error(`worker exited ${code}`)),
        );
      });
    try {
      const wins = await Promise.all([run(), run(), run()]);
      assert.equal(
        wins.reduce((a, b) => a + b, 0),
        tokenIds.length,
        `token wins per process: ${wins}`,
      );
      assert.deepEqual(await setup.verifyAudit(), { ok: true, count: 450 });
      assert.equal(await setup.nextCounter("shared"), 451);
      assert.equal((await setup.findTokens({ used: false })).length, 0);
    } finally {
      await setup.close();
    }
  });

  it("lets several nodes open (and migrate) one empty schema at the same time", async () => {
    const url = await schemas.create();
    const stores = await Promise.all(
      Array.from({ length: 5 }, () => openPostgresStore(url, { poolSize: 2 })),
    );
    try {
      await Promise.all(stores.map((s, i) => s.appendAudit(event("start", null, { i }))));
      assert.deepEqual(await (stores[0] as Store).verifyAudit(), { ok: true, count: 5 });
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  it("waits for another node's migration longer than its statement timeout", async () => {
    const url = await schemas.create();
    const schema = new URL(url).searchParams.get("schema") as string;
    // Another node migrating: the migration lock (class "mtlt", this schema) held for 1.5 s.
    const other = new pg.Client({ connectionString: withDefaultUser(TEST_POSTGRES_URL) });
    other.on("error", () => {});
    await other.connect();
    try {
      await other.query("select pg_advisory_lock($1, hashtext($2))", [0x6d746c74, schema]);
      const started = Date.now();
      const release = setTimeout(() => {
        other.query("select pg_advisory_unlock($1, hashtext($2))", [0x6d746c74, schema]).catch(() => {});
      }, 1_500);
      const store = await openPostgresStore(url, { statementTimeoutMs: 300 });
      clearTimeout(release);
      try {
        assert.ok(Date.now() - started >= 1_400, "it waited for the lock");
        // Statements are bounded again once the migration is over.
        await store.setSetting("after", "migrate");
        assert.equal(await store.getSetting("after"), "migrate");
      } finally {
        await store.close();
      }
    } finally {
      await other.end().catch(() => {});
    }
  });

  it("carries on after the server ends its connections (a restart or failover), reporting the cut as E_UNAVAILABLE", async () => {
    const app = `mtls-test-${process.pid}-${randomBytes(3).toString("hex")}`;
    const store = await openPostgresStore(await schemas.create(), { applicationName: app, poolSize: 2 });
    const admin = await openPostgresStore(await schemas.create(), { poolSize: 1 });
    const terminate = () =>
      kyselyTamper(
        admin,
        `select pg_terminate_backend(pid) from pg_stat_activity where application_name = '${app}'`,
      );
    try {
      await store.setSetting("before", "1");
      // Idle connections cut: the next calls open new ones.
      await terminate();
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await store.getSetting("before"), "1");
      // A transaction cut in the middle: E_UNAVAILABLE, nothing of it stored, the store still works.
      await assert.rejects(
        store.transaction(async (tx) => {
          await tx.setSetting("during", "1");
          await terminate();
          await tx.setSetting("during-2", "1");
        }),
        (err) => isMtlsError(err, "E_UNAVAILABLE") && /lost the connection/.test(err.message),
      );
      await store.setSetting("after", "1");
      assert.equal(await store.getSetting("during"), undefined);
      assert.equal(await store.getSetting("after"), "1");
    } finally {
      await Promise.all([store.close(), admin.close()]);
    }
  });

  it("keeps CAs in two schemas of one database apart", async () => {
    const [one, two] = await Promise.all([
      openPostgresStore(await schemas.create()),
      openPostgresStore(await schemas.create()),
    ]);
    try {
      await one.setSetting("ca.name", "one");
      assert.equal(await two.getSetting("ca.name"), undefined);
    } finally {
      await Promise.all([one.close(), two.close()]);
    }
  });

  it("says in one line that the server is unreachable, naming the host and never the password", async () => {
    await assert.rejects(
      openPostgresStore("postgres://mtls:s3cret-pw@127.0.0.1:1/test", { connectTimeoutMs: 2000 }),
      (err) =>
        isMtlsError(err, "E_UNAVAILABLE") &&
        err.message.includes("127.0.0.1:1/test") &&
        !err.message.includes("s3cret-pw") &&
        !err.message.includes("\n"),
    );
  });

  it("reports a missing database or schema as E_STORE", async () => {
    const u = new URL(TEST_POSTGRES_URL);
    u.pathname = "/mtls_no_such_database";
    await assert.rejects(
      openPostgresStore(u.toString()),
      (err) => isMtlsError(err, "E_STORE") && /mtls_no_such_database/.test(err.message),
    );
    await assert.rejects(
      openPostgresStore(TEST_POSTGRES_URL, { schema: "mtls_no_such_schema" }),
      (err) => isMtlsError(err, "E_STORE") && /schema/.test(err.message),
    );
  });

  it("gives up waiting for another node's transaction after the statement timeout, with E_STORE", async () => {
    const url = await schemas.create();
    const [a, b] = await Promise.all([
      openPostgresStore(url),
      openPostgresStore(url, { statementTimeoutMs: 300 }),
    ]);
    try {
      let release = () => {};
      const held = new Promise<void>((r) => {
        release = r;
      });
      let entered = () => {};
      const inside = new Promise<void>((r) => {
        entered = r;
      });
      const holder = a.transaction(async (tx) => {
        await tx.setSetting("holder", "a");
        entered();
        await held;
      });
      await inside;
      await assert.rejects(
        b.transaction((tx) => tx.setSetting("waiter", "b")),
        (err) => isMtlsError(err, "E_STORE") && /statement timeout/.test(err.message),
      );
      release();
      await holder;
      assert.equal(await b.getSetting("holder"), "a");
      assert.equal(await b.getSetting("waiter"), undefined);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
