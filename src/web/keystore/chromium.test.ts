/**
 * The key store where it is meant to run: headless Chromium (/usr/bin/chromium through
 * playwright-core), keys in IndexedDB. Proves what Node cannot: indexedDbStorage keeps keys across
 * workers, IndexedDB gives back a CryptoKey that still refuses export, delete really deletes, and an
 * iframe on another origin serves only the origin it allows. The bundles are built here with esbuild
 * from src/web/keystore (worker.ts and index.ts); pages come from a node:http server on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { type Browser, chromium, type Page } from "playwright-core";
import { buildCertificate, randomSerial } from "../../pki/certificate.js";
import { derSequence } from "../../pki/der.js";
import { generateKeyPair } from "../../pki/keys.js";
import { keyObjectSigner } from "../../pki/signer.js";

const CHROMIUM = "/usr/bin/chromium";
const SKIP = existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent`;

async function bundle(entry: string): Promise<string> {
  const out = await build({
    entryPoints: [fileURLToPath(new URL(entry, import.meta.url))],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "silent",
  });
  return out.outputFiles[0]?.text ?? "";
}

const ca = generateKeyPair("ec-p256");
async function certFor(spki: number[]): Promise<number[]> {
  const der = await buildCertificate(
    {
      serial: randomSerial(),
      issuer: derSequence(),
      subject: derSequence(),
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      spki: new Uint8Array(spki),
      extensions: [],
    },
    keyObjectSigner(ca.privateKey),
  );
  return [...der];
}

describe("key store in Chromium (IndexedDB)", { skip: SKIP, concurrency: 1 }, () => {
  let server: Server;
  let frameServer: Server;
  let port = 0;
  let framePort = 0;
  let browser: Browser;
  let page: Page;

  before(async () => {
    const [worker, lib] = await Promise.all([bundle("./worker.ts"), bundle("./index.ts")]);
    const handler = (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => {
      const path = new URL(req.url ?? "/", "http://x").pathname;
      const send = (type: string, body: string) => {
        res.writeHead(200, { "content-type": type, "cache-control": "no-store" });
        res.end(body);
      };
      if (path === "/worker.js") return send("text/javascript", worker);
      if (path === "/keystore.js") return send("text/javascript", lib);
      if (path === "/frame.html") {
        // The key store in an iframe: it serves the page origin http://127.0.0.1:PORT only.
        return send(
          "text/html",
          `<!doctype html><script type="module">
            import { serveKeyStore, indexedDbStorage } from "/keystore.js";
            serveKeyStore(window, indexedDbStorage("mtls-keystore-frame"), { allowedOrigins: ["http://127.0.0.1:${port}"] });
          </script>`,
        );
      }
      if (path === "/") return send("text/html", "<!doctype html><title>key store</title>");
      res.writeHead(404).end();
    };
    // Two ports: two origins of one site. The key store's iframe lives on the second; being
    // same-site, its IndexedDB is first-party storage (a cross-site iframe's is refused by Chromium).
    server = createServer(handler);
    frameServer = createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    await new Promise<void>((resolve) => frameServer.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
    framePort = (frameServer.address() as AddressInfo).port;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
    });
    page = await browser.newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(`http://127.0.0.1:${port}/`);
  });
  after(async () => {
    await browser?.close();
    for (const s of [server, frameServer])
      await new Promise((resolve) => (s ? s.close(resolve) : resolve(undefined)));
  });

  it("a worker keeps non-extractable keys in IndexedDB across workers, and deletes them", async () => {
    const first = await page.evaluate(async () => {
      // biome-ignore lint/suspicious/noExplicitAny: the bundle is plain JavaScript in the page
      const ks: any = await import(`${location.origin}/keystore.js`);
      const worker = new Worker("/worker.js", { type: "module" });
      const client = ks.KeyStoreClient.connect(worker, { timeoutMs: 10_000 });
      const info = await client.generate("chromium");
      const data = new TextEncoder().encode("signed in the worker");
      const sig = await client.sign(info.keyId, data);
      const pub = await crypto.subtle.importKey(
        "spki",
        info.spki,
        { name: "ECDSA", namedCurve: "P-256" },
        false,
        ["verify"],
      );
      const ok = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, pub, sig, data);
      const wrong = await client
        .setCertificate(info.keyId, [new Uint8Array([0x30, 0x00])])
        .catch((e: Error) => e);
      worker.terminate();
      return {
        keyId: info.keyId as string,
        spki: [...(info.spki as Uint8Array)],
        ok,
        wrong: `${(wrong as { code?: string }).code}`,
      };
    });
    assert.equal(first.ok, true);
    assert.equal(first.wrong, "E_KEYSTORE");
    const leaf = await certFor(first.spki);

    const second = await page.evaluate(
      async ({ keyId, leaf }) => {
        // biome-ignore lint/suspicious/noExplicitAny: the bundle is plain JavaScript in the page
        const ks: any = await import(`${location.origin}/keystore.js`);
        // A new worker: the key comes back from IndexedDB.
        const worker = new Worker("/worker.js", { type: "module" });
        const client = ks.KeyStoreClient.connect(worker, { timeoutMs: 10_000 });
        const listed = await client.list();
        const stored = await client.setCertificate(keyId, [new Uint8Array(leaf)]);
        const identity = await client.identity(keyId);
        const data = new Uint8Array(130).fill(7);
        const sig = await identity.sign(data);
        const pub = await crypto.subtle.importKey(
          "spki",
          listed[0].spki,
          { name: "ECDSA", namedCurve: "P-256" },
          false,
          ["verify"],
        );
        const ok = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, pub, sig, data);
        worker.terminate();

        // The page shares the worker's origin, so it can open the database: the CryptoKey it
        // gets there is still non-extractable, in every format.
        const db: IDBDatabase = await new Promise((resolve, reject) => {
          const req = indexedDB.open("mtls-keystore");
          req.onsuccess = () => resolve(req.result);
          req.onerror = () => reject(req.error);
        });
        const record = await new Promise<{ privateKey: CryptoKey; chain: Uint8Array[]; notAfter: Date }>(
          (resolve, reject) => {
            const req = db.transaction("keys").objectStore("keys").get(keyId);
            req.onsuccess = () => resolve(req.result);
            req.onerror = () => reject(req.error);
          },
        );
        db.close();
        const refusals: string[] = [];
        for (const format of ["pkcs8", "jwk"] as const) {
          await crypto.subtle.exportKey(format, record.privateKey).then(
            () => refusals.push(`${format}: exported!`),
            (e: Error) => refusals.push(`${format}: ${e.name}`),
          );
        }
        // Deleted, and gone for the next worker too.
        const third = new Worker("/worker.js", { type: "module" });
        const again = ks.KeyStoreClient.connect(third, { timeoutMs: 10_000 });
        await again.delete(keyId);
        const missing = await again.sign(keyId, data).catch((e: { code: string }) => e.code);
        third.terminate();
        const fourth = new Worker("/worker.js", { type: "module" });
        const last = ks.KeyStoreClient.connect(fourth, { timeoutMs: 10_000 });
        const after = (await last.list()).length;
        fourth.terminate();
        return {
          listed: listed.map((k: { keyId: string; label: string }) => `${k.keyId}:${k.label}`),
          chainLength: stored.chain.length,
          notAfterIsDate: stored.notAfter instanceof Date && record.notAfter instanceof Date,
          storedChain: record.chain.length,
          extractable: record.privateKey.extractable,
          refusals,
          ok,
          scheme: identity.scheme,
          missing,
          after,
        };
      },
      { keyId: first.keyId, leaf },
    );
    assert.deepEqual(second.listed, [`${first.keyId}:chromium`]);
    assert.equal(second.chainLength, 1);
    assert.equal(second.storedChain, 1);
    assert.equal(second.notAfterIsDate, true);
    assert.equal(second.ok, true);
    assert.equal(second.scheme, 0x0403);
    assert.equal(second.extractable, false);
    assert.deepEqual(second.refusals, ["pkcs8: InvalidAccessError", "jwk: InvalidAccessError"]);
    assert.equal(second.missing, "E_KEYSTORE");
    assert.equal(second.after, 0);
  });

  it("an iframe on another origin serves the allowed page origin only", async () => {
    const frameOrigin = `http://127.0.0.1:${framePort}`;
    const run = async (p: Page) =>
      p.evaluate(async (frameOrigin) => {
        // biome-ignore lint/suspicious/noExplicitAny: the bundle is plain JavaScript in the page
        const ks: any = await import(`${location.origin}/keystore.js`);
        const frame = document.createElement("iframe");
        frame.src = `${frameOrigin}/frame.html`;
        await new Promise((resolve) => {
          frame.onload = resolve;
          document.body.append(frame);
        });
        const endpoint = ks.windowEndpoint(frame.contentWindow, frameOrigin, window);
        const client = ks.KeyStoreClient.connect(endpoint, { timeoutMs: 2_000 });
        try {
          const info = await client.generate("framed");
          const data = new TextEncoder().encode("signed in the iframe");
          const sig = await client.sign(info.keyId, data);
          const pub = await crypto.subtle.importKey(
            "spki",
            info.spki,
            { name: "ECDSA", namedCurve: "P-256" },
            false,
            ["verify"],
          );
          return { ok: await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, pub, sig, data) };
        } catch (e) {
          return { error: `${(e as { code?: string }).code}: ${(e as Error).message}` };
        } finally {
          client.close();
          frame.remove();
        }
      }, frameOrigin);
    assert.deepEqual(await run(page), { ok: true });
    // A page on another origin (here the frame's own) is not served: no answer at all.
    const stranger = await browser.newPage();
    try {
      await stranger.goto(`${frameOrigin}/`);
      const refused = await run(stranger);
      assert.match(String(refused.error), /^E_KEYSTORE: the key store did not answer generate/);
    } finally {
      await stranger.close();
    }
  });
});
