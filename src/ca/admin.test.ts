import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { TEST_ACTOR as ACTOR, caFixtures, rejectsCode, T0 } from "../../test/fixtures/ca.js";
import { statePaths } from "../config/state.js";
import { parseCertificate, parseCertificates } from "../pki/certinfo.js";
import { privateKeyFromPem, spkiOf } from "../pki/keys.js";
import { parsePkcs12 } from "../pki/pkcs12.js";
import { adminNames, ensureAdmin, isAdmin } from "./admin.js";
import type { CertificateAuthority } from "./authority.js";
import { initCa } from "./init.js";
import { getCaSetting, setAdmins, setPublicUrl } from "./settings.js";

const DAY = 86_400_000;

const { root, freshCa, reopen } = caFixtures("admin");

const modeOf = (path: string) => statSync(path).mode & 0o777;
const validNamed = async (ca: CertificateAuthority, name: string) =>
  ca.store.findCertificates({ name, status: "valid" });

describe("initCa and the first admin", () => {
  test("issues a client certificate 'admin' into STATE/admin with key, PKCS#12 and password, and sets ca.admins", async () => {
    const f = await freshCa();
    const dir = join(f.paths.dir, "admin");
    assert.deepEqual(readdirSync(dir).sort(), [
      "admin.crt",
      "admin.key",
      "admin.p12",
      "admin.p12.password",
      "ca.crt",
    ]);
    assert.equal(modeOf(dir), 0o700);
    for (const file of ["admin.key", "admin.p12", "admin.p12.password"])
      assert.equal(modeOf(join(dir, file)), 0o600, file);
    const chain = parseCertificates(readFileSync(join(dir, "admin.crt")));
    assert.deepEqual(
      chain.map((c) => c.serial),
      [chain[0]?.serial, f.ca.intermediate.serial],
    );
    const leaf = chain[0];
    assert.ok(leaf);
    assert.equal(leaf.subject, "O=Acme, CN=admin");
    assert.deepEqual(leaf.extKeyUsage, ["clientAuth"]);
    assert.deepEqual(leaf.notAfter, new Date(T0.getTime() + 30 * DAY));
    assert.deepEqual(spkiOf(privateKeyFromPem(readFileSync(join(dir, "admin.key"), "utf8"))), leaf.spki);
    const password = readFileSync(join(dir, "admin.p12.password"), "utf8").trim();
    assert.ok(password.length >= 20);
    const p12 = parsePkcs12(readFileSync(join(dir, "admin.p12")), password);
    assert.equal(p12.certificates.length, 2);
    assert.equal(parseCertificate(p12.certificates[0] as Uint8Array).serial, leaf.serial);
    assert.ok(p12.privateKey);

    assert.deepEqual(await adminNames(f.ca), ["admin"]);
    const rec = await f.ca.store.getCertificate(leaf.serial);
    assert.ok(rec);
    assert.equal(rec.status, "valid");
    // (the fixture is a copy of the state initCa made elsewhere: paths name that folder)
    assert.match(rec.keyPath ?? "", /\/admin\/admin\.key$/);
    assert.equal(await isAdmin(f.ca, rec), true);
    const actions = (await f.ca.store.listAudit()).map((e) => e.action);
    assert.deepEqual(actions, ["ca.init", "cert.issue", "ca.setting"]);
  });

  test("admin: false makes none; ensureAdmin adds one later and is then idempotent", async () => {
    const f = await freshCa({ admin: false });
    assert.ok(!existsSync(join(f.paths.dir, "admin")));
    assert.deepEqual(await adminNames(f.ca), []);
    const first = await ensureAdmin(f.ca, { actor: ACTOR });
    assert.equal(first.created, true);
    assert.equal(first.name, "admin");
    assert.equal(first.files?.password, join(f.paths.dir, "admin", "admin.p12.password"));
    assert.deepEqual(await adminNames(f.ca), ["admin"]);
    const again = await ensureAdmin(f.ca, { actor: ACTOR });
    assert.deepEqual(again, { name: "admin", serial: first.serial, created: false });
    assert.equal((await validNamed(f.ca, "admin")).length, 1);
  });

  test("ensureAdmin replaces a revoked or expired admin, and its files", async () => {
    const f = await freshCa();
    const [old] = await validNamed(f.ca, "admin");
    assert.ok(old);
    const passwordFile = join(f.paths.dir, "admin", "admin.p12.password");
    const oldPassword = readFileSync(passwordFile, "utf8");
    await f.ca.revoke([old.serial], "keyCompromise", ACTOR);
    const replaced = await ensureAdmin(f.ca, { actor: ACTOR });
    assert.equal(replaced.created, true);
    assert.notEqual(replaced.serial, old.serial);
    assert.notEqual(readFileSync(passwordFile, "utf8"), oldPassword);
    assert.equal(
      parseCertificates(readFileSync(join(f.paths.dir, "admin", "admin.crt")))[0]?.serial,
      replaced.serial,
    );

    f.clock.now = new Date(T0.getTime() + 31 * DAY);
    const third = await ensureAdmin(f.ca, { actor: ACTOR, ttlMs: 60 * DAY });
    assert.equal(third.created, true);
    assert.deepEqual(
      (await f.ca.store.getCertificate(third.serial))?.notAfter,
      new Date(f.clock.now.getTime() + 60 * DAY),
    );
    assert.deepEqual(await adminNames(f.ca), ["admin"]);
  });

  test("ensureAdmin adds an existing valid certificate's name instead of issuing another", async () => {
    const f = await freshCa();
    await setAdmins(f.ca, ["bob"], ACTOR);
    const [adminCert] = await validNamed(f.ca, "admin");
    const result = await ensureAdmin(f.ca, { actor: ACTOR });
    assert.deepEqual(result, { name: "admin", serial: adminCert?.serial, created: false });
    assert.deepEqual(await adminNames(f.ca), ["bob", "admin"]);
  });

  test("init --force moves the old admin files into the backup", async () => {
    const dir = join(root, "forced");
    const paths = statePaths(dir);
    await initCa({ paths, name: "Acme", passphrase: "test", actor: ACTOR, clock: () => T0 });
    const before = readFileSync(join(dir, "admin", "admin.crt"), "utf8");
    const res = await initCa({
      paths,
      name: "Acme",
      passphrase: "test",
      actor: ACTOR,
      clock: () => T0,
      force: true,
    });
    assert.ok(res.backup);
    assert.equal(readFileSync(join(res.backup, "admin", "admin.crt"), "utf8"), before);
    assert.notEqual(readFileSync(join(dir, "admin", "admin.crt"), "utf8"), before);
    assert.equal(res.admin?.created, true);
  });
});

