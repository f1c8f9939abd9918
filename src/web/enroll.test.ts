/**
 * enroll / renew against the real CA service (startCaServer in process, HTTPS on 127.0.0.1:0),
 * with the key store served over a MessageChannel (memoryStorage: Node has no IndexedDB). The
 * fetch is undici's, trusting the CA's root; for renew it presents the current certificate.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Agent, fetch as undiciFetch } from "undici";
import { connectByteStream } from "../../test/fixtures/byte-stream.js";
import { initCa } from "../ca/index.js";
import { createToken } from "../ca/tokens.js";
import { statePaths } from "../config/state.js";
import { isMtlsError } from "../errors.js";
import { silentLogger } from "../observe/index.js";
import { parseSan } from "../pki/names.js";
import { pemEncode } from "../pki/pem.js";
import { type RunningCaServer, startCaServer } from "../server/serve.js";
import { CaHttpError, enroll, type FetchLike, needsRenewal, renew, renewalTime } from "./enroll.js";
import { createHttpClient, type HttpClient } from "./http/index.js";
import { KeyStoreClient } from "./keystore/client.js";
import { type MessageEndpoint, serveKeyStore } from "./keystore/host.js";
import type { KeyInfo } from "./keystore/protocol.js";
import { type KeyStorage, memoryStorage } from "./keystore/storage.js";
import type { ByteStream } from "./stream.js";
import { type ClientIdentity, connectTls } from "./tls/index.js";

/** A fetch for the CA: undici over HTTPS trusting `ca`, with a client certificate when given. */
function caFetch(
  ca: string,
  client?: { cert: string; key: string },
): { fetch: FetchLike; close(): Promise<void> } {
  const agent = new Agent({ connect: { ca, ...(client ?? {}), timeout: 5_000 } });
  return {
    fetch: (url, init) =>
      undiciFetch(url, { ...init, dispatcher: agent, signal: AbortSignal.timeout(10_000) }),
    close: () => agent.close(),
  };
}

/**
 * The page's own fetch: HTTP/1.1 over the TS TLS 1.3 client over TCP (the relay's stand-in),
 * authenticating with `identity` (a key store key) when given.
 */
function tsFetch(rootDer: Uint8Array, identity?: ClientIdentity): HttpClient {
  return createHttpClient({
    connect: async (origin: URL): Promise<ByteStream> => {
      const tcp = await connectByteStream(Number(origin.port));
      try {
        const tls = await connectTls(tcp, {
          serverName: "localhost",
          trustAnchors: [rootDer],
          handshakeTimeoutMs: 10_000,
          ...(identity ? { identity } : {}),
        });
        return {
          read: () => tls.read(),
          write: (data) => tls.write(data),
          close: async () => {
            await tls.close().catch(() => undefined);
            await tcp.close();
          },
        };
      } catch (err) {
        await tcp.close();
        throw err;
      }
    },
  });
}

const leafOf = (info: KeyInfo) => new X509Certificate(info.chain?.[0] as Uint8Array);

