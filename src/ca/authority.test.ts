import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { TEST_ACTOR as ACTOR, caFixtures, rejectsCode, T0 } from "../../test/fixtures/ca.js";
import { type StatePaths, statePaths } from "../config/state.js";
import { type CertInfo, parseCertificates } from "../pki/certinfo.js";
import { type CrlInfo, parseCrls } from "../pki/crl.js";
import { pkcs8Of, privateKeyFromPem, spkiOf } from "../pki/keys.js";
import type { San } from "../pki/names.js";
import { pemEncode } from "../pki/pem.js";
import { verifyChain } from "../pki/verify.js";
import {
  BACKDATE_MS,
  type CertificateAuthority,
  CRL_VALIDITY_MS,
  ROOT_CRL_VALIDITY_MS,
} from "./authority.js";
import { issueToFiles, recoverPending } from "./deliver.js";
import type { InitOptions } from "./init.js";
import { openCa } from "./open.js";

const DAY = 86_400_000;
const YEAR = 365 * DAY;
const DNS: San[] = [{ type: "dns", value: "web.acme.test" }];

const { root, freshCa: freshState, reopen, track } = caFixtures("authority");

interface Fixture {
  paths: StatePaths;
  ca: CertificateAuthority;
  /** Mutable time: set `clock.now` to move the CA's clock. */
  clock: { now: Date };
  out: string;
}

async function freshCa(init: Partial<InitOptions> = {}): Promise<Fixture> {
  const f = await freshState(init, { stateIn: "subdir" });
  const out = join(f.dir, "out");
  mkdirSync(out, { recursive: true });
  return { ...f, out };
}

const at = (days: number) => new Date(T0.getTime() + days * DAY);
const issueServer = (ca: CertificateAuthority, name = "web", extra: { ttlMs?: number } = {}) =>
  ca.issue({ profile: "server", name, sans: DNS, actor: ACTOR, ...extra });

const bundle = (f: Fixture): CrlInfo[] => parseCrls(readFileSync(f.paths.crl, "utf8"));
const lastAudit = async (ca: CertificateAuthority) => (await ca.store.listAudit()).at(-1);

