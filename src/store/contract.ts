import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { sql } from "kysely";
import { isMtlsError } from "../errors.js";
import { computeAuditHash, GENESIS_HASH } from "./audit-chain.js";
import { isDuplicateSerial } from "./conflict.js";
import { consoleContract } from "./console-contract.js";
import type { KyselyStore } from "./kysely-store.js";
import type { CertificateRecord, EnrollmentTokenRecord, Store } from "./types.js";

/**
 * The behaviour every Store must have, as node:test cases. Each case opens a fresh, empty store
 * with `open()` and closes it afterwards. Tampering cases need `tamper`, which runs one raw SQL
 * statement (portable: UPDATE/DELETE on audit_events) against the store's database; without it
 * they are skipped.
 */
export interface StoreContractOptions {
  tamper?: (store: Store, statement: string) => Promise<void>;
}

/** A `tamper` hook for any store built on KyselyStore (SQLite and PostgreSQL alike). */
export async function kyselyTamper(store: Store, statement: string): Promise<void> {
  await sql.raw(statement).execute((store as KyselyStore).kysely);
}

const T0 = Date.parse("2025-01-01T00:00:00.000Z");
const at = (days: number) => new Date(T0 + days * 86_400_000);

let serialCounter = 0;
/** A valid record with a fresh serial and fingerprint; `over` replaces fields. */
export function sampleCertificate(over: Partial<CertificateRecord> = {}): CertificateRecord {
  serialCounter += 1;
  const serial = over.serial ?? (0x7f00 + serialCounter).toString(16).padStart(32, "0");
  return {
    serial,
    name: "alice",
    profile: "client",
    subject: "CN=alice,O=Example",
    sans: ["email:alice@example.com", "uri:spiffe://example.com/alice"],
    keyType: "ec-p256",
    notBefore: at(0),
    notAfter: at(30),
    status: "valid",
    revokedAt: null,
    revocationReason: null,
    fingerprint: `${serial}${"ab".repeat(16)}`,
    issuerSerial: "0a",
    pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    certPath: null,
    keyPath: null,
    p12Path: null,
    createdAt: at(0),
    ...over,
  };
}

let tokenCounter = 0;
/** An unused token with a fresh id; `over` replaces fields. */
export function sampleToken(over: Partial<EnrollmentTokenRecord> = {}): EnrollmentTokenRecord {
  tokenCounter += 1;
  return {
    id: (0xa000 + tokenCounter).toString(16).padStart(16, "0"),
    secretHash: "5e".repeat(32),
    name: "web",
    profile: "server",
    sans: ["dns:web.example.com", "ip:10.0.0.1"],
    // 400 days in ms: more than a 32-bit integer column holds.
    ttlMs: 400 * 86_400_000,
    organizationalUnit: ["ops", "eu"],
    createdAt: at(0),
    createdBy: "cli:test",
    expiresAt: at(1),
    usedAt: null,
    usedBySerial: null,
    ...over,
  };
}

const event = (action: string, details: Record<string, unknown> = {}) => ({
  at: new Date(),
  actor: "cli:test",
  action,
  subject: null,
  details,
});

const serialsOf = (records: CertificateRecord[]) => records.map((r) => r.serial);

