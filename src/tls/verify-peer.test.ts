import assert from "node:assert/strict";
import { createHash, X509Certificate } from "node:crypto";
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import * as tls from "node:tls";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import type { CertInfo } from "../pki/certinfo.js";
import { makeSan } from "../pki/names.js";
import { identityFromCert, peerCertificateChain } from "./identity.js";
import type {
  PeerVerification,
  RevocationChecker,
  RevocationStatus,
  TlsFiles,
  VerifyPeerOptions,
} from "./types.js";
import { verifyPeer } from "./verify-peer.js";

let pki: TestPki;
let server: IssuedFiles;
let wildcardServer: IssuedFiles;
let alice: IssuedFiles;
let mallory: IssuedFiles;
let expired: IssuedFiles;

before(async () => {
  pki = await createTestPki("mtls-verify-");
  server = await pki.issue("server", "web", {
    sans: [
      makeSan("dns", "localhost"),
      makeSan("ip", "127.0.0.1"),
      makeSan("uri", "spiffe://acme.test/svc/web"),
    ],
  });
  wildcardServer = await pki.issue("server", "wild", {
    sans: [makeSan("dns", "*.acme.test"), makeSan("ip", "127.0.0.1")],
  });
  alice = await pki.issue("client", "alice", {
    sans: [makeSan("uri", "spiffe://acme.test/user/alice"), makeSan("email", "alice@acme.test")],
    organizationalUnit: ["ops", "dev"],
  });
  mallory = await pki.issue("client", "mallory", { other: true });
  const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
  expired = await pki.issue("client", "old", { at: twoHoursAgo, ttlMs: 3_600_000 });
});
after(() => pki.close());

interface Outcome {
  /** What the server concluded about the client. */
  server: PeerVerification;
  /** What the client concluded about the server. */
  client: PeerVerification;
  serverChain: CertInfo[];
}

const pem = (files: TlsFiles | IssuedFiles) => ({
  cert: readFileSync(files.cert),
  key: readFileSync(files.key),
});

/**
 * One real mTLS handshake on 127.0.0.1, both ends with rejectUnauthorized: false (as the tunnel
 * runs), each end running verifyPeer on the other.
 */
async function handshake(opts: {
  serverCert?: IssuedFiles;
  clientCert?: IssuedFiles;
  servername?: string;
  onServer?: Partial<VerifyPeerOptions>;
  onClient?: Partial<VerifyPeerOptions>;
}): Promise<Outcome> {
  const ca = readFileSync(server.ca);
  const srv = tls.createServer({
    ...pem(opts.serverCert ?? server),
    ca,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: "TLSv1.2",
  });
  try {
    const serverSide = new Promise<[PeerVerification, CertInfo[]]>((resolve, reject) => {
      srv.once("secureConnection", (socket) => {
        socket.on("error", () => undefined);
        verifyPeer(socket, { purpose: "client", ...opts.onServer }).then(
          (v) => resolve([v, peerCertificateChain(socket)]),
          reject,
        );
        socket.end();
      });
      srv.once("tlsClientError", reject);
    });
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    const port = (srv.address() as AddressInfo).port;
    const clientSide = new Promise<PeerVerification>((resolve, reject) => {
      const socket = tls.connect(
        {
          host: "127.0.0.1",
          port,
          ca,
          rejectUnauthorized: false,
          ...(opts.servername ? { servername: opts.servername } : {}),
          ...(opts.clientCert ? pem(opts.clientCert) : {}),
        },
        () => {
          verifyPeer(socket, { purpose: "server", ...opts.onClient }).then(resolve, reject);
        },
      );
      socket.on("data", () => undefined);
      socket.on("error", () => undefined);
      socket.on("close", () =>
        setTimeout(() => reject(new Error("client closed before verifying")), 1000).unref(),
      );
    });
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error("handshake timed out")), 5000).unref(),
    );
    const [[serverResult, serverChain], clientResult] = await Promise.race([
      Promise.all([serverSide, clientSide]),
      timeout,
    ]);
    return { server: serverResult, client: clientResult, serverChain };
  } finally {
    srv.close();
  }
}

