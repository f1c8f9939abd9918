/**
 * The CA service in one process: startCaServer on a fresh CA (ports picked by the OS), driven over
 * real HTTPS with client certificates issued by that CA. Covers routing, the error contract, roles,
 * limits, OCSP/CRL answers, the server certificate and shutdown. End-to-end tests with curl and
 * openssl are in test/e2e/ca-server.test.ts.
 */
import assert from "node:assert/strict";
import { type KeyObject, X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type ConnectionOptions, connect as tlsConnect } from "node:tls";
import { initCa } from "../ca/index.js";
import { type StatePaths, statePaths } from "../config/state.js";
import { silentLogger } from "../observe/index.js";
import { type CertInfo, parseCertificates } from "../pki/certinfo.js";
import { parseCrls } from "../pki/crl.js";
import { buildCsrPem } from "../pki/csr-builder.js";
import { generateKeyPair, pkcs8Of } from "../pki/keys.js";
import { makeSan } from "../pki/names.js";
import { buildOcspRequest, parseOcspResponse } from "../pki/ocsp.js";
import { pemEncode } from "../pki/pem.js";
import { keyObjectSigner } from "../pki/signer.js";
import { OCSP_MALFORMED } from "./routes-revocation.js";
import { type RunningCaServer, startCaServer } from "./serve.js";
import { serverCertFiles } from "./server-cert.js";

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  // biome-ignore lint/suspicious/noExplicitAny: the tests check JSON answers field by field
  json(): any;
}

/** Completes a TLS handshake with the server (no client certificate) and names the suite agreed. */
function handshake(port: number, opts: ConnectionOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: "127.0.0.1", port, rejectUnauthorized: false, ...opts }, () => {
      const name = socket.getCipher().name;
      socket.destroy();
      resolve(name);
    });
    socket.setTimeout(5_000, () => socket.destroy(new Error("handshake timed out")));
    socket.on("error", reject);
  });
}

interface Identity {
  cert: string;
  key: string;
  serial: string;
}

const ENV = { MTLS_PASSPHRASE: "test" };

