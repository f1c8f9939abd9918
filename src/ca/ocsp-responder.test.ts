import "reflect-metadata";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { promisify } from "node:util";
import { BasicOCSPResponse, OCSPRequest, OCSPResponse, Request, TBSRequest } from "@peculiar/asn1-ocsp";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { Extension } from "@peculiar/asn1-x509";
import { type StatePaths, statePaths } from "../config/state.js";
import { isMtlsError } from "../errors.js";
import { type CertInfo, certToPem, parseCertificates } from "../pki/certinfo.js";
import { derOctetString } from "../pki/der.js";
import { buildOcspRequest, certIdFor, OCSP_NONCE_OID, parseOcspResponse } from "../pki/ocsp.js";
import { createRevocationChecker } from "../tls/revocation.js";
import { CertificateAuthority as Ca, type CertificateAuthority, type Clock } from "./authority.js";
import { initCa } from "./init.js";
import { OCSP_CERT_NAME } from "./ocsp-cert.js";
import { OCSP_VALIDITY_MS, OcspResponder } from "./ocsp-responder.js";
import { openCa } from "./open.js";

const run = promisify(execFile);
const DAY = 86_400_000;
const PASS = "test";

const root = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "mtls-ocsp-"));
const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
  rmSync(root, { recursive: true, force: true });
});

const templates = new Map<string, string>();
let fixtures = 0;

interface Fixture {
  paths: StatePaths;
  ca: CertificateAuthority;
  clock: { now: Date };
  dir: string;
}

/** A CA of its own per test (a copy of one initCa per option set), its clock movable. */
async function freshCa(opts: { publicUrl?: string } = {}): Promise<Fixture> {
  const key = JSON.stringify(opts);
  let template = templates.get(key);
  if (!template) {
    template = join(root, `template-${templates.size}`);
    await initCa({ paths: statePaths(template), name: "Acme", passphrase: PASS, actor: "cli:test", ...opts });
    templates.set(key, template);
  }
  const dir = join(root, `ca-${++fixtures}`);
  const paths = statePaths(join(dir, "state"));
  cpSync(template, paths.dir, { recursive: true });
  const clock = { now: new Date() };
  const ca = await openCa(paths, { env: { MTLS_PASSPHRASE: PASS }, clock: () => clock.now });
  cleanup.push(() => ca.store.close());
  return { paths, ca, clock, dir };
}

async function responderFor(f: Fixture, opts: Parameters<typeof OcspResponder.open>[1] = {}) {
  const r = await OcspResponder.open(f.ca, opts);
  cleanup.push(() => r.close());
  return r;
}

const issue = async (ca: CertificateAuthority, name: string): Promise<CertInfo> =>
  (await ca.issue({ profile: "client", name, sans: [], actor: "cli:test" })).certificate;

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const basicOf = (der: Uint8Array): BasicOCSPResponse => {
  const resp = AsnConvert.parse(der, OCSPResponse);
  assert.ok(resp.responseBytes);
  return AsnConvert.parse(resp.responseBytes.response.buffer, BasicOCSPResponse);
};

/** An OCSPRequest for `leaf` with a nonce extension whose extnValue is `extnValue` as given. */
function requestWithNonceValue(leaf: CertInfo, issuer: CertInfo, extnValue: Uint8Array): Uint8Array {
  const tbs = new TBSRequest({ requestList: [new Request({ reqCert: certIdFor(leaf, issuer) })] });
  tbs.requestExtensions = [new Extension({ extnID: OCSP_NONCE_OID, extnValue: new OctetString(extnValue) })];
  return new Uint8Array(AsnConvert.serialize(new OCSPRequest({ tbsRequest: tbs })));
}

/** One request naming several certificates (CertIDs with the given hash each). */
function multiRequest(ids: { leaf: Pick<CertInfo, "serial">; issuer: CertInfo; hash?: "sha1" | "sha256" }[]) {
  const tbs = new TBSRequest({
    requestList: ids.map((x) => new Request({ reqCert: certIdFor(x.leaf, x.issuer, x.hash ?? "sha1") })),
  });
  return new Uint8Array(AsnConvert.serialize(new OCSPRequest({ tbsRequest: tbs })));
}