describe("isAdmin", () => {
  test("needs a valid, unexpired client or peer certificate of this CA whose name is listed", async () => {
    const f = await freshCa();
    const [admin] = await validNamed(f.ca, "admin");
    assert.ok(admin);
    assert.equal(await isAdmin(f.ca, admin), true);

    const carol = await f.ca.issue({ profile: "peer", name: "carol", sans: [], actor: ACTOR });
    assert.equal(await isAdmin(f.ca, carol.record), false, "not listed");
    await setAdmins(f.ca, ["admin", "carol", "web"], ACTOR);
    assert.equal(await isAdmin(f.ca, carol.record), true, "a listed peer");

    const web = await f.ca.issue({
      profile: "server",
      name: "web",
      sans: [{ type: "dns", value: "web.acme.test" }],
      actor: ACTOR,
    });
    assert.equal(await isAdmin(f.ca, web.record), false, "a server certificate");
    assert.equal(
      await isAdmin(f.ca, await f.ca.store.getCertificate(f.ca.intermediate.serial).then((r) => r ?? admin)),
      false,
    );
    assert.equal(
      await isAdmin(f.ca, { ...admin, fingerprint: "00".repeat(32) }),
      false,
      "another certificate",
    );
    assert.equal(await isAdmin(f.ca, { ...admin, serial: "0abc" }), false, "unknown");

    f.clock.now = admin.notAfter;
    assert.equal(await isAdmin(f.ca, admin), false, "expired");
    f.clock.now = T0;
    await f.ca.revoke([admin.serial], "superseded", ACTOR);
    assert.equal(await isAdmin(f.ca, admin), false, "revoked (even when handed the old record)");
    await setAdmins(f.ca, [], ACTOR);
    assert.equal(await isAdmin(f.ca, carol.record), false, "an empty list");
  });
});

describe("CA settings", () => {
  test("public URL: validated like init, recorded, used by certificates issued from then on", async () => {
    const f = await freshCa({ admin: false });
    const before = await f.ca.issue({ profile: "peer", name: "a", sans: [], actor: ACTOR });
    assert.deepEqual(before.certificate.crlUrls, []);
    await rejectsCode(setPublicUrl(f.ca, "ftp://ca.acme.test", ACTOR), "E_USAGE");
    await rejectsCode(setPublicUrl(f.ca, "https://", ACTOR), "E_USAGE");
    await setPublicUrl(f.ca, "https://ca.acme.test:8443/", ACTOR);
    assert.equal(await getCaSetting(f.ca, "public-url"), "https://ca.acme.test:8443/");
    const after = await f.ca.issue({ profile: "peer", name: "b", sans: [], actor: ACTOR });
    assert.deepEqual(after.certificate.crlUrls, ["https://ca.acme.test:8443/crl"]);
    assert.deepEqual(after.certificate.ocspUrls, ["https://ca.acme.test:8443/ocsp"]);
    // and a CA opened afterwards reads it
    const reopened = await reopen(f.paths, f.clock);
    assert.equal(reopened.settings.publicUrl, "https://ca.acme.test:8443/");
    const event = (await f.ca.store.listAudit()).findLast((e) => e.action === "ca.setting");
    assert.deepEqual(event?.details, {
      key: "ca.publicUrl",
      value: "https://ca.acme.test:8443/",
      previous: null,
    });
    await setPublicUrl(f.ca, null, ACTOR);
    const none = await f.ca.issue({ profile: "peer", name: "c", sans: [], actor: ACTOR });
    assert.deepEqual(none.certificate.crlUrls, []);
  });

  test("admins: names are validated and deduplicated", async () => {
    const f = await freshCa({ admin: false });
    assert.deepEqual(await setAdmins(f.ca, [" alice", "bob", "alice"], ACTOR), ["alice", "bob"]);
    assert.equal(await getCaSetting(f.ca, "admins"), "alice,bob");
    await rejectsCode(setAdmins(f.ca, ["no spaces"], ACTOR), "E_USAGE");
    assert.deepEqual(await adminNames(f.ca), ["alice", "bob"]);
  });
});
