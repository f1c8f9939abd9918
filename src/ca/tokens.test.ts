import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { TEST_ACTOR as ACTOR, caFixtures, rejectsCode, T0 } from "../../test/fixtures/ca.js";
import { isMtlsError } from "../errors.js";
import { parseCertificates } from "../pki/certinfo.js";
import { privateKeyFromPem, spkiOf } from "../pki/keys.js";
import { formatSan, type San } from "../pki/names.js";
import { pemDecodeAll, pemEncode } from "../pki/pem.js";
import { verifyChain } from "../pki/verify.js";
import type { StoreTx } from "../store/index.js";
import type { CertificateAuthority } from "./authority.js";
import { createToken, enroll, type TokenGrant, tokenIdOf, tokenStatus } from "./tokens.js";

const DAY = 86_400_000;
const MINUTE = 60_000;

const { root, freshCa } = caFixtures("tokens");

let csrs = 0;
/** An openssl-made CSR (PEM) with a fresh key; returns the key's SPKI too. */
function makeCsr(opts: { subj?: string; sans?: string; newkey?: string[] } = {}): {
  pem: string;
  spki: Uint8Array;
} {
  const base = join(root, `req-${++csrs}`);
  execFileSync(
    "openssl",
    [
      "req",
      "-new",
      "-nodes",
      ...(opts.newkey ?? ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
      "-keyout",
      `${base}.key`,
      "-out",
      `${base}.csr`,
      "-subj",
      opts.subj ?? "/CN=somebody-else/O=Evil",
      ...(opts.sans ? ["-addext", `subjectAltName=${opts.sans}`] : []),
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  return {
    pem: readFileSync(`${base}.csr`, "utf8"),
    spki: spkiOf(privateKeyFromPem(readFileSync(`${base}.key`, "utf8"))),
  };
}

const WEB: TokenGrant = {
  name: "web",
  profile: "server",
  sans: [
    { type: "dns", value: "web.acme.test" },
    { type: "dns", value: "www.acme.test" },
    { type: "ip", value: "2001:db8::1" },
  ],
};
const grant = (over: Partial<TokenGrant> = {}): TokenGrant => ({ ...WEB, ...over });
const sanTexts = (sans: San[]) => sans.map(formatSan);

const certsNamed = async (ca: CertificateAuthority, name: string) =>
  (await ca.store.findCertificates({ name })).filter((r) => r.profile !== "ca-root");

describe("createToken", () => {
  test("returns mtls_<16 hex>.<43 base64url>, stores only the secret's hash, audits token.create", async () => {
    const f = await freshCa();
    const { token, id, expiresAt } = await createToken(f.ca, grant({ ttlMs: 7 * DAY }), {
      validForMs: 30 * MINUTE,
      actor: ACTOR,
    });
    assert.match(token, /^mtls_[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);
    assert.equal(tokenIdOf(token), id);
    assert.deepEqual(expiresAt, new Date(T0.getTime() + 30 * MINUTE));
    const secret = token.split(".")[1] as string;
    const rec = await f.ca.store.getToken(id);
    assert.ok(rec);
    assert.equal(rec.name, "web");
    assert.equal(rec.profile, "server");
    assert.deepEqual(rec.sans, ["dns:web.acme.test", "dns:www.acme.test", "ip:2001:db8::1"]);
    assert.equal(rec.ttlMs, 7 * DAY);
    assert.equal(rec.createdBy, ACTOR);
    assert.equal(rec.usedAt, null);
    assert.match(rec.secretHash, /^[0-9a-f]{64}$/);
    assert.ok(!rec.secretHash.includes(secret));
    const events = await f.ca.store.listAudit();
    const created = events.at(-1);
    assert.equal(created?.action, "token.create");
    assert.equal(created?.subject, id);
    assert.equal(created?.actor, ACTOR);
    assert.ok(!JSON.stringify(events).includes(secret), "the secret is never logged");
    assert.equal(tokenStatus(rec, T0), "unused");
    assert.equal(tokenStatus(rec, expiresAt), "expired");
  });

  test("defaults to 15 minutes and refuses bad grants", async () => {
    const f = await freshCa();
    const { expiresAt } = await createToken(f.ca, grant(), { actor: ACTOR });
    assert.deepEqual(expiresAt, new Date(T0.getTime() + 15 * MINUTE));
    await rejectsCode(
      createToken(f.ca, grant({ sans: [{ type: "email", value: "a@acme.test" }] }), { actor: ACTOR }),
      "E_PROFILE",
    );
    await rejectsCode(createToken(f.ca, grant({ name: "../etc" }), { actor: ACTOR }), "E_USAGE");
    await rejectsCode(createToken(f.ca, grant({ profile: "admin" as never }), { actor: ACTOR }), "E_PROFILE");
    await rejectsCode(
      createToken(f.ca, grant({ sans: [{ type: "dns", value: "a b" }] }), { actor: ACTOR }),
      "E_BAD_SAN",
    );
    await rejectsCode(createToken(f.ca, grant(), { validForMs: 8 * DAY, actor: ACTOR }), "E_TTL");
    await rejectsCode(createToken(f.ca, grant(), { validForMs: 0, actor: ACTOR }), "E_TTL");
    await rejectsCode(createToken(f.ca, grant({ ttlMs: 20 * 365 * DAY }), { actor: ACTOR }), "E_TTL");
    await rejectsCode(createToken(f.ca, grant({ ttlMs: -1 }), { actor: ACTOR }), "E_TTL");
    assert.deepEqual((await f.ca.store.findTokens()).length, 1);
  });
});

describe("enroll", () => {
  test("issues for the token's name (CSR subject ignored) and the CSR's key, with every granted SAN", async () => {
    const f = await freshCa();
    const { token, id } = await createToken(f.ca, grant({ organizationalUnit: ["ops"] }), { actor: ACTOR });
    const csr = makeCsr();
    const issued = await enroll(f.ca, { token, csr: csr.pem });
    const cert = issued.certificate;
    assert.equal(cert.subject, "O=Acme, OU=ops, CN=web");
    assert.deepEqual(cert.spki, csr.spki);
    assert.equal(issued.privateKey, undefined);
    assert.deepEqual(sanTexts(cert.sans), ["dns:web.acme.test", "dns:www.acme.test", "ip:2001:db8::1"]);
    assert.deepEqual(cert.extKeyUsage, ["serverAuth"]);
    // lifetime: the profile default (server 90d)
    assert.deepEqual(cert.notAfter, new Date(T0.getTime() + 90 * DAY));
    const res = await verifyChain({
      leaf: cert,
      intermediates: [f.ca.intermediate],
      anchors: [f.ca.root],
      at: T0,
      purpose: "server",
    });
    assert.ok(res);

    const rec = await f.ca.store.getCertificate(issued.record.serial);
    assert.equal(rec?.status, "valid");
    assert.equal(rec?.name, "web");
    const token_ = await f.ca.store.getToken(id);
    assert.deepEqual(token_?.usedAt, T0);
    assert.equal(token_?.usedBySerial, issued.record.serial);
    const events = (await f.ca.store.listAudit()).slice(-2);
    assert.deepEqual(
      events.map((e) => [e.action, e.actor, e.subject]),
      [
        ["cert.issue", `api:token:${id}`, issued.record.serial],
        ["token.use", `api:token:${id}`, id],
      ],
    );
    assert.equal(events[1]?.details.serial, issued.record.serial);
    assert.ok((await f.ca.store.verifyAudit()).ok);
  });

  test("accepts DER, a subset of the SANs (however spelled) and a shorter lifetime; the actor when given", async () => {
    const f = await freshCa();
    const { token } = await createToken(f.ca, grant({ ttlMs: 10 * DAY }), { actor: ACTOR });
    const csr = makeCsr({ sans: "DNS:WWW.Acme.Test,IP:2001:0db8:0:0::1" });
    const der = (pemDecodeAll(csr.pem)[0] as { der: Uint8Array }).der;
    const issued = await enroll(f.ca, { token, csr: der, ttlMs: 2 * DAY, actor: "api:admin-ui" });
    assert.deepEqual(sanTexts(issued.certificate.sans), ["dns:www.acme.test", "ip:2001:db8::1"]);
    assert.deepEqual(issued.certificate.notAfter, new Date(T0.getTime() + 2 * DAY));
    assert.equal((await f.ca.store.listAudit()).at(-1)?.actor, "api:admin-ui");
  });

  test("the granted lifetime applies when the enrollment asks for none", async () => {
    const f = await freshCa();
    const { token } = await createToken(f.ca, grant({ ttlMs: 3 * DAY }), { actor: ACTOR });
    const issued = await enroll(f.ca, { token, csr: makeCsr().pem });
    assert.deepEqual(issued.certificate.notAfter, new Date(T0.getTime() + 3 * DAY));
  });

  test("a token works once: a replay is E_TOKEN_USED and issues nothing", async () => {
    const f = await freshCa();
    const { token } = await createToken(f.ca, grant(), { actor: ACTOR });
    await enroll(f.ca, { token, csr: makeCsr().pem });
    await rejectsCode(enroll(f.ca, { token, csr: makeCsr().pem }), "E_TOKEN_USED");
    assert.equal((await certsNamed(f.ca, "web")).length, 1);
  });

  test("expires with the CA's clock", async () => {
    const f = await freshCa();
    const a = await createToken(f.ca, grant(), { validForMs: 10 * MINUTE, actor: ACTOR });
    const b = await createToken(f.ca, grant(), { validForMs: 10 * MINUTE, actor: ACTOR });
    f.clock.now = new Date(T0.getTime() + 10 * MINUTE - 1);
    await enroll(f.ca, { token: a.token, csr: makeCsr().pem });
    f.clock.now = new Date(T0.getTime() + 10 * MINUTE);
    await rejectsCode(enroll(f.ca, { token: b.token, csr: makeCsr().pem }), "E_TOKEN_EXPIRED");
    assert.equal((await f.ca.store.getToken(b.id))?.usedAt, null);
  });

  test("malformed, unknown and wrong-secret tokens are E_TOKEN_INVALID, before anything else is said", async () => {
    const f = await freshCa();
    const { token, id } = await createToken(f.ca, grant(), { actor: ACTOR });
    const secret = token.split(".")[1] as string;
    const flipped = `${secret.slice(0, 10)}${secret[10] === "A" ? "B" : "A"}${secret.slice(11)}`;
    const csr = makeCsr().pem;
    for (const bad of [
      "",
      "mtls_",
      token.toUpperCase(),
      `${token}x`,
      `mtls_${"0".repeat(16)}.${secret}`, // unknown id
      `mtls_${id}.${flipped}`, // wrong secret
      // the same 32 bytes spelled differently (the last character's unused bits set)
      `mtls_${id}.${secret.slice(0, 42)}${String.fromCharCode(secret.charCodeAt(42) ^ 1)}`,
    ]) {
      await rejectsCode(enroll(f.ca, { token: bad, csr }), "E_TOKEN_INVALID");
    }
    // Even a used or expired token answers E_TOKEN_INVALID to a wrong secret.
    await enroll(f.ca, { token, csr });
    await rejectsCode(enroll(f.ca, { token: `mtls_${id}.${flipped}`, csr }), "E_TOKEN_INVALID");
  });

  test("asking for more than granted is E_TOKEN_SCOPE and leaves the token unused", async () => {
    const f = await freshCa();
    const { token, id } = await createToken(f.ca, grant({ ttlMs: 10 * DAY }), { actor: ACTOR });
    await rejectsCode(
      enroll(f.ca, { token, csr: makeCsr({ sans: "DNS:web.acme.test,DNS:admin.acme.test" }).pem }),
      "E_TOKEN_SCOPE",
    );
    await rejectsCode(enroll(f.ca, { token, csr: makeCsr({ sans: "IP:2001:db8::2" }).pem }), "E_TOKEN_SCOPE");
    await rejectsCode(
      enroll(f.ca, { token, csr: makeCsr({ sans: "email:web@acme.test" }).pem }),
      "E_TOKEN_SCOPE",
    );
    await rejectsCode(enroll(f.ca, { token, csr: makeCsr().pem, name: "admin" }), "E_TOKEN_SCOPE");
    await rejectsCode(enroll(f.ca, { token, csr: makeCsr().pem, profile: "client" }), "E_TOKEN_SCOPE");
    await rejectsCode(enroll(f.ca, { token, csr: makeCsr().pem, ttlMs: 11 * DAY }), "E_TOKEN_SCOPE");
    assert.equal((await f.ca.store.getToken(id))?.usedAt, null);
    assert.equal((await certsNamed(f.ca, "web")).length, 0);
    // the matching name and profile are fine
    await enroll(f.ca, { token, csr: makeCsr().pem, name: "web", profile: "server" });
  });

  test("a CSR that is garbage or badly signed is E_BAD_CSR; a weak key E_WEAK_KEY; the token stays unused", async () => {
    const f = await freshCa();
    const { token, id } = await createToken(f.ca, grant(), { actor: ACTOR });
    await rejectsCode(enroll(f.ca, { token, csr: "hello" }), "E_BAD_CSR");
    await rejectsCode(
      enroll(f.ca, { token, csr: new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]) }),
      "E_BAD_CSR",
    );
    await rejectsCode(
      enroll(f.ca, {
        token,
        csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
      }),
      "E_BAD_CSR",
    );
    const der = (pemDecodeAll(makeCsr().pem)[0] as { der: Uint8Array }).der;
    const broken = new Uint8Array(der);
    broken[broken.length - 5] = (broken[broken.length - 5] as number) ^ 0xff; // inside the signature
    await rejectsCode(enroll(f.ca, { token, csr: pemEncode("CERTIFICATE REQUEST", broken) }), "E_BAD_CSR");
    await rejectsCode(
      enroll(f.ca, { token, csr: makeCsr({ newkey: ["-newkey", "rsa:1024"] }).pem }),
      "E_WEAK_KEY",
    );
    assert.equal((await f.ca.store.getToken(id))?.usedAt, null);
    assert.equal((await certsNamed(f.ca, "web")).length, 0);
  });

  test("a server token whose CSR picks no DNS name or IP is refused by the profile", async () => {
    const f = await freshCa();
    const { token } = await createToken(
      f.ca,
      grant({
        sans: [
          { type: "dns", value: "web.acme.test" },
          { type: "uri", value: "spiffe://acme.test/web" },
        ],
      }),
      { actor: ACTOR },
    );
    await rejectsCode(
      enroll(f.ca, { token, csr: makeCsr({ sans: "URI:spiffe://acme.test/web" }).pem }),
      "E_PROFILE",
    );
  });
});

describe("enroll is atomic", () => {
  test("two enrollments racing on one token: exactly one certificate", async () => {
    const f = await freshCa();
    const { token, id } = await createToken(f.ca, grant(), { actor: ACTOR });
    // Both must pass the checks before either commits, so that only the transaction can stop one.
    const store = f.ca.store;
    const getToken = store.getToken.bind(store);
    let arrived = 0;
    let release = () => {};
    const bothRead = new Promise<void>((resolve) => {
      release = resolve;
    });
    store.getToken = async (tokenId: string) => {
      const rec = await getToken(tokenId);
      if (++arrived === 2) release();
      await bothRead;
      return rec;
    };
    const results = await Promise.allSettled([
      enroll(f.ca, { token, csr: makeCsr().pem }),
      enroll(f.ca, { token, csr: makeCsr().pem }),
    ]);
    store.getToken = getToken;
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    assert.equal(won.length, 1);
    assert.equal(lost.length, 1);
    assert.ok(isMtlsError(lost[0]?.reason, "E_TOKEN_USED"), String(lost[0]?.reason));
    const certs = await certsNamed(f.ca, "web");
    assert.equal(certs.length, 1);
    assert.equal((await store.getToken(id))?.usedBySerial, certs[0]?.serial);
    const issues = (await store.listAudit()).filter(
      (e) => e.action === "cert.issue" && e.details.name === "web",
    );
    assert.equal(issues.length, 1);
  });

  test("when the transaction fails after the token was marked, neither the token nor the certificate changes", async () => {
    const f = await freshCa();
    const { token, id } = await createToken(f.ca, grant(), { actor: ACTOR });
    const store = f.ca.store;
    const transaction = store.transaction.bind(store);
    const boom = new Error("disk full");
    // Every write of the enrollment succeeds except the last one, the token.use event.
    store.transaction = <T>(fn: (tx: StoreTx) => Promise<T>) =>
      transaction((tx) =>
        fn(
          new Proxy(tx, {
            get(target, prop) {
              if (prop === "appendAudit") {
                return async (e: Parameters<StoreTx["appendAudit"]>[0]) => {
                  if (e.action === "token.use") throw boom;
                  return target.appendAudit(e);
                };
              }
              const value = Reflect.get(target, prop);
              return typeof value === "function" ? value.bind(target) : value;
            },
          }),
        ),
      );
    await assert.rejects(enroll(f.ca, { token, csr: makeCsr().pem }), (err) => err === boom);
    store.transaction = transaction;
    assert.equal((await store.getToken(id))?.usedAt, null);
    assert.equal((await certsNamed(f.ca, "web")).length, 0);
    assert.ok(!(await store.listAudit()).some((e) => e.action === "cert.issue" && e.details.name === "web"));
    // and the token still works
    const issued = await enroll(f.ca, { token, csr: makeCsr().pem });
    assert.equal((await store.getToken(id))?.usedBySerial, issued.record.serial);
  });

  test("issue()'s withinTransaction hook commits with the certificate, and a throw records nothing", async () => {
    const f = await freshCa();
    const req = {
      profile: "server" as const,
      name: "hooked",
      sans: [{ type: "dns" as const, value: "hooked.acme.test" }],
      actor: ACTOR,
    };
    const boom = new Error("no");
    await assert.rejects(
      f.ca.issue({
        ...req,
        withinTransaction: async (tx, rec) => {
          assert.equal((await tx.getCertificate(rec.serial))?.status, "valid");
          await tx.setSetting("hooked", rec.serial);
          throw boom;
        },
      }),
      (err) => err === boom,
    );
    assert.equal((await certsNamed(f.ca, "hooked")).length, 0);
    assert.equal(await f.ca.store.getSetting("hooked"), undefined);
    const issued = await f.ca.issue({
      ...req,
      withinTransaction: (tx, rec) => tx.setSetting("hooked", rec.serial),
    });
    assert.equal(await f.ca.store.getSetting("hooked"), issued.record.serial);
    assert.equal(parseCertificates(issued.chainPem).length, 2);
  });
});
