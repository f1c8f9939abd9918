import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";
import { type StatePaths, statePaths } from "../config/state.js";
import { crlToPem } from "../pki/crl.js";
import { crlSignedBy, indexCrl } from "../pki/crl-index.js";
import type { CertificateRecord } from "../store/index.js";
import { type CertificateAuthority, CRL_VALIDITY_MS } from "./authority.js";
import { CrlPublisher, type PublishedCrls } from "./crl-publisher.js";
import { initCa } from "./init.js";
import { openCa } from "./open.js";

const run = promisify(execFile);
const PASS = "test";
const root = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "mtls-crlpub-"));
const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
  rmSync(root, { recursive: true, force: true });
});

let template: string | undefined;
let fixtures = 0;

interface Fixture {
  paths: StatePaths;
  ca: CertificateAuthority;
  clock: { now: Date };
}

async function freshCa(): Promise<Fixture> {
  if (!template) {
    template = join(root, "template");
    await initCa({ paths: statePaths(template), name: "Acme", passphrase: PASS, actor: "cli:test" });
  }
  const paths = statePaths(join(root, `ca-${++fixtures}`));
  cpSync(template, paths.dir, { recursive: true });
  const clock = { now: new Date() };
  const ca = await openCa(paths, { env: { MTLS_PASSPHRASE: PASS }, clock: () => clock.now });
  cleanup.push(() => ca.store.close());
  return { paths, ca, clock };
}

function publisher(f: Fixture, opts: ConstructorParameters<typeof CrlPublisher>[1] = {}): CrlPublisher {
  const p = new CrlPublisher(f.ca, opts);
  cleanup.push(() => p.close());
  return p;
}

const issue = async (ca: CertificateAuthority, name: string) =>
  (await ca.issue({ profile: "client", name, sans: [], actor: "cli:test" })).certificate;

const crlEvents = async (ca: CertificateAuthority) =>
  (await ca.store.listAudit()).filter(
    (e) => e.action === "crl.generate" && e.subject === ca.intermediate.serial,
  ).length;

const lists = (crls: PublishedCrls, serial: string) => indexCrl(crls.intermediate).entries.has(serial);