describe("CertificateAuthority.issue", () => {
  test("writes a valid row and a cert.issue audit event; the certificate verifies against the root", async () => {
    const f = await freshCa();
    const issued = await issueServer(f.ca);
    const rec = await f.ca.store.getCertificate(issued.record.serial);
    assert.ok(rec);
    assert.equal(rec.status, "valid");
    assert.equal(rec.name, "web");
    assert.equal(rec.profile, "server");
    assert.equal(rec.subject, "O=Acme, CN=web");
    assert.deepEqual(rec.sans, ["dns:web.acme.test"]);
    assert.equal(rec.keyType, "ec-p256");
    assert.equal(rec.issuerSerial, f.ca.intermediate.serial);
    assert.equal(rec.fingerprint, issued.certificate.fingerprint);
    assert.deepEqual(rec.notBefore, new Date(T0.getTime() - BACKDATE_MS));
    assert.deepEqual(rec.notAfter, at(90));
    assert.deepEqual(rec.createdAt, T0);
    assert.equal(rec.certPath, null);
    assert.equal(rec.revokedAt, null);

    const event = await lastAudit(f.ca);
    assert.equal(event?.action, "cert.issue");
    assert.equal(event?.subject, rec.serial);
    assert.equal(event?.actor, ACTOR);
    assert.deepEqual(event?.at, T0);
    assert.equal(event?.details.name, "web");
    assert.equal(event?.details.fingerprint, rec.fingerprint);
    assert.ok((await f.ca.store.verifyAudit()).ok);

    // the chain PEM is leaf + intermediate, the key is the certified one, and it all verifies
    const chain = parseCertificates(issued.chainPem);
    assert.deepEqual(
      chain.map((c) => c.serial),
      [rec.serial, f.ca.intermediate.serial],
    );
    assert.ok(issued.privateKey);
    assert.deepEqual(spkiOf(issued.privateKey), issued.certificate.spki);
    const res = await verifyChain({
      leaf: chain[0] as CertInfo,
      intermediates: chain.slice(1),
      anchors: [f.ca.root],
      at: T0,
      purpose: "server",
      crls: bundle(f),
    });
    assert.deepEqual(res.revocation, ["good (CRL #1)", "good (CRL #1)"]);
  });

  test("TTL beyond the intermediate → E_TTL, and nothing is recorded", async () => {
    const f = await freshCa({ intermediateTtlMs: YEAR, rootTtlMs: 2 * YEAR });
    const before = (await f.ca.store.findCertificates()).length;
    await rejectsCode(issueServer(f.ca, "web", { ttlMs: YEAR + DAY }), "E_TTL");
    // near the end of the intermediate's life even the default 90 days is too long
    f.clock.now = at(300);
    await rejectsCode(issueServer(f.ca), "E_TTL");
    assert.equal((await f.ca.store.findCertificates()).length, before);
    // up to the intermediate's own notAfter is fine
    const ok = await issueServer(f.ca, "web", {
      ttlMs: f.ca.intermediate.notAfter.getTime() - f.clock.now.getTime(),
    });
    assert.deepEqual(ok.certificate.notAfter, f.ca.intermediate.notAfter);
  });

  test("a lifetime that is not positive → E_TTL (not a RangeError from the certificate builder)", async () => {
    const f = await freshCa();
    for (const ttlMs of [-DAY, Number.NaN]) {
      await rejectsCode(issueServer(f.ca, "web", { ttlMs }), "E_TTL");
    }
  });

  test("with a public URL: leaves carry CDP + AIA, the intermediate points at the root CRL", async () => {
    const f = await freshCa({ publicUrl: "https://ca.acme.test/" });
    const { certificate } = await issueServer(f.ca);
    assert.deepEqual([...certificate.crlUrls], ["https://ca.acme.test/crl"]);
    assert.deepEqual([...certificate.ocspUrls], ["https://ca.acme.test/ocsp"]);
    assert.deepEqual([...f.ca.intermediate.crlUrls], ["https://ca.acme.test/crl/root"]);
    assert.equal(f.ca.settings.publicUrl, "https://ca.acme.test/");
  });

  test("certifies a given public key (CSR): no private key returned, key type from the key", async () => {
    const f = await freshCa();
    const key = generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey;
    const issued = await f.ca.issue({
      profile: "client",
      name: "alice",
      sans: [],
      spki: spkiOf(key),
      actor: ACTOR,
    });
    assert.equal(issued.privateKey, undefined);
    assert.equal(issued.record.keyType, "ec-p384");
    assert.deepEqual(issued.certificate.spki, spkiOf(key));
    const weak = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey;
    await rejectsCode(
      f.ca.issue({ profile: "client", name: "bob", sans: [], spki: spkiOf(weak), actor: ACTOR }),
      "E_WEAK_KEY",
    );
  });

  test("refusals leave no record: bad name (E_USAGE), server without DNS/IP (E_PROFILE)", async () => {
    const f = await freshCa();
    const before = (await f.ca.store.findCertificates()).length;
    await rejectsCode(f.ca.issue({ profile: "server", name: "../x", sans: DNS, actor: ACTOR }), "E_USAGE");
    await rejectsCode(f.ca.issue({ profile: "server", name: "web", sans: [], actor: ACTOR }), "E_PROFILE");
    assert.equal((await f.ca.store.findCertificates()).length, before);
  });

  test("serials are unique across issues", async () => {
    const f = await freshCa();
    const serials = new Set<string>();
    for (let i = 0; i < 20; i++) serials.add((await issueServer(f.ca, `web${i}`)).record.serial);
    assert.equal(serials.size, 20);
  });
});

