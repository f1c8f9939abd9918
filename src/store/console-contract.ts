import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import type { CertificateRecord, CertificateSearch, CertificateSummary, Store } from "./types.js";

/**
 * The admin console's queries (searchCertificates, certificateStats, listAuditPage) as part of the
 * Store contract (contract.ts runs this for every store). `withStore` opens a fresh, empty store.
 */

const NOW = new Date("2026-03-10T12:00:00.000Z");
const DAY = 86_400_000;
const fromNow = (days: number) => new Date(NOW.getTime() + days * DAY);

let counter = 0;
function cert(over: Partial<CertificateRecord> = {}): CertificateRecord {
  counter += 1;
  const serial = over.serial ?? (0x5c00 + counter).toString(16).padStart(32, "0");
  return {
    serial,
    name: `c${counter}`,
    profile: "client",
    subject: `CN=c${counter},O=Example`,
    sans: [],
    keyType: "ec-p256",
    notBefore: fromNow(-10),
    notAfter: fromNow(60),
    status: "valid",
    revokedAt: null,
    revocationReason: null,
    fingerprint: `${serial}${"cd".repeat(16)}`,
    issuerSerial: "0a",
    pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    certPath: "/state/issued/x.crt",
    keyPath: null,
    p12Path: null,
    createdAt: fromNow(-10),
    ...over,
  };
}

const summary = (rec: CertificateRecord): CertificateSummary => {
  const { pem: _pem, certPath: _c, keyPath: _k, p12Path: _p, ...rest } = rec;
  return rest;
};

const names = (page: { rows: CertificateSummary[] }) => page.rows.map((r) => r.name);
const sorted = (list: string[]) => [...list].sort();

async function insertAll(store: Store, recs: CertificateRecord[]): Promise<void> {
  await store.transaction(async (tx) => {
    for (const rec of recs) await tx.insertCertificate(rec);
  });
}

const badInput = (err: unknown) => isMtlsError(err) && err.code === "E_BAD_INPUT";