function refused(v: PeerVerification): Extract<PeerVerification, { ok: false }> {
  assert.equal(v.ok, false, `expected a refusal, got ${JSON.stringify(v.ok ? v.identity.subject : v)}`);
  return v as Extract<PeerVerification, { ok: false }>;
}

function accepted(v: PeerVerification): Extract<PeerVerification, { ok: true }> {
  assert.equal(v.ok, true, `expected acceptance, got ${v.ok ? "" : `${v.reason}: ${v.detail}`}`);
  return v as Extract<PeerVerification, { ok: true }>;
}

function fakeChecker(answer: RevocationStatus | Error): RevocationChecker & {
  calls: [CertInfo, CertInfo | undefined][];
} {
  const calls: [CertInfo, CertInfo | undefined][] = [];
  return Object.assign(new EventEmitter(), {
    calls,
    async check(leaf: CertInfo, issuer: CertInfo | undefined) {
      calls.push([leaf, issuer]);
      if (answer instanceof Error) throw answer;
      return answer;
    },
    close() {},
  });
}

describe("verifyPeer accepts", () => {
  test("a client certificate of the CA, with its identity", async () => {
    const { server: v, serverChain } = await handshake({ clientCert: alice });
    const ok = accepted(v);
    assert.equal(ok.leaf.serial, alice.certificate.serial);
    assert.deepEqual(ok.revocation, { status: "unknown", source: "none" });
    const id = ok.identity;
    assert.equal(id.commonName, "alice");
    assert.equal(id.organization, "Acme");
    assert.deepEqual(id.organizationalUnits, ["ops", "dev"]);
    assert.deepEqual(id.uris, ["spiffe://acme.test/user/alice"]);
    assert.deepEqual(id.emails, ["alice@acme.test"]);
    assert.deepEqual(id.dnsNames, []);
    assert.equal(id.fingerprint, alice.certificate.fingerprint);
    assert.equal(id.spkiSha256, createHash("sha256").update(alice.certificate.spki).digest("base64"));
    assert.equal(id.serial, alice.certificate.serial);
    assert.match(id.issuer, /Acme Intermediate CA/);
    assert.deepEqual(Buffer.from(id.der), Buffer.from(alice.certificate.der));
    // Leaf, the intermediate it sent, and the root Node completed the chain with.
    assert.deepEqual(
      serverChain.map((c) => c.subject),
      [alice.certificate.subject, pki.ca.intermediate.subject, pki.ca.root.subject],
    );
  });

  test('peerChain "leaf": the same verdict from the leaf alone, and the checker gets no issuer', async () => {
    const checker = fakeChecker({ status: "good", source: "none" });
    const { server: v } = await handshake({
      clientCert: alice,
      onServer: { peerChain: "leaf", revocation: checker },
    });
    const ok = accepted(v);
    assert.equal(ok.identity.commonName, "alice");
    assert.deepEqual(
      ok.chain?.map((c) => c.subject),
      [alice.certificate.subject],
    );
    assert.equal(checker.calls[0]?.[1], undefined);
    // Refusals read from the leaf alone too.
    const bad = await handshake({ clientCert: mallory, onServer: { peerChain: "leaf" } });
    assert.equal(refused(bad.server).reason, "unknown_ca");
  });

  test("a server carrying the expected DNS name, IP or URI", async () => {
    for (const onClient of [
      { expectDns: ["localhost"] },
      { expectDns: ["other.acme.test", "127.0.0.1"] },
      { expectUri: ["spiffe://acme.test/svc/web"] },
      { expectUri: ["SPIFFE://ACME.TEST/svc/web"] },
      {},
    ]) {
      const { client } = await handshake({ clientCert: alice, onClient });
      const ok = accepted(client);
      assert.deepEqual(ok.identity.dnsNames, ["localhost"]);
      assert.deepEqual(ok.identity.ips, ["127.0.0.1"]);
    }
  });

  test("a wildcard server name (checkHost)", async () => {
    const { client } = await handshake({
      serverCert: wildcardServer,
      clientCert: alice,
      onClient: { expectDns: ["vnc.acme.test"] },
    });
    accepted(client);
    const deeper = await handshake({
      serverCert: wildcardServer,
      clientCert: alice,
      onClient: { expectDns: ["a.vnc.acme.test"] },
    });
    assert.equal(refused(deeper.client).reason, "bad_name");
  });
});

