import assert from "node:assert/strict";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import pg from "pg";
import { TEST_ACTOR as ACTOR, caFixtures, TEST_PASSPHRASE } from "../../test/fixtures/ca.js";
import { postgresUnavailable, TEST_POSTGRES_URL, testSchemas } from "../../test/fixtures/postgres.js";
import { statePaths } from "../config/state.js";
import { parseCrls } from "../pki/crl.js";
import type { San } from "../pki/names.js";
import { buildOcspRequest, parseOcspResponse } from "../pki/ocsp.js";
import type { Store } from "../store/index.js";
import { revocationChannel, withDefaultUser } from "../store/postgres.js";
import type { CertificateAuthority, RevokedOrigin } from "./authority.js";
import { CrlPublisher } from "./crl-publisher.js";
import { initCa } from "./init.js";
import { OcspResponder } from "./ocsp-responder.js";
import { openCa } from "./open.js";
import { RevocationFeed, type RevocationFeedOptions, type RevocationNotice } from "./revocation-feed.js";

const DNS: San[] = [{ type: "dns", value: "web.acme.test" }];
const { freshCa, reopen } = caFixtures("revocation-feed");
const feeds: RevocationFeed[] = [];
after(async () => {
  for (const f of feeds) await f.close();
});

async function startFeed(
  ca: CertificateAuthority,
  opts: RevocationFeedOptions = {},
): Promise<RevocationFeed> {
  const feed = new RevocationFeed(ca, opts);
  feeds.push(feed);
  await feed.start();
  return feed;
}

/** The next notice for `serial`, or a rejection after `ms`. */
function nextNotice(feed: RevocationFeed, serial: string, ms: number): Promise<RevocationNotice> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      feed.off("revocation", on);
      reject(new Error(`no revocation of ${serial} within ${ms} ms`));
    }, ms);
    const on = (n: RevocationNotice) => {
      if (n.serial !== serial) return;
      clearTimeout(timer);
      feed.off("revocation", on);
      resolve(n);
    };
    feed.on("revocation", on);
  });
}

