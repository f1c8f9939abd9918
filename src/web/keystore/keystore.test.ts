/**
 * The key store's host and client over real message channels (Node 20 has no IndexedDB, so the keys
 * live in memoryStorage here; the IndexedDB path is exercised in Chromium). Signatures are checked
 * with node:crypto against the public key the store reports, certificates are real X.509.
 */
import assert from "node:assert/strict";
import { createPublicKey, verify as nodeVerify } from "node:crypto";
import { after, describe, it } from "node:test";
import { Worker } from "node:worker_threads";
import { isMtlsError } from "../../errors.js";
import { buildCertificate, randomSerial } from "../../pki/certificate.js";
import { derSequence } from "../../pki/der.js";
import { generateKeyPair, spkiOf } from "../../pki/keys.js";
import { keyObjectSigner } from "../../pki/signer.js";
import { ECDSA_P256_SHA256, KeyStoreClient } from "./client.js";
import { keyStoreOperations, type MessageEndpoint, serveKeyStore } from "./host.js";
import type { KeyStoreReply } from "./protocol.js";
import { type KeyStorage, memoryStorage } from "./storage.js";

const HOUR = 3_600_000;
const ca = generateKeyPair("ec-p256");

/** A real certificate (signed by a throwaway CA key) for `spki`. */
async function certFor(spki: Uint8Array, notBefore = new Date(Date.now() - HOUR), ttl = 24 * HOUR) {
  return buildCertificate(
    {
      serial: randomSerial(),
      issuer: derSequence(),
      subject: derSequence(),
      notBefore,
      notAfter: new Date(notBefore.getTime() + ttl),
      spki,
      extensions: [],
    },
    keyObjectSigner(ca.privateKey),
  );
}

/** ECDSA raw r||s (what WebCrypto and the store produce) verified by node:crypto. */
function verifies(spki: Uint8Array, data: Uint8Array, raw: Uint8Array): boolean {
  const key = createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
  return nodeVerify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, raw);
}

function channel(storage: KeyStorage = memoryStorage()) {
  const { port1, port2 } = new MessageChannel();
  const host = serveKeyStore(port2 as unknown as MessageEndpoint, storage);
  const client = KeyStoreClient.connect(port1 as unknown as MessageEndpoint, { timeoutMs: 5_000 });
  return {
    storage,
    client,
    port1,
    close() {
      client.close();
      host.close();
      port1.close();
      port2.close();
    },
  };
}

/** Sends a raw message to a host and waits for the one reply. */
function rawRequest(port: MessagePort, message: unknown): Promise<KeyStoreReply> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no reply within 5 s")), 5_000);
    const onMessage = (event: MessageEvent) => {
      clearTimeout(timer);
      port.removeEventListener("message", onMessage);
      resolve(event.data as KeyStoreReply);
    };
    port.addEventListener("message", onMessage);
    port.start();
    port.postMessage(message);
  });
}

