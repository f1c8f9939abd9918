import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { TEST_ACTOR as ACTOR, caFixtures, rejectsCode, T0 } from "../../test/fixtures/ca.js";
import { privateKeyFromPem, spkiOf } from "../pki/keys.js";
import { formatSan } from "../pki/names.js";
import { verifyChain } from "../pki/verify.js";
import type { IssueRequest } from "./authority.js";
import { renew, subjectAttributes } from "./renew.js";

const DAY = 86_400_000;

const { root, freshCa } = caFixtures("renew", { admin: false });

const at = (days: number) => new Date(T0.getTime() + days * DAY);

const ALICE: IssueRequest = {
  profile: "client",
  name: "alice",
  sans: [
    { type: "email", value: "alice@acme.test" },
    { type: "uri", value: "spiffe://acme.test/user/alice" },
  ],
  organizationalUnit: ["eng", "a+b, c"],
  ttlMs: 10 * DAY,
  actor: ACTOR,
};

let csrs = 0;
function makeCsr(): { pem: string; spki: Uint8Array } {
  const base = join(root, `req-${++csrs}`);
  execFileSync(
    "openssl",
    [
      "req",
      "-new",
      "-nodes",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-384",
      "-keyout",
      `${base}.key`,
      "-out",
      `${base}.csr`,
      "-subj",
      "/CN=mallory",
      "-addext",
      "subjectAltName=DNS:evil.test,email:mallory@evil.test",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  return {
    pem: readFileSync(`${base}.csr`, "utf8"),
    spki: spkiOf(privateKeyFromPem(readFileSync(`${base}.key`, "utf8"))),
  };
}

describe("renew", () => {
  test("keeps name, subject (OU), profile, SANs, key and lifetime; new serial; the old one stays valid", async () => {
    const f = await freshCa();
    const old = await f.ca.issue(ALICE);
    f.clock.now = at(6);
    const renewed = await renew(f.ca, { serial: old.record.serial, actor: "api:someone" });
    const a = old.certificate;
    const b = renewed.certificate;
    assert.notEqual(b.serial, a.serial);
    assert.equal(b.subject, a.subject);
    assert.deepEqual(subjectAttributes(b.subjectDer), { CN: ["alice"], OU: ["eng", "a+b, c"] });
    assert.deepEqual(b.sans.map(formatSan), a.sans.map(formatSan));
    assert.deepEqual(b.spki, a.spki);
    assert.deepEqual(b.extKeyUsage, ["clientAuth"]);
    assert.equal(b.notAfter.getTime() - b.notBefore.getTime(), a.notAfter.getTime() - a.notBefore.getTime());
    assert.deepEqual(b.notAfter, at(16));
    assert.equal(renewed.record.name, "alice");
    assert.equal(renewed.record.profile, "client");
    assert.equal(renewed.privateKey, undefined);
    assert.equal((await f.ca.store.getCertificate(a.serial))?.status, "valid");
    await verifyChain({
      leaf: b,
      intermediates: [f.ca.intermediate],
      anchors: [f.ca.root],
      at: at(6),
      purpose: "client",
    });

    const events = (await f.ca.store.listAudit()).slice(-2);
    assert.deepEqual(
      events.map((e) => [e.action, e.actor, e.subject]),
      [
        ["cert.issue", "api:someone", b.serial],
        ["cert.renew", "api:someone", b.serial],
      ],
    );
    assert.equal(events[1]?.details.renewedFrom, a.serial);
    assert.equal(events[1]?.details.rekey, false);
  });

  test("keeps a CN that differs from the inventory name, and accepts a serial with colons", async () => {
    const f = await freshCa();
    const old = await f.ca.issue({
      profile: "server",
      name: "web-1",
      commonName: "web.acme.test",
      sans: [{ type: "dns", value: "web.acme.test" }],
      actor: ACTOR,
    });
    const withColons = old.record.serial.match(/../g)?.join(":").toUpperCase() as string;
    const renewed = await renew(f.ca, { serial: withColons, actor: ACTOR });
    assert.equal(renewed.certificate.subject, "O=Acme, CN=web.acme.test");
    assert.equal(renewed.record.name, "web-1");
    assert.deepEqual(renewed.certificate.notAfter, at(90));
  });

  test("rekey: certifies the CSR's key, ignoring its subject and SANs", async () => {
    const f = await freshCa();
    const old = await f.ca.issue(ALICE);
    const csr = makeCsr();
    const renewed = await renew(f.ca, { serial: old.record.serial, csr: csr.pem, actor: ACTOR });
    assert.deepEqual(renewed.certificate.spki, csr.spki);
    assert.equal(renewed.certificate.keyType, "ec-p384");
    assert.equal(renewed.certificate.subject, old.certificate.subject);
    assert.deepEqual(renewed.record.sans, old.record.sans);
    assert.equal((await f.ca.store.listAudit()).at(-1)?.details.rekey, true);
  });

  test("rekey with a bad CSR is E_BAD_CSR and issues nothing", async () => {
    const f = await freshCa();
    const old = await f.ca.issue(ALICE);
    await rejectsCode(renew(f.ca, { serial: old.record.serial, csr: "garbage", actor: ACTOR }), "E_BAD_CSR");
    const pem = makeCsr().pem;
    const lines = pem.trim().split("\n");
    const body = lines.slice(1, -1).join("");
    const der = Buffer.from(body, "base64");
    der[der.length - 3] = (der[der.length - 3] as number) ^ 0x55;
    const broken = `${lines[0]}\n${der.toString("base64")}\n${lines.at(-1)}\n`;
    await rejectsCode(renew(f.ca, { serial: old.record.serial, csr: broken, actor: ACTOR }), "E_BAD_CSR");
    assert.equal((await f.ca.store.findCertificates({ name: "alice" })).length, 1);
  });

  test("refuses revoked, expired, unknown and CA certificates", async () => {
    const f = await freshCa();
    const revoked = await f.ca.issue(ALICE);
    await f.ca.revoke([revoked.record.serial], "keyCompromise", ACTOR);
    await rejectsCode(renew(f.ca, { serial: revoked.record.serial, actor: ACTOR }), "E_REVOKED");

    const expiring = await f.ca.issue(ALICE);
    f.clock.now = at(10);
    await rejectsCode(renew(f.ca, { serial: expiring.record.serial, actor: ACTOR }), "E_EXPIRED");
    f.clock.now = new Date(at(10).getTime() - 1000);
    await renew(f.ca, { serial: expiring.record.serial, actor: ACTOR });

    await rejectsCode(renew(f.ca, { serial: f.ca.intermediate.serial, actor: ACTOR }), "E_PROFILE");
    await rejectsCode(renew(f.ca, { serial: f.ca.root.serial, actor: ACTOR }), "E_PROFILE");
    await rejectsCode(renew(f.ca, { serial: "0abc", actor: ACTOR }), "E_NOT_FOUND");
    // two alice certificates issued plus the one renewal
    assert.equal((await f.ca.store.findCertificates({ name: "alice" })).length, 3);
  });

  test("a revocation that commits while renewing wins: nothing is recorded", async () => {
    const f = await freshCa();
    const old = await f.ca.issue(ALICE);
    const issue = f.ca.issue.bind(f.ca);
    f.ca.issue = async (req) => {
      await f.ca.revoke([old.record.serial], "superseded", ACTOR);
      return issue(req);
    };
    await rejectsCode(renew(f.ca, { serial: old.record.serial, actor: ACTOR }), "E_REVOKED");
    f.ca.issue = issue;
    assert.equal((await f.ca.store.findCertificates({ name: "alice" })).length, 1);
    assert.ok(!(await f.ca.store.listAudit()).some((e) => e.action === "cert.renew"));
  });

  test("the lifetime is capped by the intermediate's", async () => {
    const f = await freshCa({ intermediateTtlMs: 100 * DAY });
    const old = await f.ca.issue({ ...ALICE, ttlMs: 90 * DAY });
    f.clock.now = at(50);
    const renewed = await renew(f.ca, { serial: old.record.serial, actor: ACTOR });
    assert.ok(renewed.certificate.notAfter <= f.ca.intermediate.notAfter);
    assert.ok(renewed.certificate.notAfter.getTime() >= f.ca.intermediate.notAfter.getTime() - 1000);
  });
});