/** Every ca.events "revoked" of `ca`, with its origin. */
function recordRevoked(ca: CertificateAuthority) {
  const seen: { serials: string[]; foreign: boolean }[] = [];
  ca.events.on("revoked", (records, origin?: RevokedOrigin) =>
    seen.push({ serials: records.map((r) => r.serial), foreign: origin?.foreign === true }),
  );
  return seen;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 50 ms until it is true; fails after `ms`. */
async function until(what: string, ms: number, check: () => boolean | Promise<boolean>): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    if (await check()) return performance.now() - t0;
    await sleep(50);
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

describe("RevocationFeed on SQLite", () => {
  test("a revocation by another process on the same state directory reaches the feed within 2 s", async () => {
    const f = await freshCa();
    const issued = await f.ca.issue({ profile: "server", name: "web", sans: DNS, actor: ACTOR });
    const feed = await startFeed(f.ca);
    assert.equal(feed.state().listening, null, "SQLite has no LISTEN");
    const events = recordRevoked(f.ca);
    // Another CertificateAuthority on its own connection to the same file: what `mtls revoke` is.
    const other = await reopen(f.paths, f.clock);
    const t0 = performance.now();
    const arrived = nextNotice(feed, issued.record.serial, 2000);
    await other.revoke([issued.record.serial], "keyCompromise", ACTOR);
    const notice = await arrived;
    const ms = performance.now() - t0;
    assert.ok(ms < 2000, `${ms} ms`);
    assert.deepEqual(
      { ...notice, seq: undefined },
      {
        seq: undefined,
        serial: issued.record.serial,
        issuerSerial: f.ca.intermediate.serial,
        revokedAt: f.clock.now,
        reason: "keyCompromise",
        name: "web",
      },
    );
    const [revokeEvent] = await f.ca.store.listAudit({ actions: ["cert.revoke"] });
    assert.equal(notice.seq, revokeEvent?.seq);
    // Announced to this process's responder and publisher as someone else's revocation.
    await until("ca.events revoked", 1000, () => events.length > 0);
    assert.deepEqual(events, [{ serials: [issued.record.serial], foreign: true }]);
    assert.ok(feed.state().lastSeq >= notice.seq);
  });

  test("announces its own process's revocations as notices but not again on ca.events", async () => {
    const f = await freshCa();
    const a = await f.ca.issue({ profile: "server", name: "a", sans: DNS, actor: ACTOR });
    const b = await f.ca.issue({ profile: "server", name: "b", sans: DNS, actor: ACTOR });
    // Polling fast, so polls race revoke()'s own announcement.
    const feed = await startFeed(f.ca, { pollMs: 5 });
    const events = recordRevoked(f.ca);
    const notices: RevocationNotice[] = [];
    feed.on("revocation", (n) => notices.push(n));
    await f.ca.revoke([a.record.serial], "superseded", ACTOR);
    await f.ca.revoke([b.record.serial], "keyCompromise", ACTOR);
    await until("two notices", 2000, () => notices.length === 2);
    await sleep(400); // a re-announcement would have come by now
    assert.deepEqual(
      notices.map((n) => [n.serial, n.reason]),
      [
        [a.record.serial, "superseded"],
        [b.record.serial, "keyCompromise"],
      ],
    );
    assert.ok((notices[0] as RevocationNotice).seq < (notices[1] as RevocationNotice).seq);
    assert.deepEqual(events, [
      { serials: [a.record.serial], foreign: false },
      { serials: [b.record.serial], foreign: false },
    ]);
  });

  test("a read between revoke()'s commit and its announcement does not take it for another node's", async () => {
    const f = await freshCa();
    const a = await f.ca.issue({ profile: "server", name: "a", sans: DNS, actor: ACTOR });
    const feed = await startFeed(f.ca, { pollMs: 60_000 });
    const events = recordRevoked(f.ca);
    // Hold revoke() after its commit until the feed has read the event: the window a fast poll or a
    // NOTIFY can hit. Without revoke()'s in-flight mark the feed would announce it as foreign.
    const store = f.ca.store;
    const commit = store.transaction.bind(store);
    let held = false;
    store.transaction = (async (fn: Parameters<Store["transaction"]>[0]) => {
      const result = await commit(fn);
      if (held) return result; // revoke()'s own transaction only, not the CRL publication's
      held = true;
      const seen = nextNotice(feed, a.record.serial, 2000);
      feed.wake();
      await seen;
      return result;
    }) as Store["transaction"];
    try {
      await f.ca.revoke([a.record.serial], "keyCompromise", ACTOR);
    } finally {
      store.transaction = commit;
    }
    await sleep(50);
    assert.deepEqual(events, [{ serials: [a.record.serial], foreign: false }]);
  });

  test("snapshot lists the revoked unexpired leaves as of a seq; catchUp replays revocations after a seq", async () => {
    const f = await freshCa();
    const feed = await startFeed(f.ca, { pageSize: 2 });
    const before = await feed.snapshot();
    assert.deepEqual(before.entries, []);
    const serials: string[] = [];
    for (let i = 0; i < 5; i++) {
      serials.push(
        (await f.ca.issue({ profile: "client", name: `c${i}`, sans: [], actor: ACTOR })).record.serial,
      );
    }
    for (const s of serials.slice(0, 4)) await f.ca.revoke([s], "keyCompromise", ACTOR);
    const snap = await feed.snapshot();
    assert.equal(snap.seq, await f.ca.store.lastAuditSeq());
    assert.deepEqual(
      snap.entries.map((e) => [e.serial, e.name, e.reason, e.issuerSerial]).sort(),
      serials
        .slice(0, 4)
        .map((s, i) => [s, `c${i}`, "keyCompromise", f.ca.intermediate.serial])
        .sort(),
    );
    // Paged (pageSize 2) over four revocations and their CRL events.
    const all: RevocationNotice[] = [];
    for await (const n of feed.catchUp(before.seq)) all.push(n);
    assert.deepEqual(
      all.map((n) => n.serial),
      serials.slice(0, 4),
    );
    const tail: RevocationNotice[] = [];
    for await (const n of feed.catchUp((all[1] as RevocationNotice).seq)) tail.push(n);
    assert.deepEqual(
      tail.map((n) => n.serial),
      serials.slice(2, 4),
    );
  });

  test("on one machine, the CRL publisher adopts the other process's CRL instead of signing another", async () => {
    const f = await freshCa();
    const issued = await f.ca.issue({ profile: "server", name: "web", sans: DNS, actor: ACTOR });
    const crl = new CrlPublisher(f.ca, { actor: "system:test-crl" });
    await crl.start();
    const feed = await startFeed(f.ca);
    const events = recordRevoked(f.ca);
    try {
      const other = await reopen(f.paths, f.clock);
      await other.revoke([issued.record.serial], "keyCompromise", ACTOR);
      await until("the foreign announcement", 3000, () => events.length > 0);
      const listed = async () =>
        parseCrls((await crl.current()).intermediate)[0]?.index.entries.has(
          issued.record.serial.replace(/^0+/, ""),
        ) ?? false;
      await until("the CRL lists it", 3000, listed);
      await sleep(500); // past the publisher's grace for foreign revocations
      const signedHere = (await f.ca.store.listAudit({ actions: ["crl.generate"] })).filter(
        (e) => e.actor === "system:test-crl",
      );
      assert.equal(signedHere.length, 1, "only the CRL start() signed");
      assert.ok(feed.state().lastSeq > 0);
    } finally {
      crl.close();
    }
  });

  test("reports a failing poll and carries on once the store answers again", async () => {
    const f = await freshCa();
    let failures = 2;
    const store = new Proxy(f.ca.store, {
      get(target, prop, receiver) {
        if (prop === "listAudit" && failures > 0) {
          return async () => {
            failures--;
            throw new Error("database down");
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === "function" ? v.bind(target) : v;
      },
    }) as Store;
    const flaky = Object.create(f.ca, { store: { value: store } }) as CertificateAuthority;
    const errors: string[] = [];
    const feed = await startFeed(flaky, { pollMs: 50, onError: (e) => errors.push(e.message) });
    const other = await reopen(f.paths, f.clock);
    const issued = await other.issue({ profile: "server", name: "web", sans: DNS, actor: ACTOR });
    await other.revoke([issued.record.serial], "unspecified", ACTOR);
    await nextNotice(feed, issued.record.serial, 2000);
    assert.deepEqual(errors, ["database down", "database down"]);
  });
});

const unavailable = await postgresUnavailable();
if (unavailable !== undefined) {
  console.warn(
    `\n*** SKIPPING the revocation feed's PostgreSQL tests: ${TEST_POSTGRES_URL} is unreachable (${unavailable}).\n`,
  );
}
const skip = unavailable === undefined ? false : `PostgreSQL unreachable: ${unavailable}`;

describe("RevocationFeed on PostgreSQL, two nodes", { skip }, () => {
  const schemas = testSchemas("mtls_feed");
  const root = mkdtempSync(join(tmpdir(), "mtls-feed-"));
  const opened: CertificateAuthority[] = [];
  const closers: (() => unknown)[] = [];
  after(async () => {
    for (const c of closers) await c();
    for (const ca of opened) await ca.store.close().catch(() => undefined);
    await schemas.dropAll();
    rmSync(root, { recursive: true, force: true });
  });

  /** Node A made by `mtls init --store URL`; node B a copy of its state directory on the same URL. */
  async function twoNodes(): Promise<[CertificateAuthority, CertificateAuthority, string]> {
    const url = await schemas.create();
    const a = statePaths(join(root, `a-${opened.length}`), url);
    const b = statePaths(join(root, `b-${opened.length}`), url);
    await initCa({ paths: a, name: "Acme", passphrase: TEST_PASSPHRASE, actor: ACTOR, admin: false });
    cpSync(join(a.dir, "ca"), join(b.dir, "ca"), { recursive: true });
    const open = async (paths: typeof a) => {
      const ca = await openCa(paths, { env: { MTLS_PASSPHRASE: TEST_PASSPHRASE } });
      opened.push(ca);
      return ca;
    };
    return [await open(a), await open(b), new URL(url).searchParams.get("schema") as string];
  }

  async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = new pg.Client({ connectionString: withDefaultUser(TEST_POSTGRES_URL) });
    c.on("error", () => {});
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  }

  /** The LISTEN channel of a schema, as postgres.ts names it. */
  const channelOf = async (schema: string) =>
    revocationChannel(
      await admin(async (c) => (await c.query("select hashtext($1) as h", [schema])).rows[0].h as number),
    );

  /** A slow poll, so that whatever arrives within a second came through NOTIFY. */
  const SLOW_POLL_MS = 60_000;

  test("a revocation on node A reaches node B's feed through NOTIFY in well under a second", async () => {
    const [a, b] = await twoNodes();
    const issued = await a.issue({ profile: "server", name: "web", sans: DNS, actor: ACTOR });
    const feed = await startFeed(b, { pollMs: SLOW_POLL_MS });
    await until("LISTEN up", 5000, () => feed.state().listening === true);
    await sleep(100); // the wake-up after LISTEN has been read
    const arrived = nextNotice(feed, issued.record.serial, 5000);
    const committed = new Promise<number>((resolve) =>
      a.events.once("revoked", () => resolve(performance.now())),
    );
    await a.revoke([issued.record.serial], "keyCompromise", ACTOR);
    const notice = await arrived;
    const ms = performance.now() - (await committed);
    assert.ok(ms < 500, `${ms.toFixed(0)} ms from commit to node B's notice`);
    assert.equal(notice.issuerSerial, a.intermediate.serial);
    assert.equal(notice.name, "web");
    console.log(`# NOTIFY: node A's commit to node B's notice: ${ms.toFixed(1)} ms`);
  });

  test("notifications of another schema do not wake the feed, and a rolled-back revocation notifies nobody", async () => {
    const [a, b, schema] = await twoNodes();
    const [, , otherSchema] = await twoNodes();
    assert.notEqual(await channelOf(schema), await channelOf(otherSchema));
    const wakes: number[] = [];
    const watch = await (b.store.watchRevocations as NonNullable<Store["watchRevocations"]>).call(
      b.store,
      () => wakes.push(Date.now()),
    );
    closers.push(() => watch.close());
    await until("first wake (after LISTEN)", 5000, () => wakes.length === 1);
    const issued = await a.issue({ profile: "server", name: "web", sans: DNS, actor: ACTOR });
    await assert.rejects(
      a.store.transaction(async (tx) => {
        await tx.appendAudit({
          at: new Date(),
          actor: ACTOR,
          action: "cert.revoke",
          subject: issued.record.serial,
          details: {},
        });
        throw new Error("roll back");
      }),
      /roll back/,
    );
    await admin(async (c) => {
      await c.query("select pg_notify($1, '1')", [await channelOf(otherSchema)]);
    });
    await sleep(300);
    assert.equal(wakes.length, 1, "no wake from a rollback or another schema");
    await a.revoke([issued.record.serial], "keyCompromise", ACTOR);
    await until("wake from a committed revocation", 2000, () => wakes.length === 2);
  });

  test("reconnects after its LISTEN connection is terminated and catches up on what it missed", async () => {
    const [a, b, schema] = await twoNodes();
    const x = await a.issue({ profile: "server", name: "x", sans: DNS, actor: ACTOR });
    const states: { up: boolean; at: number }[] = [];
    const feed = await startFeed(b, {
      pollMs: SLOW_POLL_MS,
      onListening: (up) => states.push({ up, at: performance.now() }),
    });
    await until("LISTEN up", 5000, () => feed.state().listening === true);
    const channel = await channelOf(schema);
    const killed = await admin(
      async (c) =>
        (
          await c.query("select pg_terminate_backend(pid) as ok from pg_stat_activity where query = $1", [
            `listen ${channel}`,
          ])
        ).rows,
    );
    assert.equal(killed.length, 1, "one LISTEN session for this schema");
    // Revoked at once, while node B's LISTEN is down (it reconnects after 250 ms): its NOTIFY is lost.
    let committedAt = 0;
    a.events.once("revoked", () => {
      committedAt = performance.now();
    });
    const arrived = nextNotice(feed, x.record.serial, 5000);
    await a.revoke([x.record.serial], "keyCompromise", ACTOR);
    await arrived;
    const down = states.find((s) => !s.up);
    const upAgain = states.find((s) => s.up && down && s.at > down.at);
    assert.ok(down && upAgain, JSON.stringify(states));
    assert.ok(committedAt < upAgain.at, "the revocation committed while nobody listened");
    assert.equal(feed.state().listening, true);
  });

  test("node B's OCSP responder and CRL learn of a revocation made on node A within a few seconds", async () => {
    const [a, b] = await twoNodes();
    const issued = await a.issue({ profile: "server", name: "web", sans: DNS, actor: ACTOR });
    // No CRL file watch: node B is another machine and never sees node A's crl.pem.
    const ocsp = await OcspResponder.open(b, { watchCrlFile: false });
    const crl = new CrlPublisher(b, { watchCrlFile: false });
    closers.push(
      () => ocsp.close(),
      () => crl.close(),
    );
    await crl.start();
    const feed = await startFeed(b, { pollMs: SLOW_POLL_MS });
    await until("LISTEN up", 5000, () => feed.state().listening === true);
    const req = buildOcspRequest(issued.certificate, b.intermediate);
    const status = async () =>
      parseOcspResponse((await ocsp.respond(req)).der, issued.certificate, b.intermediate, { at: new Date() })
        .status;
    assert.equal(await status(), "good"); // now cached on node B
    const listed = async () =>
      parseCrls(Buffer.from((await crl.current()).intermediate))[0]?.index.entries.has(
        issued.record.serial.replace(/^0+/, ""),
      ) ?? false;
    assert.equal(await listed(), false);

    await a.revoke([issued.record.serial], "keyCompromise", ACTOR);
    const ocspMs = await until(
      "node B's OCSP says revoked",
      3000,
      async () => (await status()) === "revoked",
    );
    const crlMs = await until("node B's CRL lists it", 3000, listed);
    console.log(
      `# node B: OCSP revoked after ${ocspMs.toFixed(0)} ms, CRL after ${crlMs.toFixed(0)} ms more`,
    );
  });
});