describe("key store over a MessageChannel (memoryStorage)", () => {
  const open: Array<{ close(): void }> = [];
  after(() => {
    for (const c of open) c.close();
  });

  it("generates a non-extractable P-256 key whose signatures verify with the reported spki", async () => {
    const ch = channel();
    open.push(ch);
    const info = await ch.client.generate("laptop");
    assert.match(info.keyId, /^[0-9a-f]{32}$/);
    assert.equal(info.label, "laptop");
    assert.ok(info.createdAt instanceof Date);
    assert.equal(info.chain, undefined);
    const pub = createPublicKey({ key: Buffer.from(info.spki), format: "der", type: "spki" });
    assert.equal(pub.asymmetricKeyType, "ec");
    assert.equal(pub.asymmetricKeyDetails?.namedCurve, "prime256v1");

    // The stored key itself: non-extractable, and exportKey refuses in every format.
    const record = await ch.storage.get(info.keyId);
    assert.ok(record);
    assert.equal(record.privateKey.extractable, false);
    assert.deepEqual(record.privateKey.usages, ["sign"]);
    for (const format of ["pkcs8", "jwk", "raw"] as const) {
      await assert.rejects(crypto.subtle.exportKey(format, record.privateKey));
    }

    const data = new TextEncoder().encode("TLS 1.3, client CertificateVerify\0transcript hash");
    const sig = await ch.client.sign(info.keyId, data);
    assert.equal(sig.length, 64);
    assert.ok(verifies(info.spki, data, sig));
    assert.ok(!verifies(info.spki, new TextEncoder().encode("other data"), sig));
    // Empty and maximal inputs are signed; one byte more is refused before it is sent.
    assert.ok(verifies(info.spki, new Uint8Array(0), await ch.client.sign(info.keyId, new Uint8Array(0))));
    const max = crypto.getRandomValues(new Uint8Array(65_536));
    assert.ok(verifies(info.spki, max, await ch.client.sign(info.keyId, max)));
    await assert.rejects(ch.client.sign(info.keyId, new Uint8Array(65_537)), (e) =>
      isMtlsError(e, "E_KEYSTORE"),
    );
  });

  it("lists keys oldest first, deletes them, and refuses unknown keys with E_KEYSTORE", async () => {
    const ch = channel();
    open.push(ch);
    const a = await ch.client.generate("a");
    const b = await ch.client.generate("b");
    assert.notEqual(a.keyId, b.keyId);
    // Several within one millisecond keep the order they were made in.
    const more = await Promise.all(["c", "d", "e", "f"].map((l) => ch.client.generate(l)));
    assert.deepEqual(
      (await ch.client.list()).map((k) => k.label),
      ["a", "b", "c", "d", "e", "f"],
    );
    await ch.client.delete(a.keyId);
    for (const k of more) await ch.client.delete(k.keyId);
    assert.deepEqual(
      (await ch.client.list()).map((k) => k.keyId),
      [b.keyId],
    );
    await assert.rejects(
      ch.client.delete(a.keyId),
      (e) => isMtlsError(e, "E_KEYSTORE") && /no key/.test(e.message),
    );
    await assert.rejects(ch.client.sign(a.keyId, new Uint8Array(1)), (e) => isMtlsError(e, "E_KEYSTORE"));
    await assert.rejects(ch.client.identity(a.keyId), (e) => isMtlsError(e, "E_KEYSTORE"));
  });

  it("stores a chain whose leaf certifies the key, and refuses a leaf for another key", async () => {
    const ch = channel();
    open.push(ch);
    const info = await ch.client.generate("web");
    await assert.rejects(
      ch.client.identity(info.keyId),
      (e) => isMtlsError(e, "E_KEYSTORE") && /no certificate/.test(e.message),
    );
    const other = generateKeyPair("ec-p256");
    const wrong = await certFor(spkiOf(other.publicKey));
    await assert.rejects(
      ch.client.setCertificate(info.keyId, [wrong]),
      (e) => isMtlsError(e, "E_KEYSTORE") && /not the public key/.test(e.message),
    );
    await assert.rejects(
      ch.client.setCertificate(info.keyId, [new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])]),
      (e) => isMtlsError(e, "E_KEYSTORE"),
    );
    const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000 - HOUR);
    const leaf = await certFor(info.spki, notBefore, 10 * HOUR);
    const intermediate = await certFor(spkiOf(ca.publicKey));
    const stored = await ch.client.setCertificate(info.keyId, [leaf, intermediate]);
    assert.deepEqual(stored.chain, [leaf, intermediate]);
    assert.equal(stored.notBefore?.getTime(), notBefore.getTime());
    assert.equal(stored.notAfter?.getTime(), notBefore.getTime() + 10 * HOUR);
    const listed = (await ch.client.list())[0];
    assert.deepEqual(listed?.chain, [leaf, intermediate]);

    const id = await ch.client.identity(info.keyId);
    assert.equal(id.scheme, ECDSA_P256_SHA256);
    assert.deepEqual(id.chain, [leaf, intermediate]);
    const data = new Uint8Array(130).fill(0x20);
    assert.ok(verifies(info.spki, data, await id.sign(data)));
  });

  it("answers malformed requests with E_KEYSTORE and never crashes the host", async () => {
    const ch = channel();
    open.push(ch);
    const info = await ch.client.generate("x");
    const refusals: Array<[unknown, RegExp]> = [
      [{ v: 1, id: 1, op: "export", keyId: info.keyId }, /unknown operation "export"/],
      [{ v: 1, id: 2, op: "getKey", keyId: info.keyId }, /unknown operation/],
      [{ v: 2, id: 3, op: "list" }, /version/],
      [{ v: 1, id: -1, op: "list" }, /id must be/],
      [{ v: 1, id: 4, op: "list", extra: true }, /unexpected field "extra"/],
      [{ v: 1, id: 5, op: "generate" }, /label must be a string/],
      [{ v: 1, id: 6, op: "generate", label: "x".repeat(201) }, /label is longer than 200/],
      [{ v: 1, id: 7, op: "sign", keyId: info.keyId, data: "text" }, /data must be a Uint8Array/],
      [{ v: 1, id: 8, op: "sign", keyId: info.keyId, data: new Uint8Array(65_537) }, /larger than 65536/],
      [{ v: 1, id: 9, op: "sign", keyId: "../../etc", data: new Uint8Array(1) }, /keyId must be/],
      [{ v: 1, id: 10, op: "setCertificate", keyId: info.keyId, chain: [] }, /chain must be/],
      [
        { v: 1, id: 11, op: "setCertificate", keyId: info.keyId, chain: [new Uint8Array(0)] },
        /chain\[0\] is empty/,
      ],
      [
        { v: 1, id: 12, op: "setCertificate", keyId: info.keyId, chain: Array(11).fill(new Uint8Array(1)) },
        /chain must be/,
      ],
      [{ v: 1, id: 13, op: "__proto__" }, /unknown operation/],
      [{ v: 1, id: 14, op: "toString" }, /unknown operation/],
      [[1, 2, 3], /plain object/],
      ["list", /plain object/],
      [null, /plain object/],
    ];
    for (const [message, pattern] of refusals) {
      const reply = await rawRequest(ch.port1 as unknown as MessagePort, message);
      assert.equal(reply.v, 1);
      assert.equal(reply.ok, false, JSON.stringify(message));
      if (reply.ok) continue;
      assert.equal(reply.error.code, "E_KEYSTORE");
      assert.match(reply.error.message, pattern);
      const id = (message as { id?: unknown } | null)?.id;
      assert.equal(reply.id, typeof id === "number" && id >= 0 ? id : null);
    }
    // Still serving, and the key is intact.
    const data = new Uint8Array([1, 2, 3]);
    assert.ok(verifies(info.spki, data, await ch.client.sign(info.keyId, data)));
    // A well-formed request has no path that yields key material: list carries public data only.
    const listed = await rawRequest(ch.port1 as unknown as MessagePort, { v: 1, id: 99, op: "list" });
    assert.ok(listed.ok);
    const text = JSON.stringify(listed, (_k, v) => (v instanceof Uint8Array ? "bytes" : v));
    assert.doesNotMatch(text, /privateKey|pkcs8|"d"/);
  });

  it("caps the number of keys and serializes writes (a delete racing setCertificate stays deleted)", async () => {
    const storage = memoryStorage();
    const ops = keyStoreOperations(storage, { maxKeys: 2 });
    const a = await ops.generate("a");
    await ops.generate("b");
    await assert.rejects(ops.generate("c"), (e) => isMtlsError(e, "E_KEYSTORE") && /full/.test(e.message));
    const leaf = await certFor(a.spki);
    const results = await Promise.allSettled([ops.setCertificate(a.keyId, [leaf]), ops.delete(a.keyId)]);
    assert.equal(results[0].status, "fulfilled");
    assert.equal(results[1].status, "fulfilled");
    assert.equal(await storage.get(a.keyId), undefined);
  });

  it("a closed client fails pending and new requests; a silent store times out", async () => {
    const { port1, port2 } = new MessageChannel();
    const client = KeyStoreClient.connect(port1 as unknown as MessageEndpoint, { timeoutMs: 200 });
    const t0 = Date.now();
    await assert.rejects(
      client.list(),
      (e) => isMtlsError(e, "E_KEYSTORE") && /did not answer list/.test(e.message),
    );
    assert.ok(Date.now() - t0 < 2_000);
    const pending = client.list();
    client.close();
    await assert.rejects(pending, (e) => isMtlsError(e, "E_KEYSTORE") && /closed/.test(e.message));
    await assert.rejects(client.list(), (e) => isMtlsError(e, "E_KEYSTORE"));
    port1.close();
    port2.close();
  });
});