describe("CertificateAuthority.revoke and CRLs", () => {
  test("revoke sets status, reason and revokedAt, logs it, and publishes STATE/ca/crl.pem listing the serial", async () => {
    const f = await freshCa();
    const issued = await issueServer(f.ca);
    f.clock.now = at(3);
    const done = await f.ca.revoke([issued.record.serial], "keyCompromise", ACTOR);
    assert.equal(done.length, 1);
    const rec = await f.ca.store.getCertificate(issued.record.serial);
    assert.equal(rec?.status, "revoked");
    assert.equal(rec?.revocationReason, "keyCompromise");
    assert.deepEqual(rec?.revokedAt, at(3));
    const actions = (await f.ca.store.listAudit()).map((e) => e.action);
    assert.ok(actions.includes("cert.revoke"));
    assert.equal(actions.at(-1), "crl.generate");

    const [intCrl, rootCrl] = bundle(f);
    assert.equal(intCrl?.issuer, f.ca.intermediate.subject);
    assert.equal(rootCrl?.issuer, f.ca.root.subject);
    assert.deepEqual(intCrl?.entries, [
      { serial: issued.record.serial, revokedAt: at(3), reason: "keyCompromise" },
    ]);
    assert.deepEqual(intCrl?.thisUpdate, at(3));
    assert.deepEqual(intCrl?.nextUpdate, new Date(at(3).getTime() + CRL_VALIDITY_MS));
    // and a relying party now refuses it
    await rejectsCode(
      verifyChain({
        leaf: issued.certificate,
        intermediates: [f.ca.intermediate],
        anchors: [f.ca.root],
        at: at(3),
        purpose: "server",
        crls: bundle(f),
      }),
      "E_REVOKED",
    );
  });

  test("revoking twice keeps the first time and reason", async () => {
    const f = await freshCa();
    const { record } = await issueServer(f.ca);
    f.clock.now = at(1);
    await f.ca.revoke([record.serial], "superseded", ACTOR);
    const crlBefore = readFileSync(f.paths.crl, "utf8");
    f.clock.now = at(2);
    assert.deepEqual(await f.ca.revoke([record.serial], "keyCompromise", ACTOR), []);
    const rec = await f.ca.store.getCertificate(record.serial);
    assert.deepEqual(rec?.revokedAt, at(1));
    assert.equal(rec?.revocationReason, "superseded");
    assert.equal(readFileSync(f.paths.crl, "utf8"), crlBefore, "nothing new to publish");
  });

  test("an unknown serial → E_NOT_FOUND and the whole batch is rolled back", async () => {
    const f = await freshCa();
    const { record } = await issueServer(f.ca);
    await rejectsCode(f.ca.revoke([record.serial, "4".repeat(32)], "keyCompromise", ACTOR), "E_NOT_FOUND");
    assert.equal((await f.ca.store.getCertificate(record.serial))?.status, "valid");
  });

  test("the root cannot be revoked", async () => {
    const f = await freshCa();
    await rejectsCode(f.ca.revoke([f.ca.root.serial], "cACompromise", ACTOR), "E_USAGE");
  });

  test("an unspecified revocation is listed without a reason code and reads back as unspecified", async () => {
    const f = await freshCa();
    const { record } = await issueServer(f.ca);
    await f.ca.revoke([record.serial], "unspecified", ACTOR);
    assert.equal(bundle(f)[0]?.entries[0]?.reason, "unspecified");
  });

  test("CRL numbers strictly increase, per issuer", async () => {
    const f = await freshCa();
    const numbers: number[] = [];
    for (let i = 0; i < 4; i++) {
      const { record } = await issueServer(f.ca, `web${i}`);
      f.clock.now = at(i + 1);
      await f.ca.revoke([record.serial], "superseded", ACTOR);
      numbers.push(bundle(f)[0]?.crlNumber as number);
    }
    numbers.push(parseCrls((await f.ca.publishCrls(ACTOR)).intermediate)[0]?.crlNumber as number);
    assert.deepEqual(numbers, [2, 3, 4, 5, 6]); // init published #1
    // the root's CRL has its own counter
    assert.equal(bundle(f)[1]?.crlNumber, 1);
  });

  test("revoked certificates that have expired drop off the CRL", async () => {
    const f = await freshCa();
    const short = await issueServer(f.ca, "short", { ttlMs: 10 * DAY });
    const long = await issueServer(f.ca, "long");
    await f.ca.revoke([short.record.serial, long.record.serial], "keyCompromise", ACTOR);
    assert.equal(bundle(f)[0]?.entries.length, 2);
    f.clock.now = at(11);
    await f.ca.publishCrls(ACTOR);
    assert.deepEqual(
      bundle(f)[0]?.entries.map((e) => e.serial),
      [long.record.serial],
    );
  });

  test("revoking the intermediate puts it on the root's CRL at once", async () => {
    const f = await freshCa();
    f.clock.now = at(1);
    await f.ca.revoke([f.ca.intermediate.serial], "cACompromise", ACTOR);
    const rootCrl = bundle(f)[1];
    assert.deepEqual(
      rootCrl?.entries.map((e) => e.serial),
      [f.ca.intermediate.serial],
      "the published root CRL must list the revoked intermediate",
    );
  });
});