export function storeContract(
  name: string,
  open: () => Promise<Store>,
  options: StoreContractOptions = {},
): void {
  const withStore = (fn: (store: Store) => Promise<void>) => async () => {
    const store = await open();
    try {
      await fn(store);
    } finally {
      await store.close();
    }
  };
  const tamper = options.tamper;
  const tamperIt = (
    title: string,
    fn: (store: Store, tamper: NonNullable<typeof options.tamper>) => Promise<void>,
  ) =>
    tamper
      ? it(
          title,
          withStore((store) => fn(store, tamper)),
        )
      : it(title, { skip: "no tamper hook" }, () => {});

  describe(`Store contract: ${name}`, () => {
    describe("certificates", () => {
      it(
        "stores a certificate and returns it field for field",
        withStore(async (store) => {
          const rec = sampleCertificate({
            certPath: "/state/issued/alice.crt",
            keyPath: "/state/issued/alice.key",
            p12Path: "/state/issued/alice.p12",
            issuerSerial: null,
          });
          await store.insertCertificate(rec);
          assert.deepEqual(await store.getCertificate(rec.serial), rec);
          assert.equal(await store.getCertificate("ffff"), undefined);
        }),
      );

      it(
        "finds certificates by each filter and their combination, oldest first",
        withStore(async (store) => {
          const a = sampleCertificate({
            name: "alice",
            notAfter: at(10),
            issuerSerial: "i1",
            createdAt: at(1),
          });
          const b = sampleCertificate({
            name: "alice",
            status: "revoked",
            notAfter: at(40),
            issuerSerial: "i1",
            createdAt: at(2),
          });
          const c = sampleCertificate({
            name: "web",
            profile: "server",
            notAfter: at(5),
            issuerSerial: "i2",
            createdAt: at(3),
          });
          const d = sampleCertificate({
            name: "root",
            profile: "ca-root",
            notAfter: at(3650),
            issuerSerial: null,
            createdAt: at(0),
          });
          const e = sampleCertificate({ name: "ocsp", profile: "ocsp", status: "pending", createdAt: at(4) });
          for (const rec of [c, a, e, b, d]) await store.insertCertificate(rec);

          assert.deepEqual(serialsOf(await store.findCertificates()), serialsOf([d, a, b, c, e]));
          assert.deepEqual(serialsOf(await store.findCertificates({})), serialsOf([d, a, b, c, e]));
          assert.deepEqual(serialsOf(await store.findCertificates({ name: "alice" })), serialsOf([a, b]));
          assert.deepEqual(serialsOf(await store.findCertificates({ name: "nobody" })), []);
          assert.deepEqual(serialsOf(await store.findCertificates({ status: "revoked" })), serialsOf([b]));
          assert.deepEqual(
            serialsOf(await store.findCertificates({ status: ["pending", "revoked"] })),
            serialsOf([b, e]),
          );
          assert.deepEqual(serialsOf(await store.findCertificates({ status: [] })), []);
          assert.deepEqual(serialsOf(await store.findCertificates({ profile: "server" })), serialsOf([c]));
          assert.deepEqual(
            serialsOf(await store.findCertificates({ profile: ["ca-root", "ocsp"] })),
            serialsOf([d, e]),
          );
          assert.deepEqual(serialsOf(await store.findCertificates({ profile: [] })), []);
          // expiringBefore is inclusive: a certificate expiring exactly then is included.
          assert.deepEqual(
            serialsOf(await store.findCertificates({ expiringBefore: at(10) })),
            serialsOf([a, c]),
          );
          assert.deepEqual(serialsOf(await store.findCertificates({ expiringBefore: at(4) })), []);
          assert.deepEqual(
            serialsOf(await store.findCertificates({ issuerSerial: "i1" })),
            serialsOf([a, b]),
          );
          assert.deepEqual(
            serialsOf(
              await store.findCertificates({
                name: "alice",
                status: ["valid", "revoked"],
                profile: "client",
                expiringBefore: at(30),
                issuerSerial: "i1",
              }),
            ),
            serialsOf([a]),
          );
        }),
      );

      it(
        "updates only the fields in the patch",
        withStore(async (store) => {
          const rec = sampleCertificate();
          await store.insertCertificate(rec);
          const revokedAt = at(7);
          await store.updateCertificate(rec.serial, {
            status: "revoked",
            revokedAt,
            revocationReason: "keyCompromise",
          });
          const revoked = {
            ...rec,
            status: "revoked" as const,
            revokedAt,
            revocationReason: "keyCompromise" as const,
          };
          assert.deepEqual(await store.getCertificate(rec.serial), revoked);
          await store.updateCertificate(rec.serial, { certPath: "/x.crt", keyPath: null, p12Path: "/x.p12" });
          assert.deepEqual(await store.getCertificate(rec.serial), {
            ...revoked,
            certPath: "/x.crt",
            p12Path: "/x.p12",
          });
          await store.updateCertificate(rec.serial, {
            revokedAt: null,
            revocationReason: null,
            status: "valid",
          });
          assert.deepEqual(await store.getCertificate(rec.serial), {
            ...rec,
            certPath: "/x.crt",
            p12Path: "/x.p12",
          });
        }),
      );

      it(
        "refuses to update an unknown serial with E_NOT_FOUND",
        withStore(async (store) => {
          await assert.rejects(store.updateCertificate("beef", { status: "revoked" }), (err) =>
            isMtlsError(err, "E_NOT_FOUND"),
          );
          await assert.rejects(store.updateCertificate("beef", {}), (err) => isMtlsError(err, "E_NOT_FOUND"));
        }),
      );

      it(
        "rejects a duplicate serial or fingerprint with E_STORE and keeps the first",
        withStore(async (store) => {
          const rec = sampleCertificate();
          await store.insertCertificate(rec);
          const isStoreError = (err: unknown) => isMtlsError(err, "E_STORE") && err.cause !== undefined;
          await assert.rejects(
            store.insertCertificate({ ...rec, name: "mallory", fingerprint: "00" }),
            isStoreError,
          );
          await assert.rejects(store.insertCertificate({ ...rec, serial: "0b" }), isStoreError);
          assert.deepEqual(await store.findCertificates(), [rec]);
          // A repeated serial is recognisable (the CA then signs again under a fresh one); a
          // repeated fingerprint is not a serial conflict.
          await assert.rejects(
            store.transaction((tx) => tx.insertCertificate({ ...rec, fingerprint: "01" })),
            (err) => isDuplicateSerial(err),
          );
          await assert.rejects(
            store.insertCertificate({ ...rec, serial: "0c" }),
            (err) => isStoreError(err) && !isDuplicateSerial(err),
          );
        }),
      );

      it(
        "lists the revoked, unexpired certificates of one issuer with only what a CRL needs",
        withStore(async (store) => {
          const revokedAt = new Date("2025-01-05T06:07:08.009Z");
          const revoked = (over: Partial<CertificateRecord>) =>
            sampleCertificate({ status: "revoked", revokedAt, revocationReason: "keyCompromise", ...over });
          const a = revoked({ issuerSerial: "i1", notAfter: at(30) });
          const b = revoked({ issuerSerial: "i1", notAfter: at(31), revocationReason: "unspecified" });
          const expired = revoked({ issuerSerial: "i1", notAfter: at(10) });
          const otherIssuer = revoked({ issuerSerial: "i2", notAfter: at(30) });
          const valid = sampleCertificate({ issuerSerial: "i1", notAfter: at(30) });
          const pending = sampleCertificate({ issuerSerial: "i1", status: "pending", notAfter: at(30) });
          for (const rec of [a, b, expired, otherIssuer, valid, pending]) await store.insertCertificate(rec);

          const bySerial = <T extends { serial: string }>(list: T[]) =>
            [...list].sort((x, y) => (x.serial < y.serial ? -1 : 1));
          const listed = await store.listRevoked("i1", at(10));
          assert.deepEqual(
            bySerial(listed),
            bySerial([
              { serial: a.serial, revokedAt, reason: "keyCompromise" },
              { serial: b.serial, revokedAt, reason: "unspecified" },
            ]),
          );
          // notAfterAfter is exclusive: a certificate expiring exactly then has left the CRL.
          assert.deepEqual(
            (await store.listRevoked("i1", at(30))).map((r) => r.serial),
            [b.serial],
          );
          assert.deepEqual(await store.listRevoked("i3", at(0)), []);
          assert.deepEqual(
            (await store.transaction((tx) => tx.listRevoked("i2", at(0)))).map((r) => r.serial),
            [otherIssuer.serial],
          );
          // It sees revocations made in the same transaction.
          await store.transaction(async (tx) => {
            await tx.updateCertificate(valid.serial, {
              status: "revoked",
              revokedAt,
              revocationReason: "superseded",
            });
            assert.equal((await tx.listRevoked("i1", at(10))).length, 3);
          });
        }),
      );
    });

    describe("transactions", () => {
      it(
        "commit every write and return the function's value",
        withStore(async (store) => {
          const rec = sampleCertificate();
          const result = await store.transaction(async (tx) => {
            await tx.insertCertificate(rec);
            await tx.appendAudit({ ...event("cert.issue"), subject: rec.serial });
            await tx.setSetting("ca.serial", rec.serial);
            return tx.nextCounter("crl:0a");
          });
          assert.equal(result, 1);
          assert.deepEqual(await store.getCertificate(rec.serial), rec);
          assert.equal((await store.listAudit()).length, 1);
          assert.equal(await store.getSetting("ca.serial"), rec.serial);
          assert.equal(await store.nextCounter("crl:0a"), 2);
        }),
      );

      it(
        "see their own writes before committing",
        withStore(async (store) => {
          await store.transaction(async (tx) => {
            const rec = sampleCertificate({ name: "inside" });
            await tx.insertCertificate(rec);
            assert.deepEqual(await tx.getCertificate(rec.serial), rec);
            assert.deepEqual(serialsOf(await tx.findCertificates({ name: "inside" })), [rec.serial]);
            await tx.updateCertificate(rec.serial, { status: "revoked" });
            assert.equal((await tx.getCertificate(rec.serial))?.status, "revoked");
            const first = await tx.appendAudit(event("one"));
            const second = await tx.appendAudit(event("two"));
            assert.equal(second.prevHash, first.hash);
          });
          assert.deepEqual(await store.verifyAudit(), { ok: true, count: 2 });
        }),
      );

      it(
        "roll back every write when the function throws, and rethrow its error unchanged",
        withStore(async (store) => {
          await store.setSetting("mode", "before");
          const rec = sampleCertificate();
          const boom = new Error("boom");
          await assert.rejects(
            store.transaction(async (tx) => {
              await tx.insertCertificate(rec);
              await tx.appendAudit(event("cert.issue"));
              await tx.nextCounter("crl:0a");
              await tx.setSetting("mode", "after");
              throw boom;
            }),
            (err) => err === boom,
          );
          assert.equal(await store.getCertificate(rec.serial), undefined);
          assert.deepEqual(await store.listAudit(), []);
          assert.deepEqual(await store.verifyAudit(), { ok: true, count: 0 });
          assert.equal(await store.nextCounter("crl:0a"), 1);
          assert.equal(await store.getSetting("mode"), "before");
        }),
      );

      it(
        "roll back earlier writes when a later statement fails",
        withStore(async (store) => {
          const existing = sampleCertificate();
          await store.insertCertificate(existing);
          const fresh = sampleCertificate();
          await assert.rejects(
            store.transaction(async (tx) => {
              await tx.insertCertificate(fresh);
              await tx.appendAudit(event("cert.issue"));
              await tx.insertCertificate(existing);
            }),
            (err) => isMtlsError(err, "E_STORE"),
          );
          assert.equal(await store.getCertificate(fresh.serial), undefined);
          assert.deepEqual(await store.listAudit(), []);
        }),
      );
    });

    describe("audit log", () => {
      it(
        "chains events from the genesis hash and lists them in order",
        withStore(async (store) => {
          const when = new Date("2025-03-04T05:06:07.089Z");
          const first = await store.appendAudit({
            at: when,
            actor: "cli:root",
            action: "ca.init",
            subject: "0a",
            details: { z: 1, a: { y: [1, "two", null], b: true }, when, gone: undefined },
          });
          assert.equal(first.seq, 1);
          assert.equal(first.prevHash, GENESIS_HASH);
          assert.deepEqual(first.at, when);
          // Stored as JSON: dates become ISO strings, undefined members vanish.
          assert.deepEqual(first.details, {
            z: 1,
            a: { y: [1, "two", null], b: true },
            when: when.toISOString(),
          });
          assert.equal(first.hash, computeAuditHash(GENESIS_HASH, first));
          const second = await store.appendAudit(event("cert.issue", { serial: "0b" }));
          const third = await store.appendAudit(event("cert.revoke"));
          assert.equal(second.seq, 2);
          assert.equal(second.prevHash, first.hash);
          assert.equal(third.prevHash, second.hash);

          assert.deepEqual(await store.listAudit(), [first, second, third]);
          assert.deepEqual(await store.listAudit({ afterSeq: 1 }), [second, third]);
          assert.deepEqual(await store.listAudit({ afterSeq: 1, limit: 1 }), [second]);
          assert.deepEqual(await store.listAudit({ limit: 2 }), [first, second]);
          assert.deepEqual(await store.listAudit({ afterSeq: 3 }), []);
          assert.deepEqual(await store.verifyAudit(), { ok: true, count: 3 });
        }),
      );

      it(
        "filters by action, pages within the filter, and knows its last seq",
        withStore(async (store) => {
          assert.equal(await store.lastAuditSeq(), 0);
          const actions = ["cert.issue", "cert.revoke", "crl.generate", "cert.revoke", "cert.issue"];
          const events = [];
          for (const action of actions) events.push(await store.appendAudit(event(action)));
          const [i1, r1, c1, r2, i2] = events;
          assert.equal(await store.lastAuditSeq(), i2?.seq);
          assert.deepEqual(await store.listAudit({ actions: ["cert.revoke"] }), [r1, r2]);
          assert.deepEqual(await store.listAudit({ actions: ["cert.revoke"], afterSeq: r1?.seq }), [r2]);
          assert.deepEqual(await store.listAudit({ actions: ["cert.revoke"], limit: 1 }), [r1]);
          assert.deepEqual(await store.listAudit({ actions: ["cert.revoke", "crl.generate"] }), [r1, c1, r2]);
          assert.deepEqual(await store.listAudit({ actions: ["cert.issue"], afterSeq: i1?.seq }), [i2]);
          assert.deepEqual(await store.listAudit({ actions: ["nothing.like.this"] }), []);
          assert.deepEqual(await store.listAudit({ actions: [] }), []);
          // A rolled-back append leaves the last seq where it was.
          await assert.rejects(
            store.transaction(async (tx) => {
              await tx.appendAudit(event("cert.revoke"));
              throw new Error("roll back");
            }),
            /roll back/,
          );
          assert.equal(await store.lastAuditSeq(), i2?.seq);
        }),
      );

      it(
        "lists revoked certificates with their names when asked",
        withStore(async (store) => {
          const rec = sampleCertificate({
            name: "carol",
            issuerSerial: "i9",
            status: "revoked",
            revokedAt: at(1),
            revocationReason: "keyCompromise",
          });
          await store.insertCertificate(rec);
          assert.deepEqual(await store.listRevoked("i9", at(0), { names: true }), [
            { serial: rec.serial, revokedAt: at(1), reason: "keyCompromise", name: "carol" },
          ]);
          assert.deepEqual(await store.listRevoked("i9", at(0)), [
            { serial: rec.serial, revokedAt: at(1), reason: "keyCompromise" },
          ]);
        }),
      );

      it(
        "verifies an empty log and one longer than a page",
        withStore(async (store) => {
          assert.deepEqual(await store.verifyAudit(), { ok: true, count: 0 });
          await store.transaction(async (tx) => {
            for (let i = 0; i < 2345; i++) await tx.appendAudit(event("load", { i }));
          });
          assert.deepEqual(await store.verifyAudit(), { ok: true, count: 2345 });
        }),
      );

      it(
        "keeps one chain when appends run concurrently",
        withStore(async (store) => {
          const events = await Promise.all(
            Array.from({ length: 25 }, (_, i) => store.appendAudit(event("parallel", { i }))),
          );
          assert.deepEqual(
            events.map((e) => e.seq).sort((x, y) => x - y),
            Array.from({ length: 25 }, (_, i) => i + 1),
          );
          assert.deepEqual(await store.verifyAudit(), { ok: true, count: 25 });
        }),
      );

      const appendFour = async (store: Store) => {
        for (const action of ["a", "b", "c", "d"]) await store.appendAudit(event(action, { action }));
      };

      tamperIt("reports an event whose details were changed", async (store, tamper) => {
        await appendFour(store);
        await tamper(store, `UPDATE audit_events SET details = '{"action":"x"}' WHERE seq = 2`);
        const result = await store.verifyAudit();
        assert.equal(result.ok, false);
        assert.equal(result.brokenAt, 2);
        assert.equal(result.count, 1);
        assert.ok(result.reason);
      });

      tamperIt("reports an event whose time was changed", async (store, tamper) => {
        await appendFour(store);
        await tamper(store, `UPDATE audit_events SET at = '2000-01-01T00:00:00.000Z' WHERE seq = 3`);
        assert.deepEqual(
          { ...(await store.verifyAudit()), reason: undefined },
          { ok: false, count: 2, brokenAt: 3, reason: undefined },
        );
      });

      tamperIt("reports a deleted event in the middle", async (store, tamper) => {
        await appendFour(store);
        await tamper(store, "DELETE FROM audit_events WHERE seq = 2");
        const result = await store.verifyAudit();
        assert.equal(result.ok, false);
        assert.equal(result.brokenAt, 3);
        assert.equal(result.count, 1);
      });

      tamperIt("reports a deleted first event", async (store, tamper) => {
        await appendFour(store);
        await tamper(store, "DELETE FROM audit_events WHERE seq = 1");
        const result = await store.verifyAudit();
        assert.equal(result.ok, false);
        assert.equal(result.brokenAt, 2);
        assert.equal(result.count, 0);
      });

      tamperIt("reports a deleted event renumbered to hide the gap", async (store, tamper) => {
        await appendFour(store);
        await tamper(store, "DELETE FROM audit_events WHERE seq = 2");
        await tamper(store, "UPDATE audit_events SET seq = 2 WHERE seq = 3");
        const result = await store.verifyAudit();
        assert.equal(result.ok, false);
        assert.equal(result.brokenAt, 2);
      });
    });

    describe("enrollment tokens", () => {
      it(
        "stores a token and returns it field for field",
        withStore(async (store) => {
          const token = sampleToken();
          const plain = sampleToken({ ttlMs: null, organizationalUnit: [], sans: [] });
          await store.insertToken(token);
          await store.transaction((tx) => tx.insertToken(plain));
          assert.deepEqual(await store.getToken(token.id), token);
          assert.deepEqual(await store.getToken(plain.id), plain);
          assert.equal(await store.getToken("00000000deadbeef"), undefined);
        }),
      );

      it(
        "rejects a duplicate id with E_STORE and keeps the first",
        withStore(async (store) => {
          const token = sampleToken();
          await store.insertToken(token);
          await assert.rejects(store.insertToken({ ...token, name: "mallory" }), (err) =>
            isMtlsError(err, "E_STORE"),
          );
          assert.deepEqual(await store.getToken(token.id), token);
        }),
      );

      it(
        "marks a token used once: the second call returns false and changes nothing",
        withStore(async (store) => {
          const token = sampleToken();
          await store.insertToken(token);
          assert.equal(await store.markTokenUsed(token.id, at(0.5), "0abc"), true);
          assert.equal(await store.markTokenUsed(token.id, at(0.7), "0def"), false);
          assert.equal(await store.transaction((tx) => tx.markTokenUsed(token.id, at(0.8), "0123")), false);
          assert.deepEqual(await store.getToken(token.id), {
            ...token,
            usedAt: at(0.5),
            usedBySerial: "0abc",
          });
          assert.equal(await store.markTokenUsed("00000000deadbeef", at(0.5), "0abc"), false);
        }),
      );

      it(
        "lets exactly one of many racing transactions use a token",
        withStore(async (store) => {
          const token = sampleToken();
          await store.insertToken(token);
          const results = await Promise.allSettled(
            Array.from({ length: 8 }, (_, i) =>
              store.transaction(async (tx) => {
                await tx.getToken(token.id);
                return tx.markTokenUsed(token.id, at(0.5), `0${i}`);
              }),
            ),
          );
          // A store may also refuse a loser outright (PostgreSQL: a serialization failure).
          const won = results.filter((r) => r.status === "fulfilled" && r.value);
          assert.equal(won.length, 1);
          for (const r of results) {
            if (r.status === "rejected") assert.ok(isMtlsError(r.reason, "E_STORE"), String(r.reason));
          }
          assert.match((await store.getToken(token.id))?.usedBySerial ?? "", /^0[0-7]$/);
        }),
      );

      it(
        "keeps a token unused when the transaction that used it rolls back",
        withStore(async (store) => {
          const token = sampleToken();
          await store.insertToken(token);
          const boom = new Error("boom");
          await assert.rejects(
            store.transaction(async (tx) => {
              assert.equal(await tx.markTokenUsed(token.id, at(0.5), "0abc"), true);
              assert.equal((await tx.getToken(token.id))?.usedBySerial, "0abc");
              throw boom;
            }),
            (err) => err === boom,
          );
          assert.deepEqual(await store.getToken(token.id), token);
          assert.equal(await store.markTokenUsed(token.id, at(0.6), "0def"), true);
        }),
      );

      it(
        "finds tokens by name and use, oldest first",
        withStore(async (store) => {
          const a = sampleToken({ name: "web", createdAt: at(2) });
          const b = sampleToken({ name: "web", createdAt: at(1) });
          const c = sampleToken({ name: "alice", profile: "client", createdAt: at(3) });
          for (const t of [a, b, c]) await store.insertToken(t);
          await store.markTokenUsed(a.id, at(4), "0abc");
          const ids = (list: EnrollmentTokenRecord[]) => list.map((t) => t.id);
          assert.deepEqual(ids(await store.findTokens()), [b.id, a.id, c.id]);
          assert.deepEqual(ids(await store.findTokens({ name: "web" })), [b.id, a.id]);
          assert.deepEqual(ids(await store.findTokens({ used: true })), [a.id]);
          assert.deepEqual(ids(await store.findTokens({ used: false })), [b.id, c.id]);
          assert.deepEqual(ids(await store.findTokens({ name: "web", used: false })), [b.id]);
          assert.deepEqual(await store.findTokens({ name: "nobody" }), []);
        }),
      );
    });

    consoleContract(withStore);

    describe("counters and settings", () => {
      it(
        "counts from 1, strictly upward, independently per name",
        withStore(async (store) => {
          assert.equal(await store.nextCounter("crl:0a"), 1);
          assert.equal(await store.nextCounter("crl:0a"), 2);
          assert.equal(await store.nextCounter("crl:0b"), 1);
          assert.equal(await store.nextCounter("crl:0a"), 3);
          assert.equal(await store.transaction((tx) => tx.nextCounter("crl:0b")), 2);
        }),
      );

      it(
        "never hands out one value twice under concurrency",
        withStore(async (store) => {
          const values = await Promise.all(Array.from({ length: 40 }, () => store.nextCounter("n")));
          assert.deepEqual(
            values.sort((x, y) => x - y),
            Array.from({ length: 40 }, (_, i) => i + 1),
          );
        }),
      );

      it(
        "gets, sets and overwrites settings",
        withStore(async (store) => {
          assert.equal(await store.getSetting("ca.name"), undefined);
          await store.setSetting("ca.name", "Example CA");
          await store.setSetting("other", "");
          assert.equal(await store.getSetting("ca.name"), "Example CA");
          await store.setSetting("ca.name", "Renamed CA");
          assert.equal(await store.getSetting("ca.name"), "Renamed CA");
          assert.equal(await store.getSetting("other"), "");
        }),
      );
    });
  });
}