function send(
  url: string,
  opts: {
    method?: string;
    body?: string | Buffer;
    headers?: Record<string, string>;
    id?: Identity;
    ca?: string;
  } = {},
): Promise<Res> {
  const u = new URL(url);
  const request = u.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(
      u,
      {
        method: opts.method ?? (opts.body !== undefined ? "POST" : "GET"),
        headers: {
          ...(opts.body !== undefined && !opts.headers?.["content-type"]
            ? { "content-type": "application/json" }
            : {}),
          ...opts.headers,
        },
        agent: false,
        ...(u.protocol === "https:"
          ? { ca: opts.ca, ...(opts.id ? { cert: opts.id.cert, key: opts.id.key } : {}) }
          : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            json: () => JSON.parse(body.toString("utf8")),
          });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

const keyPem = (k: KeyObject) => pemEncode("PRIVATE KEY", pkcs8Of(k));

function assertError(res: Res, status: number, code: string): void {
  assert.equal(res.status, status, res.body.toString());
  assert.match(String(res.headers["content-type"]), /^application\/json/);
  const body = res.json();
  assert.equal(body.error.code, code, res.body.toString());
  assert.equal(typeof body.error.message, "string");
  assert.doesNotMatch(body.error.message, /\n/);
}

describe("mtls ca serve (in process)", { concurrency: 1 }, () => {
  let dir = "";
  let paths: StatePaths;
  let server: RunningCaServer;
  let api = "";
  let pub = "";
  let rootPem = "";
  let admin: Identity;
  let alice: Identity;
  let bob: Identity;

  const issueId = async (
    name: string,
    profile: "client" | "server" | "peer" = "client",
  ): Promise<Identity> => {
    const issued = await server.ca.issue({
      profile,
      name,
      sans: profile === "server" ? [makeSan("dns", `${name}.test`)] : [],
      actor: "test",
    });
    assert.ok(issued.privateKey);
    return { cert: issued.chainPem, key: keyPem(issued.privateKey), serial: issued.record.serial };
  };
  const asAdmin = (path: string, opts: Parameters<typeof send>[1] = {}) =>
    send(api + path, { ca: rootPem, id: admin, ...opts });

  before(async () => {
    dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "mtls-serve-"));
    paths = statePaths(join(dir, "state"));
    const init = await initCa({ paths, name: "Acme", passphrase: "test", actor: "test" });
    assert.ok(init.admin?.files);
    server = await startCaServer({
      paths,
      listen: "127.0.0.1:0",
      publicListen: "127.0.0.1:0",
      env: ENV,
      logger: silentLogger(),
      rateLimit: 1000,
    });
    api = server.api.url;
    assert.ok(server.public);
    pub = server.public.url;
    rootPem = readFileSync(paths.rootCert, "utf8");
    admin = {
      cert: readFileSync(init.admin.files.cert, "utf8"),
      key: readFileSync(init.admin.files.key, "utf8"),
      serial: init.admin.serial,
    };
    alice = await issueId("alice");
    bob = await issueId("bob");
  });
  after(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  describe("listeners and routing", () => {
    it("serves HTTPS with a certificate of its own CA for 127.0.0.1 and localhost, TLS 1.2+", async () => {
      const files = serverCertFiles(paths.dir);
      const leaf = new X509Certificate(readFileSync(files.cert));
      assert.ok(leaf.checkIP("127.0.0.1"));
      assert.ok(leaf.checkHost("localhost"));
      assert.ok(leaf.verify(new X509Certificate(readFileSync(paths.intermediateCert)).publicKey));
      const res = await send(`${api}/healthz`, { ca: rootPem });
      assert.equal(res.status, 200);
      assert.deepEqual(res.json(), { ok: true });
      const port = Number(new URL(api).port);
      // TLS 1.1 is refused; on TLS 1.2 only ECDHE with an AEAD is accepted (no CBC, no static RSA).
      await assert.rejects(handshake(port, { maxVersion: "TLSv1.1", minVersion: "TLSv1" }));
      await assert.rejects(handshake(port, { maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-SHA" }));
      await assert.rejects(handshake(port, { maxVersion: "TLSv1.2", ciphers: "AES128-GCM-SHA256" }));
      assert.equal(
        await handshake(port, { maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256" }),
        "ECDHE-ECDSA-AES128-GCM-SHA256",
      );
      assert.equal(await handshake(port, {}), "TLS_AES_256_GCM_SHA384");
    });

    it("answers /healthz on the plain listener, and nothing of /v1 there", async () => {
      assert.deepEqual((await send(`${pub}/healthz`)).json(), { ok: true });
      assertError(await send(`${pub}/v1/ca`), 404, "E_NOT_FOUND");
      assertError(await send(`${pub}/v1/certificates`), 404, "E_NOT_FOUND");
    });

    it("answers unknown endpoints with a JSON 404", async () => {
      assertError(await send(`${api}/nope`, { ca: rootPem }), 404, "E_NOT_FOUND");
      assertError(await asAdmin("/v1/tokens"), 404, "E_NOT_FOUND"); // GET of a POST route
    });

    it("GET /v1/ca gives the root, the intermediate and the chain, to anyone", async () => {
      const res = await send(`${api}/v1/ca`, { ca: rootPem });
      assert.equal(res.status, 200);
      const body = res.json();
      assert.equal(body.root, rootPem);
      assert.equal(body.intermediate, readFileSync(paths.intermediateCert, "utf8"));
      assert.equal(body.chain, body.intermediate + body.root);
      assert.equal(res.headers["cache-control"], "no-store");
    });
  });

  describe("authentication and roles", () => {
    it("refuses admin endpoints without a client certificate (401) and audits it", async () => {
      assertError(await send(`${api}/v1/certificates`, { ca: rootPem }), 401, "E_NOT_AUTHENTICATED");
      assertError(
        await send(`${api}/v1/tokens`, {
          ca: rootPem,
          body: JSON.stringify({ name: "x", profile: "client" }),
        }),
        401,
        "E_NOT_AUTHENTICATED",
      );
      const events = await server.ca.store.listAudit({ afterSeq: 0, limit: 10_000 });
      const denied = events.filter((e) => e.action === "api.denied");
      assert.ok(denied.some((e) => e.details.path === "/v1/tokens" && e.actor === "anonymous"));
    });

    it("refuses admin endpoints to a holder (403), with its serial in the audit event", async () => {
      assertError(await send(`${api}/v1/certificates`, { ca: rootPem, id: alice }), 403, "E_NOT_AUTHORIZED");
      assertError(await send(`${api}/v1/audit`, { ca: rootPem, id: alice }), 403, "E_NOT_AUTHORIZED");
      const events = await server.ca.store.listAudit({ afterSeq: 0, limit: 10_000 });
      assert.ok(events.some((e) => e.action === "api.denied" && e.actor === `api:${alice.serial}`));
    });

    it("a certificate of another CA counts as none", async () => {
      const otherDir = join(dir, "other");
      const other = await initCa({
        paths: statePaths(otherDir),
        name: "Other",
        passphrase: "x",
        actor: "test",
      });
      assert.ok(other.admin?.files);
      const stranger = {
        cert: readFileSync(other.admin.files.cert, "utf8"),
        key: readFileSync(other.admin.files.key, "utf8"),
        serial: other.admin.serial,
      };
      assertError(
        await send(`${api}/v1/certificates`, { ca: rootPem, id: stranger }),
        401,
        "E_NOT_AUTHENTICATED",
      );
    });

    it("lists certificates for the admin, with filters and paging", async () => {
      const res = await asAdmin("/v1/certificates?name=alice");
      assert.equal(res.status, 200);
      const body = res.json();
      assert.equal(body.total, 1);
      const [row] = body.certificates;
      assert.equal(row.serial, alice.serial);
      assert.equal(row.status, "valid");
      assert.match(row.notAfter, /^\d{4}-\d\d-\d\dT/);
      assert.equal(row.certPath, undefined);
      assert.equal(row.keyPath, undefined);
      const page = (await asAdmin("/v1/certificates?limit=1&offset=1")).json();
      assert.equal(page.certificates.length, 1);
      assert.ok(page.total >= 3);
      const soon = (await asAdmin("/v1/certificates?expiringWithin=1d")).json();
      assert.equal(soon.total, 0);
      const ca = (await asAdmin("/v1/certificates?profile=ca-root,ca-intermediate")).json();
      assert.equal(ca.total, 2);
      assertError(await asAdmin("/v1/certificates?status=bogus"), 400, "E_BAD_INPUT");
      assertError(await asAdmin("/v1/certificates?limit=-1"), 400, "E_BAD_INPUT");
      assertError(await asAdmin("/v1/certificates?expiringWithin=soon"), 400, "E_BAD_INPUT");
    });

    it("GET /v1/certificates/{serial}: the holder its own (JSON or PEM), the admin any", async () => {
      const own = await send(`${api}/v1/certificates/${alice.serial}`, { ca: rootPem, id: alice });
      assert.equal(own.status, 200);
      assert.equal(own.json().name, "alice");
      const pem = await send(`${api}/v1/certificates/${alice.serial.toUpperCase()}?format=pem`, {
        ca: rootPem,
        id: alice,
      });
      assert.equal(pem.headers["content-type"], "application/x-pem-file");
      assert.equal(parseCertificates(pem.body.toString())[0]?.serial, alice.serial);
      const accept = await asAdmin(`/v1/certificates/${alice.serial}`, {
        headers: { accept: "application/x-pem-file" },
      });
      assert.match(accept.body.toString(), /^-----BEGIN CERTIFICATE-----/);
      const chain = await asAdmin(`/v1/certificates/${alice.serial}?format=chain`);
      assert.equal(parseCertificates(chain.body.toString()).length, 2);
      assertError(
        await send(`${api}/v1/certificates/${bob.serial}`, { ca: rootPem, id: alice }),
        403,
        "E_NOT_AUTHORIZED",
      );
      assertError(await asAdmin("/v1/certificates/00ff"), 404, "E_NOT_FOUND");
      assertError(await asAdmin("/v1/certificates/not-hex"), 400, "E_BAD_INPUT");
    });
  });

  describe("tokens and enrollment", () => {
    const csrFor = async (name: string, sans: ReturnType<typeof makeSan>[] = []) => {
      const { privateKey } = generateKeyPair("ec-p256");
      return {
        key: privateKey,
        csr: await buildCsrPem({ subject: { commonName: name }, sans }, keyObjectSigner(privateKey)),
      };
    };
    const token = async (body: Record<string, unknown>) => {
      const res = await asAdmin("/v1/tokens", { body: JSON.stringify(body) });
      assert.equal(res.status, 201, res.body.toString());
      return res.json() as { token: string; id: string; expiresAt: string };
    };

    it("creates a token (201) bound to a name, profile and SANs", async () => {
      const t = await token({
        name: "carol",
        profile: "client",
        sans: ["email:carol@acme.test"],
        validFor: "5m",
      });
      assert.match(t.token, /^mtls_[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);
      assert.ok(Math.abs(new Date(t.expiresAt).getTime() - Date.now() - 5 * 60_000) < 10_000);
      const events = await server.ca.store.listAudit({ afterSeq: 0, limit: 10_000 });
      assert.ok(
        events.some(
          (e) => e.action === "token.create" && e.subject === t.id && e.actor === `api:${admin.serial}`,
        ),
      );
    });

    it("refuses bad token requests with 400 and a code", async () => {
      const post = (body: string, headers: Record<string, string> = {}) =>
        asAdmin("/v1/tokens", { body, headers });
      assertError(await post("{not json"), 400, "E_BAD_INPUT");
      assertError(await post("[]"), 400, "E_BAD_INPUT");
      assertError(await post('"x"'), 400, "E_BAD_INPUT");
      assertError(await post(JSON.stringify({ name: "x" })), 400, "E_BAD_INPUT");
      assertError(await post(JSON.stringify({ name: "x", profile: "root" })), 400, "E_PROFILE");
      assertError(
        await post(JSON.stringify({ name: "x", profile: "client", sans: ["dns:bad name"] })),
        400,
        "E_BAD_SAN",
      );
      assertError(
        await post(JSON.stringify({ name: "x", profile: "client", sans: "dns:x" })),
        400,
        "E_BAD_INPUT",
      );
      assertError(await post(JSON.stringify({ name: "x", profile: "client", validFor: "8d" })), 400, "E_TTL");
      assertError(
        await post(JSON.stringify({ name: "x", profile: "client", ttl: "forever" })),
        400,
        "E_BAD_INPUT",
      );
      assertError(await post(JSON.stringify({ name: "../etc", profile: "client" })), 400, "E_BAD_INPUT");
      assertError(await post(JSON.stringify({ name: "x", profile: "server" })), 400, "E_PROFILE");
      assertError(
        await post("name=x", { "content-type": "application/x-www-form-urlencoded" }),
        400,
        "E_BAD_INPUT",
      );
      assertError(await post('{"__proto__": {"admin": true}, "name": "x"}'), 400, "E_BAD_INPUT");
    });

    it("enrolls a CSR with a token (201 Issued); the token works once", async () => {
      const t = await token({
        name: "dave",
        profile: "client",
        sans: ["email:dave@acme.test", "uri:spiffe://acme.test/dave"],
      });
      const { csr } = await csrFor("ignored", [makeSan("email", "dave@acme.test")]);
      const res = await send(`${api}/v1/enroll`, {
        ca: rootPem,
        body: JSON.stringify({ token: t.token, csr }),
      });
      assert.equal(res.status, 201, res.body.toString());
      const issued = res.json();
      assert.equal(issued.name, "dave");
      assert.equal(issued.profile, "client");
      assert.equal(issued.ca, rootPem);
      const [leaf, inter] = parseCertificates(issued.chain) as [CertInfo, CertInfo];
      assert.equal(leaf.serial, issued.serial);
      assert.deepEqual(leaf.sans, [{ type: "email", value: "dave@acme.test" }]);
      assert.match(leaf.subject, /CN=dave/);
      assert.equal(inter.serial, server.ca.intermediate.serial);
      const again = await send(`${api}/v1/enroll`, {
        ca: rootPem,
        body: JSON.stringify({ token: t.token, csr }),
      });
      assertError(again, 403, "E_TOKEN_USED");
      const events = await server.ca.store.listAudit({ afterSeq: 0, limit: 10_000 });
      assert.ok(events.some((e) => e.action === "token.use" && e.actor === `api:token:${t.id}`));
    });

    it("refuses a token asked for more than it grants, malformed tokens and CSRs", async () => {
      const t = await token({ name: "erin", profile: "client", sans: ["email:erin@acme.test"] });
      const wider = await csrFor("erin", [makeSan("email", "mallory@acme.test")]);
      const enroll = (body: unknown) => send(`${api}/v1/enroll`, { ca: rootPem, body: JSON.stringify(body) });
      assertError(await enroll({ token: t.token, csr: wider.csr }), 403, "E_TOKEN_SCOPE");
      assertError(
        await enroll({ token: t.token, csr: (await csrFor("x")).csr, name: "other" }),
        403,
        "E_TOKEN_SCOPE",
      );
      assertError(
        await enroll({
          token: t.token,
          csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        }),
        400,
        "E_BAD_CSR",
      );
      assertError(await enroll({ token: t.token, csr: "hello" }), 400, "E_BAD_CSR");
      assertError(
        await enroll({
          token: "mtls_0000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
          csr: wider.csr,
        }),
        403,
        "E_TOKEN_INVALID",
      );
      assertError(await enroll({ token: "nonsense", csr: wider.csr }), 403, "E_TOKEN_INVALID");
      assertError(await enroll({ token: t.token }), 400, "E_BAD_INPUT");
      assertError(await enroll({ token: 42, csr: wider.csr }), 400, "E_BAD_INPUT");
      // After all that the token is still unused.
      const ok = await enroll({ token: t.token, csr: (await csrFor("erin")).csr });
      assert.equal(ok.status, 201, ok.body.toString());
    });

    it("refuses bodies over 64 KiB with 413 E_TOO_LARGE", async () => {
      const big = JSON.stringify({ token: "x", csr: "A".repeat(70 * 1024) });
      assertError(await send(`${api}/v1/enroll`, { ca: rootPem, body: big }), 413, "E_TOO_LARGE");
      assertError(
        await send(`${pub}/ocsp`, {
          body: Buffer.alloc(70 * 1024),
          headers: { "content-type": "application/ocsp-request" },
        }),
        413,
        "E_TOO_LARGE",
      );
    });
  });

  describe("renewal and revocation", () => {
    it("a holder renews itself (same name, new serial), and may rekey with a CSR", async () => {
      const frank = await issueId("frank");
      const res = await send(`${api}/v1/renew`, { ca: rootPem, id: frank, method: "POST" });
      assert.equal(res.status, 201, res.body.toString());
      const body = res.json();
      assert.equal(body.name, "frank");
      assert.notEqual(body.serial, frank.serial);
      const { privateKey } = generateKeyPair("ec-p256");
      const csr = await buildCsrPem({ subject: { commonName: "x" } }, keyObjectSigner(privateKey));
      const rekeyed = await send(`${api}/v1/renew`, {
        ca: rootPem,
        id: frank,
        body: JSON.stringify({ csr }),
      });
      assert.equal(rekeyed.status, 201, rekeyed.body.toString());
      const leaf = new X509Certificate(rekeyed.json().certificate);
      assert.ok(leaf.checkPrivateKey(privateKey));
    });

    it("a server certificate renews itself over mTLS too (its EKU is serverAuth only)", async () => {
      const web = await issueId("web", "server");
      const res = await send(`${api}/v1/renew`, { ca: rootPem, id: web, body: "{}" });
      assert.equal(res.status, 201, res.body.toString());
      assert.equal(res.json().profile, "server");
    });

    it("refuses renewal without a certificate (401)", async () => {
      assertError(await send(`${api}/v1/renew`, { ca: rootPem, body: "{}" }), 401, "E_NOT_AUTHENTICATED");
    });

    it("a holder revokes only itself; then it can neither renew nor read", async () => {
      const gina = await issueId("gina");
      assertError(
        await send(`${api}/v1/revoke`, {
          ca: rootPem,
          id: gina,
          body: JSON.stringify({ serial: bob.serial }),
        }),
        403,
        "E_NOT_AUTHORIZED",
      );
      assertError(
        await send(`${api}/v1/revoke`, {
          ca: rootPem,
          id: gina,
          body: JSON.stringify({ reason: "nonsense" }),
        }),
        400,
        "E_BAD_INPUT",
      );
      const res = await send(`${api}/v1/revoke`, {
        ca: rootPem,
        id: gina,
        body: JSON.stringify({ reason: "keyCompromise" }),
      });
      assert.equal(res.status, 200, res.body.toString());
      assert.equal(res.json().serial, gina.serial);
      assert.equal(res.json().reason, "keyCompromise");
      assertError(
        await send(`${api}/v1/renew`, { ca: rootPem, id: gina, body: "{}" }),
        401,
        "E_NOT_AUTHENTICATED",
      );
      assertError(
        await send(`${api}/v1/certificates/${gina.serial}`, { ca: rootPem, id: gina }),
        401,
        "E_NOT_AUTHENTICATED",
      );
    });

    it("the admin revokes any leaf (idempotently), never the CA's own certificates", async () => {
      const hank = await issueId("hank");
      const body = JSON.stringify({ serial: hank.serial, reason: "superseded" });
      const first = await asAdmin("/v1/revoke", { body });
      assert.equal(first.status, 200, first.body.toString());
      const second = await asAdmin("/v1/revoke", { body: JSON.stringify({ serial: hank.serial }) });
      assert.equal(second.status, 200);
      assert.equal(second.json().reason, "superseded");
      assert.equal(second.json().revokedAt, first.json().revokedAt);
      assertError(
        await asAdmin("/v1/revoke", { body: JSON.stringify({ serial: "ab" }) }),
        404,
        "E_NOT_FOUND",
      );
      assertError(
        await asAdmin("/v1/revoke", { body: JSON.stringify({ serial: server.ca.intermediate.serial }) }),
        403,
        "E_NOT_AUTHORIZED",
      );
      assertError(
        await asAdmin("/v1/revoke", { body: JSON.stringify({ serial: "zz" }) }),
        400,
        "E_BAD_INPUT",
      );
    });
  });

  describe("OCSP and CRL", () => {
    it("answers OCSP over POST and GET: good, then revoked; cacheable without a nonce", async () => {
      const ivy = await issueId("ivy");
      const leaf = parseCertificates(ivy.cert)[0] as CertInfo;
      const req = buildOcspRequest(leaf, server.ca.intermediate);
      const post = await send(`${pub}/ocsp`, {
        body: Buffer.from(req),
        headers: { "content-type": "application/ocsp-request" },
      });
      assert.equal(post.status, 200);
      assert.equal(post.headers["content-type"], "application/ocsp-response");
      assert.equal(
        parseOcspResponse(post.body, leaf, server.ca.intermediate, { at: new Date() }).status,
        "good",
      );
      assert.match(
        String(post.headers["cache-control"]),
        /^max-age=\d+, public, no-transform, must-revalidate$/,
      );
      await server.ca.revoke([ivy.serial], "keyCompromise", "test");
      const b64 = encodeURIComponent(Buffer.from(req).toString("base64"));
      const get = await send(`${api}/ocsp/${b64}`, { ca: rootPem });
      assert.equal(get.status, 200);
      const answer = parseOcspResponse(get.body, leaf, server.ca.intermediate, { at: new Date() });
      assert.equal(answer.status, "revoked");
      // The public listener answers OCSP without Fastify (ocsp-fast.ts): the same answer.
      const pubGet = await send(`${pub}/ocsp/${b64}`);
      assert.equal(pubGet.status, 200);
      assert.equal(pubGet.headers["content-type"], "application/ocsp-response");
      assert.equal(
        parseOcspResponse(pubGet.body, leaf, server.ca.intermediate, { at: new Date() }).status,
        "revoked",
      );
      const nonce = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
      const withNonce = await send(`${pub}/ocsp`, {
        body: Buffer.from(buildOcspRequest(leaf, server.ca.intermediate, { nonce })),
        headers: { "content-type": "application/ocsp-request" },
      });
      assert.equal(
        parseOcspResponse(withNonce.body, leaf, server.ca.intermediate, { nonce, at: new Date() }).status,
        "revoked",
      );
      assert.equal(withNonce.headers["cache-control"], undefined);
    });

    it("answers garbage with an OCSP malformedRequest, never an error page", async () => {
      for (const body of [Buffer.from("garbage"), Buffer.alloc(0), Buffer.from([0x30, 0x82, 0xff, 0xff])]) {
        const res = await send(`${pub}/ocsp`, {
          body,
          headers: { "content-type": "application/ocsp-request" },
        });
        assert.equal(res.status, 200);
        assert.deepEqual(new Uint8Array(res.body), OCSP_MALFORMED);
      }
      for (const path of ["/ocsp/%%%", "/ocsp/!!!", "/ocsp/AAAA"]) {
        const res = await send(pub + path);
        assert.equal(res.status, 200, path);
        assert.deepEqual(new Uint8Array(res.body), OCSP_MALFORMED, path);
      }
    });

    it("publishes the CRLs as DER, with the revocations, and answers 304 to a matching ETag", async () => {
      const res = await send(`${pub}/crl`);
      assert.equal(res.status, 200);
      assert.equal(res.headers["content-type"], "application/pkix-crl");
      const [crl] = parseCrls(res.body);
      assert.ok(crl);
      const ivy = (await server.ca.store.findCertificates({ name: "ivy" }))[0];
      assert.ok(ivy);
      assert.ok(crl.index.entries.has(ivy.serial.replace(/^0+/, "")));
      const etag = String(res.headers.etag);
      assert.equal((await send(`${pub}/crl`, { headers: { "if-none-match": etag } })).status, 304);
      const root = await send(`${pub}/crl/root`);
      assert.equal(root.status, 200);
      assert.ok(parseCrls(root.body)[0]);
      const caIssuer = await send(`${pub}/ca/intermediate.crt`);
      assert.equal(caIssuer.headers["content-type"], "application/pkix-cert");
      assert.equal(
        new X509Certificate(caIssuer.body).serialNumber.toLowerCase(),
        server.ca.intermediate.serial,
      );
    });
  });

  describe("audit export", () => {
    it("GET /v1/audit gives JSON lines or CSV with the chain's verification", async () => {
      const res = await asAdmin("/v1/audit");
      assert.equal(res.status, 200);
      assert.match(String(res.headers["content-type"]), /^application\/x-ndjson/);
      assert.equal(res.headers["x-audit-verified"], "true");
      const lines = res.body
        .toString()
        .trimEnd()
        .split("\n")
        .map((l) => JSON.parse(l));
      assert.equal(lines[0].seq, 1);
      assert.equal(lines.at(-1).action, "api.audit.export");
      assert.equal(String(lines.length), res.headers["x-audit-count"]);
      const csv = await asAdmin("/v1/audit?format=csv&after=2&limit=3");
      assert.match(String(csv.headers["content-type"]), /^text\/csv/);
      const rows = csv.body.toString().trimEnd().split("\r\n");
      assert.equal(rows[0], "seq,at,actor,action,subject,details,prevHash,hash");
      assert.deepEqual(
        rows.slice(1).map((r) => r.split(",")[0]),
        ["3", "4", "5"],
      );
      assertError(await asAdmin("/v1/audit?format=xml"), 400, "E_BAD_INPUT");
      assertError(await asAdmin("/v1/audit?after=-3"), 400, "E_BAD_INPUT");
    });
  });

  describe("rate limits", () => {
    it("answers 429 E_RATE_LIMITED with Retry-After once a client's bucket is empty", async () => {
      const limited = await startCaServer({
        paths,
        listen: "127.0.0.1:0",
        publicListen: "127.0.0.1:0",
        env: ENV,
        logger: silentLogger(),
        rateLimit: 1,
        status: "127.0.0.1:0",
      });
      try {
        assert.ok(limited.public);
        const statuses: number[] = [];
        let last: Res | undefined;
        for (let i = 0; i < 5; i++) {
          last = await send(`${limited.public.url}/crl`);
          statuses.push(last.status);
        }
        assert.deepEqual(statuses.slice(0, 2), [200, 200]);
        assert.ok(last);
        assertError(last, 429, "E_RATE_LIMITED");
        assert.match(String(last.headers["retry-after"]), /^\d+$/);
        const enrolls: number[] = [];
        for (let i = 0; i < 4; i++)
          enrolls.push((await send(`${limited.api.url}/v1/enroll`, { ca: rootPem, body: "{}" })).status);
        assert.deepEqual(enrolls, [400, 400, 429, 429]);
        // The admin is not limited.
        for (let i = 0; i < 4; i++)
          assert.equal(
            (await send(`${limited.api.url}/v1/certificates?limit=1`, { ca: rootPem, id: admin })).status,
            200,
          );
        // And it is all counted on --status.
        const addr = limited.status?.address;
        assert.ok(addr && typeof addr === "object");
        const metrics = (await send(`http://127.0.0.1:${addr.port}/metrics`)).body.toString();
        assert.match(metrics, /mtls_ca_rate_limited_total\{bucket="crl"\} [1-9]/);
        assert.match(metrics, /mtls_ca_rate_limited_total\{bucket="enroll"\} 2/);
        assert.match(
          metrics,
          /mtls_ca_http_requests_total\{listener="api",route="\/v1\/certificates",status="200"\} 4/,
        );
        assert.match(metrics, /mtls_ca_server_certificate_expiry_seconds \d+/);
      } finally {
        await limited.close();
      }
    });
  });

  describe("its own certificate", () => {
    it("keeps the certificate across restarts and reissues it when the names change", async () => {
      const before = server.serverCertificate();
      const again = await startCaServer({
        paths,
        listen: "127.0.0.1:0",
        publicListen: null,
        env: ENV,
        logger: silentLogger(),
      });
      try {
        assert.equal(again.serverCertificate().serial, before.serial);
      } finally {
        await again.close();
      }
      const renamed = await startCaServer({
        paths,
        listen: "127.0.0.1:0",
        publicListen: null,
        sans: ["ca.acme.test"],
        env: ENV,
        logger: silentLogger(),
      });
      try {
        const leaf = renamed.serverCertificate();
        assert.notEqual(leaf.serial, before.serial);
        assert.ok(leaf.sans.some((s) => s.type === "dns" && s.value === "ca.acme.test"));
        const res = await send(`${renamed.api.url}/healthz`, { ca: rootPem });
        assert.equal(res.status, 200);
      } finally {
        await renamed.close();
      }
    });

    it("reload (SIGHUP) picks up a new public URL and reissues the certificate for its host", async () => {
      const before = server.serverCertificate();
      await server.ca.store.setSetting("ca.publicUrl", "http://pki.acme.test:8080");
      try {
        await server.reload();
        const now = server.serverCertificate();
        assert.notEqual(now.serial, before.serial);
        assert.ok(now.sans.some((s) => s.type === "dns" && s.value === "pki.acme.test"));
        // New connections get the new certificate.
        const seen = await new Promise<string>((resolve, reject) => {
          const req = httpsRequest(`${api}/healthz`, { ca: rootPem, agent: false }, (res) => {
            const peer = (res.socket as import("node:tls").TLSSocket).getPeerCertificate();
            res.resume();
            resolve(peer.serialNumber.toLowerCase());
          });
          req.on("error", reject);
          req.end();
        });
        assert.equal(seen, now.serial);
        assert.equal(server.ca.settings.publicUrl, "http://pki.acme.test:8080");
      } finally {
        await server.ca.store.setSetting("ca.publicUrl", "");
        server.ca.settings.publicUrl = undefined;
      }
    });

    it("refuses to start with a wrong passphrase, and releases everything it opened", async () => {
      await assert.rejects(
        startCaServer({
          paths,
          listen: "127.0.0.1:0",
          publicListen: null,
          env: { MTLS_PASSPHRASE: "wrong" },
          logger: silentLogger(),
        }),
        (e: Error & { code?: string }) => e.code === "E_PASSPHRASE",
      );
    });
  });
});