/** A loopback HTTP front for a responder (POST /ocsp), closed after the tests; returns its URL. */
async function serve(respond: (der: Uint8Array) => Promise<{ der: Uint8Array }>): Promise<string> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const reply = await respond(Buffer.concat(chunks));
      res.writeHead(200, { "content-type": "application/ocsp-response" }).end(reply.der);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanup.push(() => {
    server.closeAllConnections();
    return new Promise((res) => server.close(res));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/ocsp`;
}

const ERR = {
  malformedRequest: "30030a0101",
  internalError: "30030a0102",
  unauthorized: "30030a0106",
};

describe("the delegated OCSP responder certificate", () => {
  test("issued by the intermediate for OCSPSigning with nocheck, no CDP/AIA; key encrypted 0600; in the inventory as ocsp", async () => {
    const f = await freshCa({ publicUrl: "https://ca.acme.test" });
    const r = await responderFor(f);
    const cert = r.certificate;
    assert.equal(cert.issuer, f.ca.intermediate.subject);
    assert.deepEqual(cert.extKeyUsage, ["OCSPSigning"]);
    assert.equal(cert.isCa, false);
    assert.deepEqual(cert.crlUrls, []);
    assert.deepEqual(cert.ocspUrls, []);
    const life = cert.notAfter.getTime() - cert.notBefore.getTime();
    assert.ok(Math.abs(life - 30 * DAY - 60_000) < 2000, `30 days (+1 min back-dating), got ${life}`);

    const text = (await run("openssl", ["x509", "-in", f.paths.ocspCert, "-noout", "-text"])).stdout;
    assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature\n/);
    assert.match(text, /X509v3 Extended Key Usage:\s*\n\s+OCSP Signing\n/);
    assert.match(text, /OCSP No Check/);
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
    assert.match(text, /X509v3 Subject Key Identifier/);
    assert.match(text, /X509v3 Authority Key Identifier/);
    assert.doesNotMatch(text, /CRL Distribution Points|Authority Information Access/);
    writeFileSync(join(f.dir, "root.pem"), f.ca.rootPem);
    writeFileSync(join(f.dir, "int.pem"), f.ca.intermediatePem);
    const verified = await run("openssl", [
      "verify",
      "-CAfile",
      join(f.dir, "root.pem"),
      "-untrusted",
      join(f.dir, "int.pem"),
      "-purpose",
      "ocsphelper",
      f.paths.ocspCert,
    ]);
    assert.match(verified.stdout, /: OK/);

    const keyPem = readFileSync(f.paths.ocspKey, "utf8");
    assert.match(keyPem, /^-----BEGIN ENCRYPTED PRIVATE KEY-----/);
    assert.equal(statSync(f.paths.ocspKey).mode & 0o777, 0o600);
    await run("openssl", ["pkey", "-in", f.paths.ocspKey, "-passin", `pass:${PASS}`, "-noout"]);

    const [rec] = await f.ca.store.findCertificates({ profile: "ocsp" });
    assert.equal(rec?.serial, cert.serial);
    assert.equal(rec?.name, OCSP_CERT_NAME);
    assert.equal(rec?.status, "valid");
    assert.equal(rec?.issuerSerial, f.ca.intermediate.serial);
    assert.equal(rec?.certPath, f.paths.ocspCert);
    const event = (await f.ca.store.listAudit()).at(-1);
    assert.equal(event?.action, "cert.issue");
    assert.equal(event?.subject, cert.serial);
    assert.equal(event?.details.profile, "ocsp");
    assert.ok((await f.ca.store.verifyAudit()).ok);
  });

  test("reused while young, replaced once 2/3 of its life has passed (by open() and by the timer's method)", async () => {
    const f = await freshCa();
    const first = (await responderFor(f)).certificate;
    f.clock.now = new Date(f.clock.now.getTime() + 19 * DAY);
    const again = await responderFor(f);
    assert.equal(again.certificate.serial, first.serial, "19 of 30 days: kept");
    f.clock.now = new Date(f.clock.now.getTime() + 2 * DAY);
    const renewed = await responderFor(f);
    assert.notEqual(renewed.certificate.serial, first.serial, "21 of 30 days: replaced");
    assert.equal(parseCertificates(readFileSync(f.paths.ocspCert))[0]?.serial, renewed.certificate.serial);
    const before = renewed.certificate.serial;
    const third = await renewed.renewCertificate();
    assert.notEqual(third.serial, before);
    assert.equal(renewed.certificate.serial, third.serial);
    const recs = await f.ca.store.findCertificates({ profile: "ocsp" });
    assert.equal(recs.length, 3);
    // Answers are signed by the new one and still verify.
    const alice = await issue(f.ca, "alice");
    const reply = await renewed.respond(buildOcspRequest(alice, f.ca.intermediate));
    assert.equal(parseOcspResponse(reply.der, alice, f.ca.intermediate, { at: f.clock.now }).status, "good");
    const certs = basicOf(reply.der).certs ?? [];
    assert.equal(certs.length, 1, "the responder certificate rides in the answer");
    assert.equal(hex(new Uint8Array(AsnConvert.serialize(certs[0]))), hex(third.der));
  });

  test("a key that is not the certificate's is replaced; a wrong passphrase is E_PASSPHRASE, never a new key", async () => {
    const f = await freshCa();
    const first = (await responderFor(f)).certificate;
    const other = await freshCa();
    await responderFor(other);
    cpSync(other.paths.ocspKey, f.paths.ocspKey); // a valid key, encrypted alike, but not this certificate's
    const second = (await responderFor(f)).certificate;
    assert.notEqual(second.serial, first.serial);
    const keyBefore = readFileSync(f.paths.ocspKey);

    const wrong = await Ca.open(f.paths, f.ca.store, { passphrase: () => "wrong" });
    await assert.rejects(OcspResponder.open(wrong), (err) => isMtlsError(err, "E_PASSPHRASE"));
    assert.equal((await f.ca.store.findCertificates({ profile: "ocsp" })).length, 2);
    assert.deepEqual(readFileSync(f.paths.ocspKey), keyBefore);
  });
});

describe("OcspResponder.respond", () => {
  test("good, then revoked (time and reason) once ca.revoke() commits: the cached answer is dropped at once", async () => {
    const f = await freshCa();
    const r = await responderFor(f);
    const alice = await issue(f.ca, "alice");
    const req = buildOcspRequest(alice, f.ca.intermediate);
    const first = await r.respond(req);
    assert.equal(first.status, "good");
    assert.equal(first.nonce, false);
    assert.equal(first.thisUpdate?.getTime(), Math.floor(f.clock.now.getTime() / 1000) * 1000);
    assert.equal((first.nextUpdate?.getTime() ?? 0) - (first.thisUpdate?.getTime() ?? 0), OCSP_VALIDITY_MS);
    const answer = parseOcspResponse(first.der, alice, f.ca.intermediate, { at: f.clock.now });
    assert.equal(answer.status, "good");
    assert.deepEqual(answer.nextUpdate, first.nextUpdate);

    const cached = await r.respond(req);
    assert.equal(cached.der, first.der, "the pre-signed answer, not a new signature");

    f.clock.now = new Date(f.clock.now.getTime() + 5_000);
    await f.ca.revoke([alice.serial], "keyCompromise", "cli:test");
    const after = await r.respond(req);
    assert.equal(after.status, "revoked");
    const revoked = parseOcspResponse(after.der, alice, f.ca.intermediate, { at: f.clock.now });
    assert.equal(revoked.status, "revoked");
    assert.equal(revoked.reason, "keyCompromise");
    assert.equal(revoked.revokedAt?.getTime(), Math.floor(f.clock.now.getTime() / 1000) * 1000);

    // An "unspecified" revocation carries no reason code, as on the CRL.
    const bob = await issue(f.ca, "bob");
    await r.respond(buildOcspRequest(bob, f.ca.intermediate));
    await f.ca.revoke([bob.serial], "unspecified", "cli:test");
    const b = parseOcspResponse(
      (await r.respond(buildOcspRequest(bob, f.ca.intermediate))).der,
      bob,
      f.ca.intermediate,
      {
        at: f.clock.now,
      },
    );
    assert.equal(b.status, "revoked");
    assert.equal(b.reason, undefined);
  });

  test("a pre-signed answer is re-signed after half its validity", async () => {
    const f = await freshCa();
    const r = await responderFor(f, { validityMs: 60_000 });
    const alice = await issue(f.ca, "alice");
    const req = buildOcspRequest(alice, f.ca.intermediate);
    const a = await r.respond(req);
    f.clock.now = new Date(f.clock.now.getTime() + 29_000);
    assert.equal((await r.respond(req)).der, a.der);
    f.clock.now = new Date(f.clock.now.getTime() + 2_000);
    const b = await r.respond(req);
    assert.notEqual(b.der, a.der);
    assert.equal(b.thisUpdate?.getTime(), Math.floor(f.clock.now.getTime() / 1000) * 1000);
  });

  test("unknown for a serial we did not issue (no nextUpdate); unauthorized for a CertID of another issuer", async () => {
    const f = await freshCa();
    const r = await responderFor(f);
    const stranger = { serial: randomBytes(16).toString("hex") };
    const reply = await r.respond(multiRequest([{ leaf: stranger, issuer: f.ca.intermediate }]));
    assert.equal(reply.status, "unknown");
    assert.equal(reply.nextUpdate, undefined);
    const single = basicOf(reply.der).tbsResponseData.responses[0];
    assert.ok(single?.certStatus.unknown !== undefined);
    assert.equal(single?.nextUpdate, undefined);
    // The intermediate's own serial under the intermediate as issuer: not one of its leaves.
    const own = await r.respond(multiRequest([{ leaf: f.ca.intermediate, issuer: f.ca.intermediate }]));
    assert.equal(own.status, "unknown");

    // The intermediate named as issued by the root: the root's business (its CRL), not ours.
    const byRoot = await r.respond(buildOcspRequest(f.ca.intermediate, f.ca.root));
    assert.equal(byRoot.status, "unauthorized");
    assert.equal(hex(byRoot.der), ERR.unauthorized);
    const other = await freshCa({ publicUrl: "https://other.test" }); // another template: another CA
    const theirs = await issue(other.ca, "eve");
    assert.equal(
      (await r.respond(buildOcspRequest(theirs, other.ca.intermediate, { hash: "sha256" }))).status,
      "unauthorized",
    );
    const mixed = multiRequest([
      { leaf: await issue(f.ca, "alice"), issuer: f.ca.intermediate },
      { leaf: theirs, issuer: other.ca.intermediate },
    ]);
    assert.equal(hex((await r.respond(mixed)).der), ERR.unauthorized);
  });

  test("echoes the nonce byte for byte (1..32 octets, RFC 8954); refuses 0 or 33 octets as malformedRequest", async () => {
    const f = await freshCa();
    const r = await responderFor(f);
    const alice = await issue(f.ca, "alice");
    for (const size of [1, 16, 32]) {
      const nonce = new Uint8Array(randomBytes(size));
      const reply = await r.respond(buildOcspRequest(alice, f.ca.intermediate, { nonce }));
      assert.equal(reply.nonce, true);
      assert.equal(reply.status, "good");
      assert.equal(
        parseOcspResponse(reply.der, alice, f.ca.intermediate, { nonce, at: f.clock.now }).status,
        "good",
      );
      const ext = basicOf(reply.der).tbsResponseData.responseExtensions?.find(
        (e) => e.extnID === OCSP_NONCE_OID,
      );
      assert.equal(
        hex(new Uint8Array(ext?.extnValue.buffer ?? new ArrayBuffer(0))),
        hex(derOctetString(nonce)),
      );
    }
    // Two requests with nonces: two signatures, each with its own nonce.
    const n1 = new Uint8Array(16).fill(1);
    const n2 = new Uint8Array(16).fill(2);
    const a1 = await r.respond(buildOcspRequest(alice, f.ca.intermediate, { nonce: n1 }));
    const a2 = await r.respond(buildOcspRequest(alice, f.ca.intermediate, { nonce: n2 }));
    assert.throws(
      () => parseOcspResponse(a1.der, alice, f.ca.intermediate, { nonce: n2, at: f.clock.now }),
      /nonce/,
    );
    assert.equal(
      parseOcspResponse(a2.der, alice, f.ca.intermediate, { nonce: n2, at: f.clock.now }).status,
      "good",
    );
    // A nonce sent without the inner OCTET STRING (old clients) is echoed as it came.
    const raw = new Uint8Array(randomBytes(20));
    const rawReply = await r.respond(requestWithNonceValue(alice, f.ca.intermediate, raw));
    assert.equal(rawReply.nonce, true);
    const ext = basicOf(rawReply.der).tbsResponseData.responseExtensions?.[0];
    assert.equal(hex(new Uint8Array(ext?.extnValue.buffer ?? new ArrayBuffer(0))), hex(raw));

    for (const bad of [
      derOctetString(new Uint8Array(0)),
      derOctetString(new Uint8Array(33)),
      new Uint8Array(0),
    ]) {
      const reply = await r.respond(requestWithNonceValue(alice, f.ca.intermediate, bad));
      assert.equal(reply.status, "malformedRequest");
      assert.equal(hex(reply.der), ERR.malformedRequest);
    }
  });

  test("malformed bytes are answered malformedRequest, never thrown", async () => {
    const f = await freshCa();
    const r = await responderFor(f);
    const alice = await issue(f.ca, "alice");
    const good = buildOcspRequest(alice, f.ca.intermediate);
    const inputs = [
      new Uint8Array(0),
      new Uint8Array([0x30]),
      new Uint8Array([0x30, 0x00]),
      new Uint8Array(randomBytes(200)),
      good.subarray(0, good.length - 1),
      new Uint8Array([...good, 0x00]),
      new Uint8Array([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
      multiRequest([]),
      Buffer.from("GET /ocsp HTTP/1.1\r\n\r\n"),
    ];
    for (const input of inputs) {
      const reply = await r.respond(input);
      assert.deepEqual(
        { status: reply.status, der: hex(reply.der), nonce: reply.nonce },
        { status: "malformedRequest", der: ERR.malformedRequest, nonce: false },
        hex(input),
      );
    }
    // more CertIDs than allowed
    const many = multiRequest(Array.from({ length: 3 }, () => ({ leaf: alice, issuer: f.ca.intermediate })));
    const limited = await responderFor(f, { maxCertIds: 2 });
    assert.equal((await limited.respond(many)).status, "malformedRequest");
  });

  test("several CertIDs in one request: each answered in order, CertIDs echoed exactly (SHA-1 and SHA-256)", async () => {
    const f = await freshCa();
    const r = await responderFor(f);
    const alice = await issue(f.ca, "alice");
    const bob = await issue(f.ca, "bob");
    await f.ca.revoke([bob.serial], "superseded", "cli:test");
    const stranger = { serial: randomBytes(16).toString("hex") };
    const req = multiRequest([
      { leaf: alice, issuer: f.ca.intermediate },
      { leaf: bob, issuer: f.ca.intermediate, hash: "sha256" },
      { leaf: stranger, issuer: f.ca.intermediate },
    ]);
    const reply = await r.respond(req);
    assert.equal(reply.status, "revoked", "the worst of the three");
    const responses = basicOf(reply.der).tbsResponseData.responses;
    const requested = AsnConvert.parse(req, OCSPRequest).tbsRequest.requestList.map((x) =>
      hex(new Uint8Array(AsnConvert.serialize(x.reqCert))),
    );
    assert.deepEqual(
      responses.map((s) => hex(new Uint8Array(AsnConvert.serialize(s.certID)))),
      requested,
    );
    assert.ok(responses[0]?.certStatus.good !== undefined);
    assert.equal(responses[1]?.certStatus.revoked?.revocationReason?.reason, 4);
    assert.ok(responses[2]?.certStatus.unknown !== undefined);
    assert.equal(parseOcspResponse(reply.der, bob, f.ca.intermediate, { at: f.clock.now }).status, "revoked");
    assert.equal(parseOcspResponse(reply.der, alice, f.ca.intermediate, { at: f.clock.now }).status, "good");
  });

  test("openssl's OCSP client verifies the answers (CAfile root + intermediate): status, reason, its nonce", async () => {
    const f = await freshCa();
    const r = await responderFor(f);
    const url = await serve((der) => r.respond(der));
    const alice = await issue(f.ca, "alice");
    const bob = await issue(f.ca, "bob");
    await f.ca.revoke([bob.serial], "keyCompromise", "cli:test");
    const file = (name: string, data: string | Uint8Array) => {
      const p = join(f.dir, name);
      writeFileSync(p, data);
      return p;
    };
    const chain = file("chain.pem", f.ca.intermediatePem + f.ca.rootPem);
    const int = file("int.pem", f.ca.intermediatePem);
    for (const [leaf, want] of [
      [alice, "good"],
      [bob, "revoked"],
    ] as const) {
      const cert = file(`${want}.pem`, certToPem(leaf.der));
      // `openssl ocsp -url` sends a nonce and refuses an answer that does not echo it; with
      // -no_nonce it gets the pre-signed answer.
      for (const nonce of [[], ["-no_nonce"]]) {
        const out = await run("openssl", [
          "ocsp",
          "-url",
          url,
          "-issuer",
          int,
          "-cert",
          cert,
          "-CAfile",
          chain,
          ...nonce,
        ]);
        assert.match(out.stderr, /Response verify OK/);
        assert.doesNotMatch(`${out.stdout}${out.stderr}`, /WARNING|error/i);
        assert.match(out.stdout, new RegExp(`${want}.pem: ${want}\\n`));
        assert.match(out.stdout, /This Update: .*\n\s+Next Update: /);
        if (want === "revoked") assert.match(out.stdout, /Reason: keyCompromise/);
      }
    }
  });

  test("a revocation by another process reaches the cache through the CRL file", async () => {
    const f = await freshCa();
    const r = await responderFor(f);
    const alice = await issue(f.ca, "alice");
    const req = buildOcspRequest(alice, f.ca.intermediate);
    assert.equal((await r.respond(req)).status, "good");
    const elsewhere = await openCa(f.paths, { env: { MTLS_PASSPHRASE: PASS } });
    cleanup.push(() => elsewhere.store.close());
    await elsewhere.revoke([alice.serial], "keyCompromise", "cli:other");
    const end = Date.now() + 5_000;
    let status = (await r.respond(req)).status;
    while (status !== "revoked" && Date.now() < end) {
      await new Promise((res) => setTimeout(res, 25));
      status = (await r.respond(req)).status;
    }
    assert.equal(status, "revoked");
  });

  test("a failing store is answered internalError, reported, not thrown", async () => {
    const f = await freshCa();
    const errors: string[] = [];
    const r = await responderFor(f, { onError: (e) => errors.push(e.message) });
    const alice = await issue(f.ca, "alice");
    await f.ca.store.close();
    const reply = await r.respond(buildOcspRequest(alice, f.ca.intermediate));
    assert.equal(reply.status, "internalError");
    assert.equal(hex(reply.der), ERR.internalError);
    assert.equal(errors.length, 1);
  });
});

describe("the tunnels' OCSP client (tls/revocation.ts) against this responder", () => {
  test("good, then revoked after ca.revoke(), over a loopback HTTP server named in the leaf's AIA", async () => {
    let responder: OcspResponder | undefined;
    const url = await serve((der) => (responder as OcspResponder).respond(der));
    const port = new URL(url).port;
    // a fresh template: the URL (and so the port) goes into every leaf
    const dir = join(root, `ca-live-${port}`);
    const paths = statePaths(dir);
    await initCa({
      paths,
      name: "Acme",
      passphrase: PASS,
      actor: "cli:test",
      publicUrl: `http://127.0.0.1:${port}`,
    });
    const clock: Clock = () => new Date();
    const ca = await openCa(paths, { env: { MTLS_PASSPHRASE: PASS }, clock });
    cleanup.push(() => ca.store.close());
    responder = await OcspResponder.open(ca);
    cleanup.push(() => responder?.close());
    const alice = await issue(ca, "alice");
    assert.deepEqual(alice.ocspUrls, [`http://127.0.0.1:${port}/ocsp`]);

    const errors: string[] = [];
    const checker = await createRevocationChecker({
      ocsp: true,
      ocspRecheckMs: 100,
      onError: (e) => errors.push(e.message),
    });
    cleanup.push(() => checker.close());
    assert.equal((await checker.check(alice, ca.intermediate)).status, "good");
    const updated = once(checker, "update");
    await ca.revoke([alice.serial], "keyCompromise", "cli:test");
    await updated; // the periodic re-poll of a serial in use saw the change
    const st = await checker.check(alice, ca.intermediate);
    assert.equal(st.status, "revoked");
    assert.equal(st.reason, "keyCompromise");
    assert.deepEqual(errors, []);
  });
});