describe("key store served to windows (origin checks)", () => {
  /** A message event as a window receives it (Node's MessageEvent accepts only a MessagePort as source). */
  const windowMessage = (data: unknown, origin?: string, source?: unknown) =>
    Object.assign(new Event("message"), { data, origin: origin ?? "", source: source ?? null });
  /** A window-like endpoint: messages arrive with an origin and a source to answer. */
  function fakeWindowTarget() {
    const target = new EventTarget() as EventTarget & MessageEndpoint;
    const posted: unknown[] = [];
    target.postMessage = (m: unknown) => posted.push(m);
    return { target, posted };
  }
  function sourceWindow() {
    const replies: Array<{ message: KeyStoreReply; targetOrigin: string }> = [];
    let wake: () => void = () => undefined;
    return {
      replies,
      postMessage(message: KeyStoreReply, targetOrigin: string) {
        replies.push({ message, targetOrigin });
        wake();
      },
      next: () =>
        new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no reply")), 5_000);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        }),
    };
  }

  it("answers only listed origins, to the asking window at its origin", async () => {
    const { target, posted } = fakeWindowTarget();
    const host = serveKeyStore(target, memoryStorage(), { allowedOrigins: ["https://app.example"] });
    const app = sourceWindow();
    const evil = sourceWindow();
    const got = app.next();
    target.dispatchEvent(
      windowMessage({ v: 1, id: 1, op: "generate", label: "k" }, "https://app.example", app),
    );
    await got;
    assert.equal(app.replies[0]?.targetOrigin, "https://app.example");
    assert.ok(app.replies[0]?.message.ok);
    target.dispatchEvent(windowMessage({ v: 1, id: 2, op: "list" }, "https://evil.example", evil));
    // Origin-less messages are not served either once the store is bound to window origins.
    target.dispatchEvent(windowMessage({ v: 1, id: 3, op: "list" }));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(evil.replies.length, 0);
    assert.equal(posted.length, 0);
    host.close();
  });

  it("without allowedOrigins, a message carrying an origin is ignored", async () => {
    const { target, posted } = fakeWindowTarget();
    const host = serveKeyStore(target, memoryStorage());
    const page = sourceWindow();
    target.dispatchEvent(windowMessage({ v: 1, id: 1, op: "list" }, "https://app.example", page));
    target.dispatchEvent(windowMessage({ v: 1, id: 2, op: "list" }));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(page.replies.length, 0);
    assert.equal(posted.length, 1);
    assert.deepEqual(posted[0], { v: 1, id: 2, ok: true, result: [] });
    host.close();
  });
});