describe("enroll and renew against the CA service", { concurrency: 1 }, () => {
  let dir = "";
  let server: RunningCaServer;
  let api = "";
  let rootPem = "";
  let storage: KeyStorage;
  let keyStore: KeyStoreClient;
  let ports: MessagePort[] = [];
  let plain: ReturnType<typeof caFetch>;

  const token = async (name: string, sans: string[] = []) =>
    (
      await createToken(
        server.ca,
        {
          name,
          profile: "client",
          sans: sans.map(parseSan),
        },
        { actor: "test" },
      )
    ).token;

  before(async () => {
    dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "mtls-web-enroll-"));
    const paths = statePaths(join(dir, "state"));
    await initCa({ paths, name: "Acme", passphrase: "test", actor: "test" });
    server = await startCaServer({
      paths,
      listen: "127.0.0.1:0",
      publicListen: null,
      env: { MTLS_PASSPHRASE: "test" },
      logger: silentLogger(),
      rateLimit: 1000,
    });
    api = server.api.url;
    rootPem = readFileSync(paths.rootCert, "utf8");
    storage = memoryStorage();
    const { port1, port2 } = new MessageChannel();
    ports = [port1 as unknown as MessagePort, port2 as unknown as MessagePort];
    serveKeyStore(port2 as unknown as MessageEndpoint, storage);
    keyStore = KeyStoreClient.connect(port1 as unknown as MessageEndpoint, { timeoutMs: 10_000 });
    plain = caFetch(rootPem);
  });
  after(async () => {
    keyStore?.close();
    for (const p of ports) p.close();
    await plain?.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("enrolls a new non-extractable key with a token; the certificate certifies the store's key", async () => {
    const t = await token("page-alice", ["email:alice@acme.test"]);
    const info = await enroll({ fetch: plain.fetch, caUrl: api, token: t, keyStore, name: "page-alice" });
    assert.equal(info.label, "page-alice");
    assert.equal(info.chain?.length, 2, "leaf and intermediate");
    const leaf = leafOf(info);
    assert.deepEqual(new Uint8Array(leaf.publicKey.export({ format: "der", type: "spki" })), info.spki);
    assert.match(leaf.subject, /CN=page-alice/);
    assert.equal(leaf.subjectAltName, "email:alice@acme.test");
    const intermediate = new X509Certificate(info.chain?.[1] as Uint8Array);
    assert.ok(leaf.verify(intermediate.publicKey));
    assert.ok(intermediate.verify(new X509Certificate(rootPem).publicKey));
    assert.equal(info.notAfter?.getTime(), new Date(leaf.validTo).getTime());
    // In the CA's inventory as a valid client certificate of that name.
    const record = await server.ca.store.getCertificate(leaf.serialNumber.toLowerCase());
    assert.equal(record?.name, "page-alice");
    assert.equal(record?.status, "valid");
    // The key behind it is the store's own, non-extractable.
    const stored = await storage.get(info.keyId);
    assert.equal(stored?.privateKey.extractable, false);
    const identity = await keyStore.identity(info.keyId);
    assert.deepEqual(identity.chain, info.chain);
  });

  it("reports the CA's refusal as E_HTTP with its code, and leaves no key behind", async () => {
    const before = (await keyStore.list()).length;
    const t = await token("page-bob");
    await enroll({ fetch: plain.fetch, caUrl: api, token: t, keyStore });
    const reuse = await enroll({ fetch: plain.fetch, caUrl: api, token: t, keyStore }).catch((e) => e);
    assert.ok(reuse instanceof CaHttpError, String(reuse));
    assert.equal(reuse.code, "E_HTTP");
    assert.equal(reuse.status, 403);
    assert.equal(reuse.serverCode, "E_TOKEN_USED");
    assert.match(reuse.message, /already been used/);
    const other = await token("page-carol");
    const wrongName = await enroll({
      fetch: plain.fetch,
      caUrl: api,
      token: other,
      keyStore,
      name: "mallory",
    }).catch((e) => e);
    assert.equal(wrongName.serverCode, "E_TOKEN_SCOPE");
    const forged = await enroll({
      fetch: plain.fetch,
      caUrl: api,
      token: "mtls_0000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
      keyStore,
    }).catch((e) => e);
    assert.equal(forged.serverCode, "E_TOKEN_INVALID");
    assert.equal((await keyStore.list()).length, before + 1, "only the one successful enrollment kept a key");
  });

  it("refuses a non-https CA URL and reports an unreachable CA as E_UNAVAILABLE", async () => {
    const t = await token("page-dave");
    await assert.rejects(
      enroll({ fetch: plain.fetch, caUrl: api.replace("https:", "http:"), token: t, keyStore }),
      (e) => isMtlsError(e, "E_BAD_INPUT"),
    );
    const count = (await keyStore.list()).length;
    // A port nobody listens on: the server's own port after closing is not reusable here, so port 1.
    await assert.rejects(
      enroll({ fetch: plain.fetch, caUrl: "https://127.0.0.1:1", token: t, keyStore }),
      (e) => isMtlsError(e, "E_UNAVAILABLE"),
    );
    assert.equal((await keyStore.list()).length, count);
  });

  it("renews over mTLS with a new key: new certificate for the new key, same name, old key deleted", async () => {
    // The current identity. Node's TLS stack cannot sign with a non-extractable WebCrypto key, so
    // this one test plants an extractable key through the storage interface to present it with undici.
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ]);
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
    const oldKeyId = "0123456789abcdef0123456789abcdef";
    await storage.put({
      keyId: oldKeyId,
      label: "page-erin",
      createdAt: new Date(),
      privateKey: pair.privateKey,
      spki,
    });
    const issued = await server.ca.issue({
      profile: "client",
      name: "page-erin",
      sans: [],
      spki,
      actor: "test",
    });
    const old = await keyStore.setCertificate(
      oldKeyId,
      [issued.record.pem, server.ca.intermediatePem].map((pem) => new X509Certificate(pem).raw),
    );
    const keyPem = pemEncode(
      "PRIVATE KEY",
      new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
    );

    // Without a client certificate the CA refuses (401), and the fresh key is discarded.
    const count = (await keyStore.list()).length;
    const anonymous = await renew({ fetch: plain.fetch, caUrl: api, keyStore, keyId: oldKeyId }).catch(
      (e) => e,
    );
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.serverCode, "E_NOT_AUTHENTICATED");
    assert.equal((await keyStore.list()).length, count);

    const mtls = caFetch(rootPem, { cert: issued.chainPem, key: keyPem });
    try {
      const renewed = await renew({ fetch: mtls.fetch, caUrl: `${api}/`, keyStore, keyId: oldKeyId });
      assert.notEqual(renewed.keyId, oldKeyId);
      assert.equal(renewed.label, "page-erin");
      const leaf = leafOf(renewed);
      assert.deepEqual(new Uint8Array(leaf.publicKey.export({ format: "der", type: "spki" })), renewed.spki);
      assert.notDeepEqual(renewed.spki, old.spki);
      assert.match(leaf.subject, /CN=page-erin/);
      assert.notEqual(leaf.serialNumber.toLowerCase(), issued.record.serial);
      assert.equal((await storage.get(renewed.keyId))?.privateKey.extractable, false);
      await assert.rejects(keyStore.get(oldKeyId), (e) => isMtlsError(e, "E_KEYSTORE"));
      const events = await server.ca.store.listAudit({ afterSeq: 0, limit: 10_000 });
      const event = events.find(
        (e) => e.action === "cert.renew" && e.details.renewedFrom === issued.record.serial,
      );
      assert.equal(event?.details.rekey, true);
      assert.equal(event?.actor, `api:${issued.record.serial}`);
    } finally {
      await mtls.close();
    }
  });

  it("enrolls and renews twice with the TS TLS client: the non-extractable key authenticates itself", async () => {
    const rootDer = new Uint8Array(new X509Certificate(rootPem).raw);
    const clients: HttpClient[] = [];
    const client = (identity?: ClientIdentity) => {
      const c = tsFetch(rootDer, identity);
      clients.push(c);
      return (url: string, init: Parameters<FetchLike>[1]) => c.fetch(url, init);
    };
    try {
      const t = await token("page-frank", ["uri:spiffe://acme.test/web/frank"]);
      const enrolled = await enroll({ fetch: client(), caUrl: api, token: t, keyStore, label: "frank" });
      const firstSerial = leafOf(enrolled).serialNumber.toLowerCase();
      assert.equal((await storage.get(enrolled.keyId))?.privateKey.extractable, false);

      // Over the page's own mTLS: the store's key signs the CertificateVerify.
      const renewed = await renew({
        fetch: client(await keyStore.identity(enrolled.keyId)),
        caUrl: api,
        keyStore,
        keyId: enrolled.keyId,
      });
      const second = leafOf(renewed);
      assert.equal(second.subjectAltName, "URI:spiffe://acme.test/web/frank");
      assert.match(second.subject, /CN=page-frank/);
      assert.deepEqual(
        new Uint8Array(second.publicKey.export({ format: "der", type: "spki" })),
        renewed.spki,
      );
      assert.equal(renewed.label, "frank");
      await assert.rejects(keyStore.get(enrolled.keyId), (e) => isMtlsError(e, "E_KEYSTORE"));

      // The renewed key and chain authenticate in turn (a second renewal with them).
      const again = await renew({
        fetch: client(await keyStore.identity(renewed.keyId)),
        caUrl: api,
        keyStore,
        keyId: renewed.keyId,
      });
      const events = await server.ca.store.listAudit({ afterSeq: 0, limit: 10_000 });
      const renewals = events.filter((e) => e.action === "cert.renew" && e.details.name === "page-frank");
      assert.deepEqual(
        renewals.map((e) => [e.actor, e.details.renewedFrom, e.subject]),
        [
          [`api:${firstSerial}`, firstSerial, second.serialNumber.toLowerCase()],
          [
            `api:${second.serialNumber.toLowerCase()}`,
            second.serialNumber.toLowerCase(),
            leafOf(again).serialNumber.toLowerCase(),
          ],
        ],
      );
    } finally {
      for (const c of clients) await c.close();
    }
  });

  it("renew refuses a key without a certificate", async () => {
    const bare = await keyStore.generate("bare");
    await assert.rejects(
      renew({ fetch: plain.fetch, caUrl: api, keyStore, keyId: bare.keyId }),
      (e) => isMtlsError(e, "E_KEYSTORE") && /no certificate/.test(e.message),
    );
  });
});