async function waitFor(
  cond: () => Promise<boolean> | boolean,
  ms = 5_000,
  what = "condition",
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe("CrlPublisher", () => {
  test("start() signs fresh CRLs, writes STATE/ca/crl.pem as publishCrls does, and current() serves them from memory", async () => {
    const f = await freshCa();
    const p = publisher(f);
    await p.start();
    const crls = await p.current();
    assert.equal(crls.crlNumber, 2n, "init signed #1");
    const head = indexCrl(crls.intermediate);
    assert.ok(crlSignedBy(head, f.ca.intermediate));
    assert.ok(crlSignedBy(indexCrl(crls.root), f.ca.root));
    assert.equal(crls.nextUpdate.getTime() - crls.thisUpdate.getTime(), CRL_VALIDITY_MS);
    assert.equal(readFileSync(f.paths.crl, "utf8"), crlToPem(crls.intermediate) + crlToPem(crls.root));
    const events = await crlEvents(f.ca);
    for (let i = 0; i < 5; i++) assert.equal(await p.current(), crls);
    assert.equal(await crlEvents(f.ca), events, "no signing per request");
  });

  test("a revocation is on the CRL at once, taken from revoke()'s own publication (one signing, not two)", async () => {
    const f = await freshCa();
    const p = publisher(f);
    await p.start();
    const before = await p.current();
    const events = await crlEvents(f.ca);
    const alice = await issue(f.ca, "alice");
    await f.ca.revoke([alice.serial], "keyCompromise", "cli:test");
    const after = await p.current();
    assert.ok(lists(after, alice.serial));
    assert.equal(after.crlNumber, before.crlNumber + 1n);
    assert.equal(await crlEvents(f.ca), events + 1);
    assert.equal(indexCrl(after.intermediate).entries.get(alice.serial)?.reason, "keyCompromise");
  });

  test("current() asked while revoke() is still publishing waits for a CRL that lists the revocation", async () => {
    const f = await freshCa();
    const p = publisher(f);
    await p.start();
    const alice = await issue(f.ca, "alice");
    let during: Promise<PublishedCrls> | undefined;
    // Registered after the publisher's listener: runs right after the commit, before the CRL exists.
    f.ca.events.once("revoked", () => {
      during = p.current();
    });
    await f.ca.revoke([alice.serial], "superseded", "cli:test");
    assert.ok(during);
    assert.ok(lists(await during, alice.serial));
  });

  test("when revoke() cannot publish, the publisher signs the CRL itself after the grace period", async () => {
    const f = await freshCa();
    const p = publisher(f, { graceMs: 50 });
    await p.start();
    const alice = await issue(f.ca, "alice");
    // As if revoke()'s publication had failed: only the "revoked" event.
    const rec = (await f.ca.store.getCertificate(alice.serial)) as CertificateRecord;
    await f.ca.store.updateCertificate(alice.serial, {
      status: "revoked",
      revokedAt: f.clock.now,
      revocationReason: "keyCompromise",
    });
    f.ca.events.emit("revoked", [{ ...rec, status: "revoked" }]);
    const crls = await p.current();
    assert.ok(lists(crls, alice.serial));
  });

  test("a revocation by another process is adopted from the CRL file it writes, without signing again", async () => {
    const f = await freshCa();
    const p = publisher(f);
    await p.start();
    const alice = await issue(f.ca, "alice");
    const elsewhere = await openCa(f.paths, { env: { MTLS_PASSPHRASE: PASS } });
    cleanup.push(() => elsewhere.store.close());
    const events = await crlEvents(f.ca);
    await elsewhere.revoke([alice.serial], "keyCompromise", "cli:other");
    await waitFor(async () => lists(await p.current(), alice.serial), 5_000, "the CRL file to be adopted");
    assert.equal(await crlEvents(f.ca), events + 1, "only the other process signed");
    assert.equal(readFileSync(f.paths.crl, "utf8").length > 0, true);
  });

  test("re-signs at the chosen fraction of the CRL's life (timer) and when asked after nextUpdate", async () => {
    const f = await freshCa();
    const p = publisher(f, { refreshFraction: 1e-9 }); // due a millisecond after thisUpdate
    await p.start();
    const first = await p.current();
    await waitFor(
      async () => (await p.current()).crlNumber > first.crlNumber,
      5_000,
      "the timer's re-signing",
    );
    p.close();

    const q = publisher(f);
    await q.start();
    const held = await q.current();
    f.clock.now = new Date(held.nextUpdate.getTime() + 1000);
    const fresh = await q.current();
    assert.ok(fresh.crlNumber > held.crlNumber);
    assert.ok(fresh.thisUpdate.getTime() >= held.nextUpdate.getTime());
  });

  test("current() without start() signs on first use; an old CRL never replaces a newer one", async () => {
    const f = await freshCa();
    const p = publisher(f, { watchCrlFile: false });
    const a = await p.current();
    const b = await p.refresh();
    assert.equal(b.crlNumber, a.crlNumber + 1n);
    // A late, older publication (as an out-of-order event would bring) is ignored.
    f.ca.events.emit("crlPublished", { intermediate: a.intermediate, root: a.root }, []);
    assert.equal((await p.current()).crlNumber, b.crlNumber);
  });

  test("100,000 revoked certificates: a correct CRL, published well within the 2 s goal", async (t) => {
    const f = await freshCa();
    const now = f.clock.now.getTime();
    const N = 100_000;
    const serials: string[] = [];
    await f.ca.store.transaction(async (tx) => {
      for (let i = 0; i < N + 1000; i++) {
        const serial = randomBytes(16);
        serial[0] = ((serial[0] as number) & 0x7f) | 0x40;
        const hex = serial.toString("hex");
        const revoked = i < N;
        if (revoked) serials.push(hex);
        await tx.insertCertificate({
          serial: hex,
          name: `c${i}`,
          profile: "client",
          subject: `O=Acme, CN=c${i}`,
          sans: [],
          keyType: "ec-p256",
          notBefore: new Date(now - 86_400_000),
          // a few revoked ones have expired: they leave the CRL
          notAfter: new Date(now + (i % 1000 === 999 ? -1000 : 86_400_000)),
          status: revoked ? "revoked" : "valid",
          revokedAt: revoked ? new Date(now - i * 1000) : null,
          revocationReason: revoked ? (i % 2 ? "keyCompromise" : "unspecified") : null,
          fingerprint: randomBytes(32).toString("hex"),
          issuerSerial: f.ca.intermediate.serial,
          pem: "-",
          certPath: null,
          keyPath: null,
          p12Path: null,
          createdAt: new Date(now),
        });
      }
    });
    const p = publisher(f, { watchCrlFile: false });
    const t0 = performance.now();
    const crls = await p.refresh();
    const ms = performance.now() - t0;
    const expected = serials.filter((_, i) => i % 1000 !== 999);
    const idx = indexCrl(crls.intermediate);
    assert.equal(idx.entries.size, expected.length);
    for (const s of expected.slice(0, 1000)) assert.ok(idx.entries.has(s));
    assert.equal(idx.entries.get(expected[1] as string)?.reason, "keyCompromise");
    assert.equal(idx.entries.get(expected[0] as string)?.reason, "unspecified");
    assert.equal(idx.entries.get(expected[0] as string)?.revokedAt.getTime(), Math.floor(now / 1000) * 1000);
    assert.ok(crlSignedBy(idx, f.ca.intermediate));

    const der = join(root, "big.crl");
    writeFileSync(der, crls.intermediate);
    const text = await run("openssl", ["crl", "-inform", "DER", "-in", der, "-noout", "-text"], {
      maxBuffer: 512 * 1024 * 1024,
    });
    assert.equal((text.stdout.match(/Serial Number:/g) ?? []).length, expected.length);
    t.diagnostic(`100,000-entry CRL published in ${ms.toFixed(0)} ms (${crls.intermediate.length} bytes)`);
    assert.ok(ms < 10_000, `took ${ms} ms`); // the goal is 2 s; loose here, measured in bench/ca.ts
  });
});