describe("root CRL", () => {
  test("reused while young, re-signed after half its life", async () => {
    const f = await freshCa();
    const initial = readFileSync(f.paths.rootCrl, "utf8");
    assert.equal(parseCrls(initial)[0]?.crlNumber, 1);

    f.clock.now = at(1);
    const young = await f.ca.publishCrls(ACTOR);
    assert.deepEqual(young.root, parseCrls(initial)[0]?.der);
    assert.equal(readFileSync(f.paths.rootCrl, "utf8"), initial);

    f.clock.now = new Date(T0.getTime() + ROOT_CRL_VALIDITY_MS / 2 + DAY);
    const renewed = await f.ca.publishCrls(ACTOR);
    const info = parseCrls(renewed.root)[0];
    assert.equal(info?.crlNumber, 2);
    assert.deepEqual(info?.thisUpdate, f.clock.now);
    assert.deepEqual(info?.nextUpdate, new Date(f.clock.now.getTime() + ROOT_CRL_VALIDITY_MS));
    assert.deepEqual(parseCrls(readFileSync(f.paths.rootCrl))[0]?.der, renewed.root);
    assert.deepEqual(bundle(f)[1]?.der, renewed.root);
  });

  test("with the root key offline: stored CRL used while current, E_KEY_OFFLINE once expired, renewed with --root-key", async () => {
    const keyDir = mkdtempSync(join(root, "offline-"));
    const rootKeyOut = join(keyDir, "root.key");
    const f = await freshCa({ rootKeyOut });
    assert.ok(!existsSync(f.paths.rootKey));
    assert.equal(statSync(rootKeyOut).mode & 0o777, 0o600);

    f.clock.now = at(200); // past half-life, still current
    assert.equal(parseCrls((await f.ca.publishCrls(ACTOR)).root)[0]?.crlNumber, 1);

    f.clock.now = at(366); // expired
    await rejectsCode(f.ca.publishCrls(ACTOR), "E_KEY_OFFLINE");

    const renewed = await f.ca.publishCrls(ACTOR, { rootKeyFile: rootKeyOut });
    assert.equal(parseCrls(renewed.root)[0]?.crlNumber, 2);
    assert.deepEqual(bundle(f)[1]?.der, renewed.root);
    // and from then on the fresh one is reused without the key
    f.clock.now = at(367);
    assert.deepEqual((await f.ca.publishCrls(ACTOR)).root, renewed.root);
  });
});

describe("CertificateAuthority.resolve", () => {
  test("by name, by hex serial (colons, any case), never the CA's own certificates by name", async () => {
    const f = await freshCa();
    const { record } = await issueServer(f.ca, "web");
    assert.deepEqual(
      (await f.ca.resolve("web")).map((r) => r.serial),
      [record.serial],
    );
    assert.deepEqual(
      (await f.ca.resolve(record.serial)).map((r) => r.serial),
      [record.serial],
    );
    const colons = record.serial.toUpperCase().match(/../g)?.join(":") as string;
    assert.deepEqual(
      (await f.ca.resolve(colons)).map((r) => r.serial),
      [record.serial],
    );
    assert.deepEqual(await f.ca.resolve("nobody"), []);
    assert.deepEqual(await f.ca.resolve("4".repeat(32)), []);
    assert.deepEqual(await f.ca.resolve("root"), []);
    assert.deepEqual(await f.ca.resolve("intermediate"), []);
  });

  test("revoked ones only with includeRevoked; every valid one of a name", async () => {
    const f = await freshCa();
    const a = await issueServer(f.ca, "web");
    const b = await issueServer(f.ca, "web");
    assert.deepEqual(
      (await f.ca.resolve("web")).map((r) => r.serial).sort(),
      [a.record.serial, b.record.serial].sort(),
    );
    await f.ca.revoke([a.record.serial], "superseded", ACTOR);
    assert.deepEqual(
      (await f.ca.resolve("web")).map((r) => r.serial),
      [b.record.serial],
    );
    assert.equal((await f.ca.resolve("web", { includeRevoked: true })).length, 2);
  });
});