describe("FetchLike", () => {
  it("is met by the global fetch and by HttpClient.fetch (compile-time)", () => {
    const http: HttpClient = createHttpClient({ connect: () => Promise.reject(new Error("unused")) });
    const fetches: FetchLike[] = [globalThis.fetch, http.fetch, (url, init) => http.fetch(url, init)];
    assert.equal(fetches.length, 3);
    return http.close();
  });
});

describe("needsRenewal", () => {
  const base: KeyInfo = { keyId: "k", label: "", spki: new Uint8Array(0), createdAt: new Date(0) };
  const issued: KeyInfo = {
    ...base,
    chain: [new Uint8Array([0x30])],
    notBefore: new Date("2026-01-01T00:00:00Z"),
    notAfter: new Date("2026-01-31T00:00:00Z"),
  };

  it("is due after 2/3 of the lifetime (or the fraction given), never for a key without a certificate", () => {
    assert.equal(renewalTime(issued)?.toISOString(), "2026-01-21T00:00:00.000Z");
    assert.equal(needsRenewal(issued, new Date("2026-01-20T23:59:59Z")), false);
    assert.equal(needsRenewal(issued, new Date("2026-01-21T00:00:00Z")), true);
    assert.equal(needsRenewal(issued, new Date("2026-02-05T00:00:00Z")), true);
    assert.equal(needsRenewal(issued, new Date("2026-01-16T00:00:00Z"), 0.5), true);
    assert.equal(needsRenewal(issued, new Date("2026-01-15T23:00:00Z"), 0.5), false);
    assert.equal(needsRenewal(base, new Date("2030-01-01T00:00:00Z")), false);
    assert.throws(
      () => needsRenewal(issued, new Date(), 0),
      (e) => isMtlsError(e, "E_BAD_INPUT"),
    );
    assert.throws(
      () => needsRenewal(issued, new Date(), 1.5),
      (e) => isMtlsError(e, "E_BAD_INPUT"),
    );
  });
});
