import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { describe, it } from "node:test";
import { caFixtures } from "../../test/fixtures/ca.js";
import { isMtlsError } from "../errors.js";
import { formatSan } from "../pki/names.js";
import { ensureServerCert, parseHostSan, serverCertFiles, wantedServerSans } from "./server-cert.js";

const { freshCa } = caFixtures("server-cert");

const names = (...args: Parameters<typeof wantedServerSans>) => wantedServerSans(...args).map(formatSan);

describe("the API certificate's names", () => {
  it("a loopback listener answers as localhost and its address", () => {
    assert.deepEqual(names(["127.0.0.1"], []), ["dns:localhost", "ip:127.0.0.1"]);
    assert.deepEqual(names(["::1"], []), ["dns:localhost", "ip:::1"]);
    assert.deepEqual(names(["localhost"], []), ["dns:localhost", "ip:127.0.0.1"]);
  });

  it("adds the public URL's host and --san names, once each", () => {
    assert.deepEqual(
      names(["127.0.0.1"], ["ca.acme.test", "ip:10.0.0.5", "dns:localhost"], "http://CA.acme.test:8080/x"),
      ["dns:localhost", "ip:127.0.0.1", "dns:ca.acme.test", "ip:10.0.0.5"],
    );
    assert.deepEqual(names(["ca.acme.test"], []), ["dns:ca.acme.test"]);
  });

  it("a wildcard listener answers as this machine and loopback", () => {
    const got = names(["0.0.0.0"], []);
    assert.ok(got.includes("dns:localhost") && got.includes("ip:127.0.0.1"));
    if (hostname().includes(".")) assert.ok(got.includes(`dns:${hostname().toLowerCase()}`));
  });

  it("--san takes hosts and addresses, not e-mail or URIs", () => {
    assert.deepEqual(parseHostSan("[::1]"), { type: "ip", value: "::1" });
    assert.deepEqual(parseHostSan("192.0.2.1"), { type: "ip", value: "192.0.2.1" });
    assert.throws(
      () => parseHostSan("email:a@b.test"),
      (e) => isMtlsError(e, "E_USAGE"),
    );
    assert.throws(
      () => parseHostSan("bad name"),
      (e) => isMtlsError(e, "E_BAD_SAN"),
    );
  });
});

describe("the API certificate for a key kept elsewhere (a PKCS#11 token)", () => {
  const spkiOfNew = () =>
    new Uint8Array(
      generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey.export({
        type: "spki",
        format: "der",
      }),
    );

  it("certifies the given public key, writes no key file, and renews for the same key", async () => {
    const { ca, paths, clock } = await freshCa();
    const spki = spkiOfNew();
    const opts = { stateDir: paths.dir, sans: wantedServerSans(["127.0.0.1"], []), actor: "test", spki };
    const first = await ensureServerCert(ca, opts);
    assert.equal(first.issued, "no certificate yet");
    assert.equal(first.keyPem, undefined);
    assert.deepEqual(Buffer.from(first.leaf.spki), Buffer.from(spki));
    assert.equal(existsSync(serverCertFiles(paths.dir).key), false, "no key file");

    const kept = await ensureServerCert(ca, opts);
    assert.equal(kept.issued, undefined);
    assert.equal(kept.leaf.serial, first.leaf.serial);

    clock.now = new Date(
      first.leaf.notBefore.getTime() + (first.leaf.notAfter.getTime() - first.leaf.notBefore.getTime()) * 0.7,
    );
    const renewed = await ensureServerCert(ca, opts);
    assert.equal(renewed.issued, "two thirds of its life gone");
    assert.notEqual(renewed.leaf.serial, first.leaf.serial);
    assert.deepEqual(Buffer.from(renewed.leaf.spki), Buffer.from(spki), "same key after renewal");
    assert.equal(existsSync(serverCertFiles(paths.dir).key), false);

    const other = spkiOfNew();
    const switched = await ensureServerCert(ca, { ...opts, spki: other });
    assert.equal(switched.issued, "the certificate is for another key than the token's");
    assert.deepEqual(Buffer.from(switched.leaf.spki), Buffer.from(other));
  });

  it("replaces a software-key certificate when the key moves to a token", async () => {
    const { ca, paths } = await freshCa();
    const sans = wantedServerSans(["127.0.0.1"], []);
    const soft = await ensureServerCert(ca, { stateDir: paths.dir, sans, actor: "test" });
    assert.ok(soft.keyPem);
    const spki = spkiOfNew();
    const moved = await ensureServerCert(ca, { stateDir: paths.dir, sans, actor: "test", spki });
    assert.equal(moved.issued, "the certificate is for another key than the token's");
    assert.deepEqual(Buffer.from(moved.leaf.spki), Buffer.from(spki));
  });
});