export function consoleContract(
  withStore: (fn: (store: Store) => Promise<void>) => () => Promise<void>,
): void {
  describe("console queries", () => {
    it(
      "searchCertificates: each view selects by status and notAfter relative to now, boundaries included",
      withStore(async (store) => {
        await insertAll(store, [
          cert({ name: "far", notAfter: fromNow(60) }),
          cert({ name: "in3d", notAfter: fromNow(3) }),
          cert({ name: "at7d", notAfter: fromNow(7) }),
          cert({ name: "in20d", notAfter: fromNow(20) }),
          cert({ name: "at30d", notAfter: fromNow(30) }),
          cert({ name: "past30d", notAfter: new Date(fromNow(30).getTime() + 1) }),
          cert({ name: "atnow", notAfter: NOW }),
          cert({ name: "expired", notAfter: fromNow(-5) }),
          cert({
            name: "revoked",
            status: "revoked",
            revokedAt: fromNow(-1),
            revocationReason: "superseded",
          }),
          cert({ name: "revokedold", status: "revoked", notAfter: fromNow(-40), revokedAt: fromNow(-50) }),
          cert({ name: "pending", status: "pending" }),
          cert({ name: "aborted", status: "aborted" }),
        ]);
        const view = async (v: CertificateSearch["view"]) => {
          const page = await store.searchCertificates({ view: v, limit: 100, now: NOW });
          assert.equal(page.total, page.rows.length, `total of ${v}`);
          return sorted(names(page));
        };
        assert.deepEqual(await view("valid"), sorted(["far", "in3d", "at7d", "in20d", "at30d", "past30d"]));
        assert.deepEqual(await view("expiring7"), sorted(["in3d", "at7d"]));
        assert.deepEqual(await view("expiring30"), sorted(["in3d", "at7d", "in20d", "at30d"]));
        assert.deepEqual(await view("expired"), sorted(["atnow", "expired"]));
        assert.deepEqual(await view("revoked"), sorted(["revoked", "revokedold"]));
        assert.deepEqual(await view("pending"), ["pending"]);
        assert.equal((await view("all")).length, 12);
        assert.equal((await view(undefined)).length, 12);
      }),
    );

    it(
      "searchCertificates: returns summaries (no PEM, no file paths), field for field",
      withStore(async (store) => {
        const rec = cert({
          name: "alice",
          sans: ["email:alice@example.com", "uri:spiffe://example.com/alice"],
          revokedAt: fromNow(-1),
          status: "revoked",
          revocationReason: "keyCompromise",
          issuerSerial: null,
        });
        await insertAll(store, [rec]);
        const page = await store.searchCertificates({ limit: 10, now: NOW });
        assert.deepEqual(page, { rows: [summary(rec)], total: 1 });
        assert.equal("pem" in (page.rows[0] as object), false);
      }),
    );

    it(
      "searchCertificates: text matches name, subject and SANs case-insensitively, serial and fingerprint by prefix",
      withStore(async (store) => {
        const alice = cert({ name: "Alice.Smith", subject: "CN=Alice.Smith,O=Example" });
        const bob = cert({ name: "bob", subject: "CN=bob,O=Globex Corp" });
        const carol = cert({ name: "carol", sans: ["email:carol@EXAMPLE.org", "uri:spiffe://acme/carol"] });
        const hexy = cert({
          name: "hexy",
          serial: "7e57ab01cafe0000000000000000abcd",
          fingerprint: `f1a9e7${"00".repeat(29)}`,
        });
        await insertAll(store, [alice, bob, carol, hexy]);
        const find = async (text: string) =>
          sorted(names(await store.searchCertificates({ text, limit: 50, now: NOW })));
        assert.deepEqual(await find("alice"), ["Alice.Smith"]);
        assert.deepEqual(await find("SMITH"), ["Alice.Smith"]);
        assert.deepEqual(await find("globex corp"), ["bob"]);
        assert.deepEqual(await find("example.org"), ["carol"]);
        assert.deepEqual(await find("spiffe://acme"), ["carol"]);
        assert.deepEqual(await find("  bob  "), ["bob"], "surrounding blanks are ignored");
        // Serial prefix, any case, colons ignored; a serial's middle is not a prefix.
        assert.deepEqual(await find("7E:57:AB"), ["hexy"]);
        assert.deepEqual(await find("cafe0000"), []);
        assert.deepEqual(await find("f1:a9:e7"), ["hexy"]);
        assert.deepEqual(await find(""), sorted(["Alice.Smith", "bob", "carol", "hexy"]));
        assert.deepEqual(await find("nobody"), []);
        const page = await store.searchCertificates({ text: "example", limit: 1, now: NOW });
        assert.equal(page.rows.length, 1);
        assert.equal(page.total, 3, "total counts every match (alice, carol, hexy), not the page");
      }),
    );

    it(
      "searchCertificates: %, _ and \\ in the text are literal characters, not wildcards",
      withStore(async (store) => {
        await insertAll(store, [
          cert({ name: "a%b", subject: "CN=a%b" }),
          cert({ name: "a_b", subject: "CN=a_b" }),
          cert({ name: "axb", subject: "CN=axb" }),
          cert({ name: "a\\b", subject: "CN=a\\\\b" }),
        ]);
        const find = async (text: string) =>
          sorted(names(await store.searchCertificates({ text, limit: 50, now: NOW })));
        assert.deepEqual(await find("a%b"), ["a%b"]);
        assert.deepEqual(await find("a_b"), ["a_b"]);
        assert.deepEqual(await find("%"), ["a%b"]);
        assert.deepEqual(await find("_"), ["a_b"]);
        assert.deepEqual(await find("a\\b"), ["a\\b"]);
      }),
    );

    it(
      "searchCertificates: sorts by each column both ways, ties broken by serial, and pages without gaps or repeats",
      withStore(async (store) => {
        const recs = Array.from({ length: 23 }, (_, i) =>
          cert({
            serial: (0x1000 + ((i * 7) % 23)).toString(16).padStart(32, "0"),
            name: `n${i % 4}`,
            profile: (["client", "server", "peer"] as const)[i % 3],
            keyType: i % 2 === 0 ? "ec-p256" : "rsa-2048",
            notAfter: fromNow((i % 5) - 1),
            notBefore: fromNow(-(i % 6)),
            createdAt: fromNow(-(i % 7)),
            status: i % 9 === 0 ? "revoked" : "valid",
          }),
        );
        await insertAll(store, recs);
        const key: Record<string, (r: CertificateRecord) => string> = {
          name: (r) => r.name,
          notAfter: (r) => r.notAfter.toISOString(),
          notBefore: (r) => r.notBefore.toISOString(),
          serial: (r) => r.serial,
          status: (r) => (r.status === "valid" && r.notAfter <= NOW ? "expired" : r.status),
          profile: (r) => r.profile,
          keyType: (r) => r.keyType,
          createdAt: (r) => r.createdAt.toISOString(),
        };
        for (const [sort, of] of Object.entries(key)) {
          for (const direction of ["asc", "desc"] as const) {
            const sign = direction === "asc" ? 1 : -1;
            const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
            const expected = [...recs]
              .sort((a, b) => sign * (cmp(of(a), of(b)) || cmp(a.serial, b.serial)))
              .map((r) => r.serial);
            const got: string[] = [];
            for (let offset = 0; offset < 30; offset += 5) {
              const page = await store.searchCertificates({
                sort: sort as CertificateSearch["sort"],
                direction,
                offset,
                limit: 5,
                now: NOW,
              });
              assert.equal(page.total, 23);
              got.push(...page.rows.map((r) => r.serial));
            }
            assert.deepEqual(got, expected, `${sort} ${direction}`);
            // The same order through the text-search path (every name contains "n").
            const viaText = await store.searchCertificates({
              text: "n",
              sort: sort as CertificateSearch["sort"],
              direction,
              offset: 3,
              limit: 7,
              now: NOW,
            });
            assert.deepEqual(
              viaText.rows.map((r) => r.serial),
              expected.slice(3, 10),
              `${sort} ${direction} with text`,
            );
            assert.equal(viaText.total, 23);
          }
        }
        const pastEnd = await store.searchCertificates({ text: "n", offset: 40, limit: 5, now: NOW });
        assert.deepEqual(pastEnd, { rows: [], total: 23 });
        const defaults = await store.searchCertificates({ limit: 23, now: NOW });
        assert.deepEqual(
          defaults.rows.map((r) => r.serial),
          [...recs].sort((a, b) => (a.name + a.serial < b.name + b.serial ? -1 : 1)).map((r) => r.serial),
          "default: name ascending",
        );
      }),
    );

    it(
      "searchCertificates: a filtered page is the same whichever way the store reads it (near the start or deep)",
      withStore(async (store) => {
        // Mostly valid certificates: a small page near the start is cheapest through the sort's own
        // index, a deep one through the matches; both must give exactly the order computed here.
        const recs = Array.from({ length: 90 }, (_, i) =>
          cert({
            name: `f${(i * 37) % 11}`,
            notAfter: fromNow(5 + ((i * 13) % 17)),
            notBefore: fromNow(-((i * 5) % 7)),
            createdAt: fromNow(-((i * 3) % 9)),
            profile: i % 4 === 0 ? "server" : "client",
            status: i % 10 === 0 ? "revoked" : "valid",
          }),
        );
        await insertAll(store, recs);
        const key: Record<string, (r: CertificateRecord) => string> = {
          name: (r) => r.name,
          notAfter: (r) => r.notAfter.toISOString(),
          notBefore: (r) => r.notBefore.toISOString(),
          createdAt: (r) => r.createdAt.toISOString(),
        };
        const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
        for (const [sort, of] of Object.entries(key)) {
          for (const direction of ["asc", "desc"] as const) {
            const filters: [Partial<CertificateSearch>, (r: CertificateRecord) => boolean][] = [
              [{ view: "valid" }, (r) => r.status === "valid"],
              [{ profile: ["client"] }, (r) => r.profile === "client"],
            ];
            for (const [filter, keep] of filters) {
              const sign = direction === "asc" ? 1 : -1;
              const expected = recs
                .filter(keep)
                .sort((a, b) => sign * (cmp(of(a), of(b)) || cmp(a.serial, b.serial)))
                .map((r) => r.serial);
              for (const offset of [0, 2, 40, expected.length - 1, expected.length]) {
                const page = await store.searchCertificates({
                  ...filter,
                  sort: sort as CertificateSearch["sort"],
                  direction,
                  offset,
                  limit: 2,
                  now: NOW,
                });
                const what = `${sort} ${direction} ${JSON.stringify(filter)} offset ${offset}`;
                assert.deepEqual(
                  page.rows.map((r) => r.serial),
                  expected.slice(offset, offset + 2),
                  what,
                );
                assert.equal(page.total, expected.length, what);
              }
            }
          }
        }
      }),
    );

    it(
      "searchCertificates: filters by profile together with view and text; an empty profile list matches nothing",
      withStore(async (store) => {
        await insertAll(store, [
          cert({ name: "web1", profile: "server" }),
          cert({ name: "web2", profile: "server", status: "revoked" }),
          cert({ name: "webclient", profile: "client" }),
          cert({ name: "root", profile: "ca-root" }),
        ]);
        const find = async (q: Partial<CertificateSearch>) =>
          sorted(names(await store.searchCertificates({ limit: 50, now: NOW, ...q })));
        assert.deepEqual(await find({ profile: ["server"] }), ["web1", "web2"]);
        assert.deepEqual(await find({ profile: ["server", "ca-root"], view: "valid" }), ["root", "web1"]);
        assert.deepEqual(await find({ profile: ["server", "client"], text: "web", view: "revoked" }), [
          "web2",
        ]);
        assert.deepEqual(await store.searchCertificates({ profile: [], limit: 5, now: NOW }), {
          rows: [],
          total: 0,
        });
      }),
    );

    it(
      "searchCertificates: refuses a page size outside 1..500, a negative offset, an unknown sort or view",
      withStore(async (store) => {
        for (const q of [
          { limit: 0 },
          { limit: 501 },
          { limit: 1.5 },
          { limit: 10, offset: -1 },
          { limit: 10, sort: "pem" },
          { limit: 10, sort: "toString" },
          { limit: 10, view: "everything" },
          { limit: 10, direction: "up" },
        ]) {
          await assert.rejects(
            store.searchCertificates({ now: NOW, ...q } as CertificateSearch),
            badInput,
            JSON.stringify(q),
          );
        }
        await assert.rejects(store.searchCertificates({ limit: 10, now: new Date(Number.NaN) }), badInput);
      }),
    );

    it(
      "certificateStats: counts by status as the views do, and valid expiries per UTC day for the coming days",
      withStore(async (store) => {
        const at = (iso: string) => new Date(iso);
        await insertAll(store, [
          cert({ notAfter: at("2026-03-10T18:00:00.000Z") }), // today, later: expiring7
          cert({ notAfter: at("2026-03-11T00:00:00.000Z") }), // tomorrow midnight
          cert({ notAfter: at("2026-03-11T23:59:59.999Z") }),
          cert({ notAfter: fromNow(7) }), // expiring7, last instant
          cert({ notAfter: fromNow(20) }),
          cert({ notAfter: fromNow(45) }),
          cert({ notAfter: fromNow(200) }), // valid, beyond the chart
          cert({ notAfter: NOW }), // expired
          cert({ notAfter: fromNow(-3) }), // expired
          cert({ notAfter: fromNow(2), status: "revoked" }), // not in the chart
          cert({ notAfter: fromNow(2), status: "pending" }),
          cert({ notAfter: fromNow(2), status: "aborted" }),
          cert({ notAfter: fromNow(2), status: "aborted" }),
          // The CA's own certificates are shown apart on the overview: not counted, not charted.
          cert({ notAfter: fromNow(5), profile: "ca-intermediate" }),
          cert({ notAfter: fromNow(6), profile: "ca-root" }),
        ]);
        const stats = await store.certificateStats(NOW);
        assert.deepEqual(stats.byStatus, {
          valid: 7,
          expiring7: 4,
          expiring30: 5,
          expired: 2,
          revoked: 1,
          pending: 1,
          aborted: 2,
        });
        assert.equal(stats.expiriesByDay.length, 91, "today and the 90 days after it");
        assert.equal(stats.expiriesByDay[0]?.day, "2026-03-10");
        assert.equal(stats.expiriesByDay.at(-1)?.day, "2026-06-08");
        const nonZero = Object.fromEntries(
          stats.expiriesByDay.filter((d) => d.count > 0).map((d) => [d.day, d.count]),
        );
        assert.deepEqual(nonZero, {
          "2026-03-10": 1,
          "2026-03-11": 2,
          "2026-03-17": 1,
          "2026-03-30": 1,
          "2026-04-24": 1,
        });
        const week = await store.certificateStats(NOW, 7);
        assert.equal(week.expiriesByDay.length, 8);
        assert.equal(
          week.expiriesByDay.reduce((n, d) => n + d.count, 0),
          4,
        );
        await assert.rejects(store.certificateStats(NOW, 0), badInput);
      }),
    );

    it(
      "certificateStats: an empty store counts zero everywhere",
      withStore(async (store) => {
        const stats = await store.certificateStats(NOW, 3);
        assert.deepEqual(stats, {
          byStatus: { valid: 0, expiring7: 0, expiring30: 0, expired: 0, revoked: 0, pending: 0, aborted: 0 },
          expiriesByDay: ["2026-03-10", "2026-03-11", "2026-03-12", "2026-03-13"].map((day) => ({
            day,
            count: 0,
          })),
        });
      }),
    );

    it(
      "listAuditPage: newest first, paged by beforeSeq, filtered by exact actor and action",
      withStore(async (store) => {
        const all = [];
        for (let i = 0; i < 12; i++) {
          all.push(
            await store.appendAudit({
              at: new Date(NOW.getTime() + i * 1000),
              actor: i % 3 === 0 ? "api:0a" : "cli:root",
              action: i % 2 === 0 ? "cert.issue" : "cert.revoke",
              subject: null,
              details: { i },
            }),
          );
        }
        const newest = [...all].reverse();
        assert.deepEqual(await store.listAuditPage({ limit: 5 }), newest.slice(0, 5));
        assert.deepEqual(await store.listAuditPage({ limit: 5, beforeSeq: 8 }), newest.slice(5, 10));
        assert.deepEqual(await store.listAuditPage({ limit: 5, beforeSeq: 1 }), []);
        assert.deepEqual(
          await store.listAuditPage({ limit: 50, actor: "api:0a" }),
          newest.filter((e) => e.actor === "api:0a"),
        );
        assert.deepEqual(
          await store.listAuditPage({ limit: 2, actor: "cli:root", action: "cert.revoke", beforeSeq: 11 }),
          newest
            .filter((e) => e.actor === "cli:root" && e.action === "cert.revoke" && e.seq < 11)
            .slice(0, 2),
        );
        assert.deepEqual(
          await store.listAuditPage({ limit: 5, actor: "api:0" }),
          [],
          "actor is exact, not a prefix",
        );
        for (const q of [{ limit: 0 }, { limit: 1001 }, { limit: 5, beforeSeq: 0 }]) {
          await assert.rejects(store.listAuditPage(q), badInput, JSON.stringify(q));
        }
      }),
    );
  });
}