describe("key store in a worker thread", () => {
  it("serves a client in the main thread; keys stay in the worker", async () => {
    const { port1, port2 } = new MessageChannel();
    // tsx's loader registered inside the worker, then the TypeScript fixture imported through it.
    const tsx = import.meta.resolve("tsx/esm/api");
    const fixture = new URL("../../../test/fixtures/keystore-worker.ts", import.meta.url).href;
    const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(fixture)}); })`;
    const worker = new Worker(boot, {
      eval: true,
      workerData: { port: port2 },
      transferList: [port2 as unknown as import("node:worker_threads").MessagePort],
    });
    try {
      const client = KeyStoreClient.connect(port1 as unknown as MessageEndpoint, { timeoutMs: 10_000 });
      const info = await client.generate("thread");
      const data = new TextEncoder().encode("across threads");
      assert.ok(verifies(info.spki, data, await client.sign(info.keyId, data)));
      const leaf = await certFor(info.spki);
      const id = await (async () => {
        await client.setCertificate(info.keyId, [leaf]);
        return client.identity(info.keyId);
      })();
      assert.deepEqual(id.chain, [leaf]);
      assert.ok(verifies(info.spki, data, await id.sign(data)));
      client.close();
    } finally {
      port1.close();
      await worker.terminate();
    }
  });
});

describe("key store client and its endpoint", () => {
  it("fails pending requests at once when the endpoint reports an error (a Worker whose script failed)", async () => {
    const target = new EventTarget() as EventTarget & MessageEndpoint;
    target.postMessage = () => undefined;
    const client = KeyStoreClient.connect(target, { timeoutMs: 10_000 });
    const t0 = Date.now();
    const pending = client.list();
    target.dispatchEvent(Object.assign(new Event("error"), { message: "SyntaxError: Unexpected token" }));
    await assert.rejects(pending, (e) => isMtlsError(e, "E_KEYSTORE") && /Unexpected token/.test(e.message));
    assert.ok(Date.now() - t0 < 1_000);
    client.close();
  });

  it("accepts the browser's endpoint types (compile-time)", () => {
    // Type checks only: a DOM Worker, MessagePort and window fit MessageEndpoint.
    const fits = (_: MessageEndpoint) => true;
    const asDom = <T>(v: unknown) => v as T;
    assert.ok(fits(asDom<globalThis.Worker>({})));
    assert.ok(fits(asDom<globalThis.MessagePort>({})));
    assert.ok(fits(asDom<Window>({})));
  });
});