describe("verifyPeer refuses", () => {
  test("no_certificate: the client sent none", async () => {
    const v = refused((await handshake({})).server);
    assert.equal(v.reason, "no_certificate");
    assert.equal(v.identity, undefined);
    assert.match(v.detail, /presented no certificate/);
  });

  test("unknown_ca: a certificate of another CA", async () => {
    const v = refused((await handshake({ clientCert: mallory })).server);
    assert.equal(v.reason, "unknown_ca");
    assert.match(v.detail, /UNABLE_TO_GET_ISSUER_CERT_LOCALLY/);
    assert.match(v.detail, /Evil Intermediate CA/);
    assert.equal(v.identity?.commonName, "mallory");
  });

  test("bad_purpose: a server certificate presented by a client (OpenSSL: INVALID_PURPOSE)", async () => {
    const v = refused((await handshake({ clientCert: server })).server);
    assert.equal(v.reason, "bad_purpose");
    assert.match(v.detail, /INVALID_PURPOSE/);
  });

  test("bad_purpose: a client certificate presented by a server (OpenSSL: INVALID_PURPOSE)", async () => {
    const v = refused((await handshake({ serverCert: alice, clientCert: alice })).client);
    assert.equal(v.reason, "bad_purpose");
    assert.match(v.detail, /INVALID_PURPOSE/);
  });

  test("bad_purpose: our own EKU check, when OpenSSL verified for the other purpose", async () => {
    // The server's OpenSSL checked alice for client use; asking for "server" must fail on the EKU.
    const v = refused((await handshake({ clientCert: alice, onServer: { purpose: "server" } })).server);
    assert.equal(v.reason, "bad_purpose");
    assert.match(v.detail, /not a server certificate \(EKU clientAuth; serverAuth needed\)/);
  });

  test("expired: OpenSSL's CERT_HAS_EXPIRED", async () => {
    const v = refused((await handshake({ clientCert: expired })).server);
    assert.equal(v.reason, "expired");
    assert.match(v.detail, /CERT_HAS_EXPIRED/);
    assert.match(v.detail, /expired \(notAfter/);
  });

  test("expired: our own check at the given clock (a resumed session may outlive a certificate)", async () => {
    const later = new Date(alice.certificate.notAfter.getTime() + 1000);
    const v = refused((await handshake({ clientCert: alice, onServer: { clock: () => later } })).server);
    assert.equal(v.reason, "expired");
  });

  test("bad_name: the server carries none of the expected names", async () => {
    const v = refused(
      (await handshake({ clientCert: alice, onClient: { expectDns: ["db.acme.test"] } })).client,
    );
    assert.equal(v.reason, "bad_name");
    assert.match(v.detail, /expected names \(DNS db.acme.test\); it has dns localhost, ip 127.0.0.1/);
    const u = refused(
      (await handshake({ clientCert: alice, onClient: { expectUri: ["spiffe://acme.test/svc/db"] } })).client,
    );
    assert.equal(u.reason, "bad_name");
  });

  test("bad_name: Node's own host check against servername (ERR_TLS_CERT_ALTNAME_INVALID)", async () => {
    const v = refused((await handshake({ clientCert: alice, servername: "db.acme.test" })).client);
    assert.equal(v.reason, "bad_name");
    assert.match(v.detail, /ERR_TLS_CERT_ALTNAME_INVALID/);
  });

  test("bad_name is checked for servers only", async () => {
    accepted((await handshake({ clientCert: alice, onServer: { expectDns: ["nowhere.test"] } })).server);
  });
});

describe("verifyPeer and revocation", () => {
  test("a revoked peer is refused, with reason and time", async () => {
    const revokedAt = new Date("2030-01-02T03:04:05Z");
    const checker = fakeChecker({
      status: "revoked",
      source: "crl:/x.crl (#7)",
      reason: "keyCompromise",
      revokedAt,
    });
    const v = refused((await handshake({ clientCert: alice, onServer: { revocation: checker } })).server);
    assert.equal(v.reason, "revoked");
    assert.match(v.detail, /revoked at 2030-01-02T03:04:05.000Z \(keyCompromise\) \[crl:\/x.crl \(#7\)\]/);
    assert.equal(v.identity?.commonName, "alice");
    assert.equal(checker.calls.length, 1);
    const [leaf, issuer] = checker.calls[0] as [CertInfo, CertInfo | undefined];
    assert.equal(leaf.serial, alice.certificate.serial);
    assert.equal(issuer?.serial, pki.ca.intermediate.serial);
  });

  test("good and unknown pass, and the status comes back", async () => {
    for (const status of ["good", "unknown"] as const) {
      const checker = fakeChecker({ status, source: "ocsp:http://127.0.0.1:1/ocsp" });
      const ok = accepted((await handshake({ clientCert: alice, onServer: { revocation: checker } })).server);
      assert.deepEqual(ok.revocation, { status, source: "ocsp:http://127.0.0.1:1/ocsp" });
    }
  });

  test("a checker that throws fails closed", async () => {
    const checker = fakeChecker(new Error("boom"));
    const v = refused((await handshake({ clientCert: alice, onServer: { revocation: checker } })).server);
    assert.equal(v.reason, "handshake_error");
    assert.match(v.detail, /revocation check failed: boom/);
  });

  test("the checker is not asked about peers already refused", async () => {
    const checker = fakeChecker({ status: "good", source: "none" });
    refused((await handshake({ clientCert: mallory, onServer: { revocation: checker } })).server);
    assert.equal(checker.calls.length, 0);
  });
});

describe("resumed sessions", () => {
  /** A server for several connections; returns what each side concluded, per connection. */
  async function resumption(onClient: (first: PeerVerification) => Partial<VerifyPeerOptions>) {
    const ca = readFileSync(server.ca);
    const serverResults: [boolean, PeerVerification][] = [];
    const srv = tls.createServer(
      { ...pem(server), ca, requestCert: true, rejectUnauthorized: false },
      (socket) => {
        socket.on("error", () => undefined);
        void verifyPeer(socket, { purpose: "client" }).then((v) =>
          serverResults.push([socket.isSessionReused(), v]),
        );
        socket.pipe(socket);
      },
    );
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    const port = (srv.address() as AddressInfo).port;
    const connectOnce = (session: Buffer | undefined, opts: Partial<VerifyPeerOptions>) =>
      new Promise<{ v: PeerVerification; reused: boolean; session: Buffer | undefined }>(
        (resolve, reject) => {
          let ticket: Buffer | undefined;
          let v: PeerVerification | undefined;
          const socket = tls.connect(
            {
              host: "127.0.0.1",
              port,
              ca,
              rejectUnauthorized: false,
              ...pem(alice),
              ...(session ? { session } : {}),
            },
            () => {
              verifyPeer(socket, { purpose: "server", expectDns: ["localhost"], ...opts }).then((r) => {
                v = r;
                socket.write("ping");
              }, reject);
            },
          );
          socket.on("session", (t: Buffer) => {
            ticket = t;
          });
          socket.on("error", reject);
          // The echo comes back after the TLS 1.3 tickets.
          socket.once("data", () => {
            const reused = socket.isSessionReused();
            socket.destroy();
            resolve({ v: v as PeerVerification, reused, session: ticket });
          });
        },
      );
    try {
      const first = await connectOnce(undefined, {});
      assert.equal(first.reused, false);
      assert.ok(first.session, "a session ticket");
      const second = await connectOnce(first.session, onClient(first.v));
      assert.equal(second.reused, true);
      await new Promise((r) => setTimeout(r, 50));
      return { first: first.v, second: second.v, serverResults };
    } finally {
      srv.close();
    }
  }

  test("a resumed client session shows no server certificate: refused unless the chain was kept", async () => {
    const { second } = await resumption(() => ({}));
    const v = refused(second);
    assert.equal(v.reason, "handshake_error");
    assert.match(v.detail, /resumed TLS session .* resumedPeerChain/);
  });

  test("with the kept chain (resumedPeerChain) it is checked again and accepted", async () => {
    const { first, second, serverResults } = await resumption((v) => ({
      resumedPeerChain: accepted(v).chain,
    }));
    const ok = accepted(second);
    assert.equal(ok.leaf.fingerprint, accepted(first).leaf.fingerprint);
    assert.deepEqual(ok.identity.dnsNames, ["localhost"]);
    // The server still sees the client's leaf on a resumed session (without its issuer).
    const [reused, v] = serverResults[1] as [boolean, PeerVerification];
    assert.equal(reused, true);
    assert.equal(accepted(v).identity.commonName, "alice");
    assert.equal(accepted(v).chain?.length, 1);
  });

  test("the kept chain is checked again: a name the server lacks is still refused", async () => {
    const { second } = await resumption((v) => ({
      resumedPeerChain: accepted(v).chain,
      expectDns: ["db.acme.test"],
    }));
    assert.equal(refused(second).reason, "bad_name");
  });
});

describe("authorizationError codes", () => {
  /** A stand-in socket after a handshake OpenSSL did not like. */
  function socketWith(code: unknown, cert = alice.certificate): tls.TLSSocket {
    const x509 = new X509Certificate(Buffer.from(cert.der));
    return {
      authorized: false,
      authorizationError: code,
      getPeerX509Certificate: () => x509,
      getPeerCertificate: () => ({ raw: Buffer.from(cert.der) }),
      isSessionReused: () => false,
    } as unknown as tls.TLSSocket;
  }
  const cases: [string, string][] = [
    ["UNABLE_TO_GET_ISSUER_CERT", "unknown_ca"],
    ["UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "unknown_ca"],
    ["SELF_SIGNED_CERT_IN_CHAIN", "unknown_ca"],
    ["DEPTH_ZERO_SELF_SIGNED_CERT", "unknown_ca"],
    ["CERT_SIGNATURE_FAILURE", "unknown_ca"],
    ["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "unknown_ca"],
    ["CERT_HAS_EXPIRED", "expired"],
    ["CERT_NOT_YET_VALID", "expired"],
    ["CERT_REVOKED", "revoked"],
    ["INVALID_PURPOSE", "bad_purpose"],
    ["ERR_TLS_CERT_ALTNAME_INVALID", "bad_name"],
    ["UNABLE_TO_GET_CRL", "handshake_error"],
    ["SOMETHING_NEW", "handshake_error"],
  ];
  for (const [code, reason] of cases) {
    test(`${code} → ${reason}`, async () => {
      const v = refused(await verifyPeer(socketWith(code), { purpose: "client" }));
      assert.equal(v.reason, reason);
      assert.match(v.detail, new RegExp(`\\[${code}\\]`));
    });
  }
  test("an Error object in authorizationError (as Node's types describe it) works too", async () => {
    const err = Object.assign(new Error("certificate has expired"), { code: "CERT_HAS_EXPIRED" });
    assert.equal(refused(await verifyPeer(socketWith(err), { purpose: "client" })).reason, "expired");
  });
});

describe("identityFromCert", () => {
  test("reads CN, OU and O from the DER subject, not by splitting a string", async () => {
    const tricky = await pki.issue("client", "tricky", {
      commonName: "Smith, John+x=y",
      organizationalUnit: ["R&D, Labs"],
    });
    const id = identityFromCert(tricky.certificate);
    assert.equal(id.commonName, "Smith, John+x=y");
    assert.deepEqual(id.organizationalUnits, ["R&D, Labs"]);
    assert.equal(id.organization, "Acme");
  });
});