describe("issueToFiles", () => {
  test("writes NAME.crt (leaf + intermediate), NAME.key (0600) and ca.crt, then marks the record valid", async () => {
    const f = await freshCa();
    const { issued, files } = await issueToFiles(
      f.ca,
      { profile: "server", name: "web", sans: DNS, actor: ACTOR },
      { outDir: f.out },
    );
    assert.deepEqual(readdirSync(f.out).sort(), ["ca.crt", "web.crt", "web.key"]);
    assert.equal(files.cert, join(f.out, "web.crt"));
    const chain = parseCertificates(readFileSync(files.cert));
    assert.deepEqual(
      chain.map((c) => c.serial),
      [issued.record.serial, f.ca.intermediate.serial],
    );
    assert.equal(statSync(files.key as string).mode & 0o777, 0o600);
    const key = privateKeyFromPem(readFileSync(files.key as string, "utf8"));
    assert.deepEqual(spkiOf(key), issued.certificate.spki);
    assert.equal(readFileSync(files.ca, "utf8"), f.ca.rootPem);
    const rec = await f.ca.store.getCertificate(issued.record.serial);
    assert.equal(rec?.status, "valid");
    assert.equal(rec?.certPath, files.cert);
    assert.equal(rec?.keyPath, files.key);
    assert.equal((await lastAudit(f.ca))?.action, "cert.issue");
  });

  test("existing files → E_EXISTS before anything is recorded", async () => {
    const f = await freshCa();
    writeFileSync(join(f.out, "web.key"), "mine");
    const before = (await f.ca.store.findCertificates()).length;
    await rejectsCode(
      issueToFiles(f.ca, { profile: "server", name: "web", sans: DNS, actor: ACTOR }, { outDir: f.out }),
      "E_EXISTS",
    );
    assert.equal((await f.ca.store.findCertificates()).length, before);
    assert.equal(readFileSync(join(f.out, "web.key"), "utf8"), "mine");
  });

  test("a ca.crt of another CA in the folder → E_EXISTS unless forced", async () => {
    const f = await freshCa();
    writeFileSync(join(f.out, "ca.crt"), "someone else's root\n");
    const req = { profile: "server" as const, name: "web", sans: DNS, actor: ACTOR };
    await rejectsCode(issueToFiles(f.ca, req, { outDir: f.out }), "E_EXISTS");
    assert.deepEqual(readdirSync(f.out), ["ca.crt"]);
    await issueToFiles(f.ca, req, { outDir: f.out, force: true });
    assert.equal(readFileSync(join(f.out, "ca.crt"), "utf8"), f.ca.rootPem);
  });

  test("a CSR key: no key file, the record has no key path", async () => {
    const f = await freshCa();
    const key = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const { files, issued } = await issueToFiles(
      f.ca,
      { profile: "client", name: "alice", sans: [], spki: spkiOf(key), actor: ACTOR },
      { outDir: f.out },
    );
    assert.equal(files.key, undefined);
    assert.deepEqual(readdirSync(f.out).sort(), ["alice.crt", "ca.crt"]);
    const rec = await f.ca.store.getCertificate(issued.record.serial);
    assert.equal(rec?.status, "valid");
    assert.equal(rec?.keyPath, null);
  });

  for (const step of ["pending", "cert", "key", "files"] as const) {
    test(`a failure at "${step}" removes the files and aborts the record`, async () => {
      const f = await freshCa();
      const boom = new Error(`crash at ${step}`);
      let serial = "";
      await assert.rejects(
        issueToFiles(
          f.ca,
          { profile: "server", name: "web", sans: DNS, actor: ACTOR },
          {
            outDir: f.out,
            onStep: (s) => {
              if (s === step) throw boom;
            },
          },
        ),
        (err) => err === boom,
      );
      const [rec] = await f.ca.store.findCertificates({ name: "web" });
      serial = rec?.serial ?? "";
      assert.ok(serial, "the record is kept");
      assert.equal(rec?.status, "aborted");
      assert.deepEqual(readdirSync(f.out), [], "no certificate, key or temp file left");
      const events = (await f.ca.store.listAudit()).filter((e) => e.subject === serial);
      assert.deepEqual(
        events.map((e) => e.action),
        ["cert.abort"],
      );
      assert.equal(events[0]?.details.reason, boom.message);
    });
  }
});

