import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import * as tls from "node:tls";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import type { CertInfo } from "../pki/certinfo.js";
import { makeSan } from "../pki/names.js";
import { CertInfoCache, identityFromCert, peerCertificateChain, peerCertificates } from "./identity.js";

let pki: TestPki;
let server: IssuedFiles;
let alice: IssuedFiles;
let bob: IssuedFiles;
let carol: IssuedFiles;

before(async () => {
  pki = await createTestPki("mtls-identity-");
  server = await pki.issue("server", "web", { sans: [makeSan("ip", "127.0.0.1")] });
  alice = await pki.issue("client", "alice", { sans: [makeSan("uri", "spiffe://acme.test/user/alice")] });
  bob = await pki.issue("client", "bob");
  carol = await pki.issue("client", "carol");
});
after(() => pki.close());

/** The DER a certificate would arrive as (a fresh Buffer each time, as getPeerCertificate gives). */
const raw = (f: IssuedFiles) => Buffer.from(f.certificate.der);

describe("CertInfoCache", () => {
  test("the same DER twice gives the same object, parsed once", () => {
    const cache = new CertInfoCache(8);
    const first = cache.parse(raw(alice));
    const second = cache.parse(raw(alice));
    assert.equal(second, first);
    assert.equal(cache.size, 1);
    assert.equal(first.fingerprint, alice.certificate.fingerprint);
    assert.equal(first.subject, alice.certificate.subject);
  });

  test("different certificates give different objects, each its own", () => {
    const cache = new CertInfoCache(8);
    const a = cache.parse(raw(alice));
    const b = cache.parse(raw(bob));
    assert.notEqual(a, b);
    assert.equal(a.serial, alice.certificate.serial);
    assert.equal(b.serial, bob.certificate.serial);
    assert.equal(cache.size, 2);
  });

  test("a single changed byte is another key: the cache never answers for other bytes", () => {
    const cache = new CertInfoCache(8);
    const good = cache.parse(raw(alice));
    const tampered = raw(alice);
    // Flip a bit inside the signature (the last byte): still parseable, different certificate bytes.
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 1;
    const other = cache.parse(tampered);
    assert.notEqual(other, good);
    assert.notEqual(other.fingerprint, good.fingerprint);
  });

  test("holds at most `max` entries and drops the least recently used", () => {
    const cache = new CertInfoCache(2);
    const a = cache.parse(raw(alice));
    const b = cache.parse(raw(bob));
    assert.equal(cache.parse(raw(alice)), a); // alice is now the most recently used
    cache.parse(raw(carol)); // evicts bob
    assert.equal(cache.size, 2);
    assert.equal(cache.parse(raw(alice)), a, "alice stayed");
    const b2 = cache.parse(raw(bob));
    assert.notEqual(b2, b, "bob was dropped and parsed again");
    assert.deepEqual(b2, b);
    assert.equal(cache.size, 2);
    assert.throws(() => new CertInfoCache(0), RangeError);
  });

  test("what it hands out is frozen: one connection cannot change another's certificate", () => {
    const info = new CertInfoCache(2).parse(raw(alice));
    assert.ok(Object.isFrozen(info) && Object.isFrozen(info.sans) && Object.isFrozen(info.extKeyUsage));
    assert.throws(() => {
      (info as { subject: string }).subject = "CN=mallory";
    }, TypeError);
    assert.throws(() => (info.sans as unknown[]).push({ type: "uri", value: "spiffe://x" }), TypeError);
  });

  test("a malformed certificate throws and is not cached", () => {
    const cache = new CertInfoCache(2);
    assert.throws(() => cache.parse(Buffer.from("not a certificate")));
    assert.equal(cache.size, 0);
  });
});

describe("identityFromCert", () => {
  test("the same CertInfo gives the same identity object; another gives another", () => {
    const cache = new CertInfoCache(4);
    const a = cache.parse(raw(alice));
    const id = identityFromCert(a);
    assert.equal(identityFromCert(a), id);
    assert.equal(identityFromCert(cache.parse(raw(alice))), id);
    assert.equal(id.commonName, "alice");
    assert.deepEqual(id.uris, ["spiffe://acme.test/user/alice"]);
    assert.ok(Object.isFrozen(id) && Object.isFrozen(id.uris));
    const b = identityFromCert(cache.parse(raw(bob)));
    assert.notEqual(b, id);
    assert.equal(b.commonName, "bob");
  });
});

describe("peerCertificateChain on real sockets", () => {
  /** One mTLS handshake as `client`; returns what the server side reads of the peer. */
  async function serverSees(client: IssuedFiles): Promise<{
    full: CertInfo[];
    leafOnly: CertInfo[];
    detailed: tls.DetailedPeerCertificate;
  }> {
    const ca = readFileSync(server.ca);
    const srv = tls.createServer({
      cert: readFileSync(server.cert),
      key: readFileSync(server.key),
      ca,
      requestCert: true,
      rejectUnauthorized: false,
    });
    try {
      const seen = new Promise<{
        full: CertInfo[];
        leafOnly: CertInfo[];
        detailed: tls.DetailedPeerCertificate;
      }>((resolve, reject) => {
        srv.once("secureConnection", (socket) => {
          socket.on("error", () => undefined);
          try {
            // leafOnly first: reading the leaf must not disturb the detailed chain after it.
            const leafOnly = peerCertificateChain(socket, { leafOnly: true });
            const full = peerCertificateChain(socket);
            resolve({ full, leafOnly, detailed: socket.getPeerCertificate(true) });
          } catch (err) {
            reject(err);
          }
          socket.end();
        });
        srv.once("tlsClientError", reject);
      });
      await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
      const socket = tls.connect({
        host: "127.0.0.1",
        port: (srv.address() as AddressInfo).port,
        ca,
        cert: readFileSync(client.cert),
        key: readFileSync(client.key),
        rejectUnauthorized: false,
      });
      socket.on("data", () => undefined);
      socket.on("error", () => undefined);
      try {
        return await seen;
      } finally {
        socket.destroy();
      }
    } finally {
      srv.close();
    }
  }

  test("two connections with the same certificate share the parsed chain; leafOnly reads the leaf", async () => {
    const one = await serverSees(alice);
    const two = await serverSees(alice);
    assert.equal(one.full.length, 3, "leaf, intermediate, root");
    assert.equal(one.full[0]?.fingerprint, alice.certificate.fingerprint);
    assert.ok(one.full[2]?.selfSigned);
    for (const [i, info] of one.full.entries()) assert.equal(two.full[i], info, `depth ${i}`);
    assert.equal(one.leafOnly.length, 1);
    assert.equal(one.leafOnly[0], one.full[0]);
    // Node's fingerprint256 is SHA-256 of `raw`, the bytes the cache keys on (checked, not assumed).
    const hex = createHash("sha256").update(one.detailed.raw).digest("hex");
    assert.equal(one.detailed.fingerprint256.replaceAll(":", "").toLowerCase(), hex);
    assert.ok(peerCertificates.size >= 3);

    const other = await serverSees(bob);
    assert.notEqual(other.full[0], one.full[0]);
    assert.equal(other.full[1], one.full[1], "the shared intermediate is the same object");
  });
});