describe("recoverPending (after a hard crash)", () => {
  /** What issueToFiles leaves behind when the process dies between its steps. */
  async function pending(f: Fixture, name: string, write: { cert: boolean; key: boolean }) {
    const certPath = join(f.out, `${name}.crt`);
    const keyPath = join(f.out, `${name}.key`);
    const issued = await f.ca.issue({
      profile: "server",
      name,
      sans: DNS,
      actor: ACTOR,
      pending: { certPath, keyPath },
    });
    if (write.cert) writeFileSync(certPath, issued.chainPem);
    if (write.key)
      writeFileSync(keyPath, pemEncode("PRIVATE KEY", pkcs8Of(issued.privateKey as never)), { mode: 0o600 });
    return { issued, certPath, keyPath };
  }

  test("a pending record is not valid and has no issue event yet", async () => {
    const f = await freshCa();
    const { issued } = await pending(f, "web", { cert: false, key: false });
    assert.equal((await f.ca.store.getCertificate(issued.record.serial))?.status, "pending");
    // (init's own events come last otherwise: ca.init, and the first admin's)
    assert.ok(!(await f.ca.store.listAudit()).some((e) => e.subject === issued.record.serial));
    assert.deepEqual(await f.ca.resolve("web"), []);
  });

  test("files complete → confirmed (valid + cert.issue by system:recovery)", async () => {
    const f = await freshCa();
    const { issued, certPath, keyPath } = await pending(f, "web", { cert: true, key: true });
    const result = await recoverPending(f.ca);
    assert.deepEqual(result, { confirmed: [issued.record.serial], aborted: [] });
    assert.equal((await f.ca.store.getCertificate(issued.record.serial))?.status, "valid");
    const event = await lastAudit(f.ca);
    assert.equal(event?.action, "cert.issue");
    assert.equal(event?.actor, "system:recovery");
    assert.ok(existsSync(certPath) && existsSync(keyPath));
  });

  test("key file missing → aborted and the certificate file removed", async () => {
    const f = await freshCa();
    const { issued, certPath } = await pending(f, "web", { cert: true, key: false });
    const result = await recoverPending(f.ca);
    assert.deepEqual(result, { confirmed: [], aborted: [issued.record.serial] });
    assert.equal((await f.ca.store.getCertificate(issued.record.serial))?.status, "aborted");
    assert.ok(!existsSync(certPath));
    assert.equal((await lastAudit(f.ca))?.action, "cert.abort");
  });

  test("certificate file missing → aborted and the orphan key removed", async () => {
    const f = await freshCa();
    const { issued, keyPath } = await pending(f, "web", { cert: false, key: true });
    assert.deepEqual((await recoverPending(f.ca)).aborted, [issued.record.serial]);
    assert.ok(!existsSync(keyPath));
  });

  test("files that are not its own are left alone", async () => {
    const f = await freshCa();
    const other = await issueServer(f.ca, "other");
    const { issued, certPath, keyPath } = await pending(f, "web", { cert: false, key: false });
    writeFileSync(certPath, other.chainPem); // somebody else's certificate at that path
    writeFileSync(keyPath, pemEncode("PRIVATE KEY", pkcs8Of(other.privateKey as never)));
    assert.deepEqual((await recoverPending(f.ca)).aborted, [issued.record.serial]);
    assert.equal(readFileSync(certPath, "utf8"), other.chainPem);
    assert.ok(existsSync(keyPath));
  });

  test("openCa runs the recovery on start", async () => {
    const f = await freshCa();
    const done = await pending(f, "done", { cert: true, key: true });
    const half = await pending(f, "half", { cert: true, key: false });
    await f.ca.store.close();
    const ca = await reopen(f.paths, f.clock);
    assert.equal((await ca.store.getCertificate(done.issued.record.serial))?.status, "valid");
    assert.equal((await ca.store.getCertificate(half.issued.record.serial))?.status, "aborted");
    assert.ok(!existsSync(half.certPath));
  });
});

describe("openCa", () => {
  test("a wrong passphrase is only needed (and refused) when a key is used", async () => {
    const f = await freshCa();
    const ca = await openCa(f.paths, { env: { MTLS_PASSPHRASE: "wrong" }, clock: () => f.clock.now });
    track(ca);
    assert.equal(ca.root.serial, f.ca.root.serial);
    await rejectsCode(issueServer(ca), "E_PASSPHRASE");
  });

  test("an empty state directory → E_NO_CA", async () => {
    const paths = statePaths(join(root, "empty"));
    await rejectsCode(openCa(paths, { env: {} }), "E_NO_CA");
  });
});
