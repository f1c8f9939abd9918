/**
 * mtls/web end to end (issue 9): the example app of docs/examples/web-app in a real Chromium
 * (Debian's /usr/bin/chromium, playwright-core) with NO client certificate configured in the
 * browser, against the built CLI:
 *   - `mtls init`, `mtls ca serve` (the HTTPS API), a JSON API (node:http on 127.0.0.1) behind
 *     `mtls tunnel server` (mTLS in, plain out) that follows the CA's revocation feed;
 *   - `mtls gateway --route /=<app>;mode=none --relay ca=… --relay api=…`: serves the page and the
 *     WebSocket relay the page's own TLS 1.3 travels through (the gateway sees ciphertext only), on
 *     one origin, so the relay's default origin check (its own origin only) is the one in force;
 *   - the example app's own server (docs/examples/web-app/serve.mjs) serving the page, config.json
 *     and the dist/web bundle.
 * The page enrolls with a token from `mtls token create`, its key cannot be exported (read back
 * from the worker's IndexedDB: same origin), it calls the API (the tunnel's log shows the page's
 * certificate), renews over its own mTLS, and after `mtls revoke` its next connection is refused
 * and the page shows the error. Screenshots of each step go to docs/images/web-*.png only with
 * MTLS_SCREENSHOTS=1. 127.0.0.1 only; every wait is bounded; every process is stopped.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { createServer, type Server } from "node:http";
import {
  type AddressInfo,
  connect,
  createServer as createNetServer,
  type Server as NetServer,
} from "node:net";
import { join } from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { CHROMIUM, startBrowser, trustRootInNss } from "./browser.js";
import {
  assertOk,
  type Background,
  CLI,
  freePort,
  listJson,
  mtls,
  REPO_ROOT,
  requireTool,
  startBackground,
  startCaServe,
  tempDir,
} from "./helpers.js";
import {
  type AuditLine,
  auditLines,
  metricsOf,
  startTunnel,
  stopChild,
  type Tunnel,
  waitFor,
} from "./peers.js";

const BUNDLE = join(REPO_ROOT, "dist", "web");
const APP = join(REPO_ROOT, "docs", "examples", "web-app");
const NO_CHROMIUM = existsSync(CHROMIUM)
  ? undefined
  : `${CHROMIUM} is absent: the browser end-to-end test of mtls/web did not run (CI installs Debian's chromium)`;
if (NO_CHROMIUM) console.warn(`WARNING: ${NO_CHROMIUM}`);

const NAME = "portal";
const URI = "spiffe://acme.test/web/portal";
const DOC_IMAGES = join(REPO_ROOT, "docs", "images");
const VIEWPORT = { width: 1000, height: 1100 };

let dir: string;
let cleanup: () => void;
let root: string;
let api: Server;
/** What the API backend answered, in order (it cannot see who called: the tunnel knows that). */
const apiCalls: string[] = [];
let tunnel: Tunnel;
let tap: { server: NetServer; sent: Buffer[] };
let gateway: Background;
let appServer: Background;
let appOrigin: string;
/** https://127.0.0.1:PORT of the gateway: the page is loaded through it, as docs/web.md sets up. */
let gwOrigin: string;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const running: { stop(): Promise<void> }[] = [];
/** The page's console and errors, shown when a step fails. */
const consoleLines: string[] = [];

const inDir = (args: string[]) => mtls(args, { cwd: dir });

/** A TCP pass-through to 127.0.0.1:`port` that keeps a copy of every byte sent towards it. */
function startTap(port: number): Promise<{ server: NetServer; sent: Buffer[] }> {
  const sent: Buffer[] = [];
  const server = createNetServer((client) => {
    const upstream = connect(port, "127.0.0.1");
    client.on("data", (d: Buffer) => sent.push(Buffer.from(d)));
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r({ server, sent })));
}

/** The JSON API behind the tunnel: plain HTTP on 127.0.0.1. */
function startApi(): Promise<Server> {
  const server = createServer((req, res) => {
    apiCalls.push(req.url ?? "");
    const body = JSON.stringify({
      service: "Acme orders API",
      path: req.url,
      orders: [
        { id: 1042, item: "mTLS gateway licence", status: "shipped" },
        { id: 1043, item: "hardware token", status: "packing" },
      ],
      servedAt: new Date().toISOString(),
    });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  });
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r(server)));
}

const skipped = (t: TestContext): boolean => {
  if (NO_CHROMIUM) t.skip(NO_CHROMIUM);
  return NO_CHROMIUM !== undefined;
};

async function screenshot(name: string): Promise<void> {
  if (process.env.MTLS_SCREENSHOTS !== "1") return;
  mkdirSync(DOC_IMAGES, { recursive: true });
  await page.screenshot({ path: join(DOC_IMAGES, `${name}.png`), fullPage: true });
}

/** Clicks a step's button and waits (bounded) until the page says that step finished. */
async function runStep(button: string, ms = 20_000): Promise<void> {
  const before = (await page.locator("body").getAttribute("data-done")) ?? "";
  await page.click(`#${button}`, { timeout: 5_000 });
  await page.waitForFunction(
    ([b, prev]) => document.body.dataset.done !== prev && document.body.dataset.done?.startsWith(`${b}:`),
    [button, before] as const,
    { timeout: ms },
  );
}

const text = async (id: string) => ((await page.locator(`#${id}`).textContent()) ?? "").trim();
/** The gateway's JSON log lines with this event. */
const gatewayEvents = (event: string): Record<string, unknown>[] =>
  gateway
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {}; // a line still being written
      }
    })
    .filter((e) => e.event === event);

/** A serial as lower-case hex without leading zeros, however it was written. */
const hex = (serial: string) =>
  serial
    .toLowerCase()
    .replace(/[^0-9a-f]/g, "")
    .replace(/^0+/, "");
const errorShown = async () => !(await page.locator("#error").isHidden());

/** The connection audit lines of the tunnel for the page's certificate with this serial. */
const auditOf = (serial: string): AuditLine[] =>
  auditLines(tunnel).filter((l) => hex(l.identity?.serial ?? "") === hex(serial));

before(async () => {
  if (NO_CHROMIUM) return;
  // npm test builds first: a missing bundle is a broken build, not a reason to skip.
  for (const f of ["mtls-web.js", "keystore-worker.js"])
    assert.ok(existsSync(join(BUNDLE, f)), `dist/web/${f} is missing: npm run build makes it`);
  await requireTool("certutil", ["-H"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-web-browser-"));
  // A generated passphrase in .mtls/passphrase: every command below finds it there.
  assertOk(await inDir(["init", "--name", "Acme Web E2E"]), "mtls init");
  root = join(dir, ".mtls", "ca", "root.crt");
  for (const name of ["tunnel", "gateway"]) {
    assertOk(
      await inDir(["issue", "server", name, "--dns", "localhost", "--ip", "127.0.0.1", "--out", "certs"]),
      `mtls issue server ${name}`,
    );
  }
  const ca = await startCaServe(dir, []);
  running.push({ stop: () => ca.bg.stop() });
  const caPort = Number(new URL(ca.api).port);

  api = await startApi();
  const apiPort = (api.address() as AddressInfo).port;
  tunnel = await startTunnel(
    "server",
    [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${apiPort}`,
      "--cert",
      join(dir, "certs", "tunnel.crt"),
      "--key",
      join(dir, "certs", "tunnel.key"),
      "--ca",
      root,
      "--allow-uri",
      "spiffe://acme.test/web/*",
      "--revocation-feed",
      ca.api,
      "--status",
      "127.0.0.1:0",
      "--log-level",
      "debug",
    ],
    dir,
    running,
  );
  await waitFor(
    () => tunnel.bg.output().includes("revocation feed connected"),
    10_000,
    "the tunnel's revocation feed",
    tunnel.bg.output,
  );

  // What the relay sends to the CA passes through this tap, so the test can see that it is TLS.
  tap = await startTap(caPort);

  const appPort = await freePort();
  appOrigin = `http://127.0.0.1:${appPort}`;
  gateway = await startBackground(
    process.execPath,
    [
      CLI,
      "gateway",
      "--listen",
      "127.0.0.1:0",
      "--cert",
      join(dir, "certs", "gateway.crt"),
      "--key",
      join(dir, "certs", "gateway.key"),
      "--ca",
      root,
      // A relay gateway: its one route (the app's own pages, public) asks for no client certificate,
      // so the gateway asks none, as Chromium's WebSockets need (docs/web.md). No --relay-origin:
      // the page comes from the gateway's own origin, the only one allowed by default.
      "--route",
      `/=${appOrigin};mode=none`,
      "--relay",
      `ca=127.0.0.1:${(tap.server.address() as AddressInfo).port}`,
      "--relay",
      `api=127.0.0.1:${tunnel.port}`,
    ],
    { cwd: dir, ready: /mtls: gateway listening on .*\n/, timeoutMs: 15_000 },
  );
  running.push({ stop: () => stopChild(gateway.child, 0, "SIGKILL") });
  const gwPort = Number((/listening on 127\.0\.0\.1:(\d+)/.exec(gateway.output()) as RegExpExecArray)[1]);
  const relay = (name: string) => `wss://127.0.0.1:${gwPort}/.mtls/relay/${name}`;
  gwOrigin = `https://127.0.0.1:${gwPort}`;

  appServer = await startBackground(
    process.execPath,
    [
      join(APP, "serve.mjs"),
      "--listen",
      `127.0.0.1:${appPort}`,
      "--bundle",
      BUNDLE,
      "--ca-url",
      `https://localhost:${caPort}`,
      "--ca-relay",
      relay("ca"),
      "--api-url",
      `https://localhost:${tunnel.port}/v1/orders`,
      "--api-relay",
      relay("api"),
      "--trust-anchor",
      root,
    ],
    { cwd: dir, ready: /example app on http:\/\/127\.0\.0\.1:\d+\/\n/, timeoutMs: 10_000 },
  );
  running.push({ stop: () => stopChild(appServer.child, 0, "SIGKILL") });

  // Chromium trusts the CA for the gateway's wss:// (NSS database in its HOME), and has no client
  // certificate at all: the page's TLS to the CA and to the tunnel is its own.
  const home = join(dir, "home");
  await trustRootInNss(home, root, "Acme Web E2E Root CA");
  const started = await startBrowser(home, root);
  running.push(started);
  browser = started.browser;
  context = await browser.newContext({ viewport: VIEWPORT });
  page = await context.newPage();
  page.on("pageerror", (err) => consoleLines.push(`page error: ${err.message}`));
  page.on("console", (msg) => consoleLines.push(`console.${msg.type()}: ${msg.text()}`));
});

after(async () => {
  if (process.env.MTLS_E2E_DEBUG === "1") {
    for (const [name, bg] of [
      ["gateway", gateway],
      ["tunnel", tunnel?.bg],
      ["app server", appServer],
    ] as const)
      console.error(`--- ${name} ---\n${bg?.output() ?? ""}`);
    console.error(`--- page console ---\n${consoleLines.join("\n")}`);
  }
  await context?.close().catch(() => undefined);
  await browser?.close().catch(() => undefined);
  for (const r of running.reverse()) await r.stop();
  await new Promise<void>((r) => (api ? api.close(() => r()) : r()));
  await new Promise<void>((r) => (tap ? tap.server.close(() => r()) : r()));
  cleanup?.();
});

describe("mtls/web in Chromium: the example app", { concurrency: 1, timeout: 180_000 }, () => {
  let firstSerial = "";
  let renewedSerial = "";

  it("opens the key store worker and enrolls with a one-time token through the relay", async (t) => {
    if (skipped(t)) return;
    await page.goto(`${gwOrigin}/`, { timeout: 15_000 });
    await page.waitForFunction(() => document.body.dataset.ready === "true", undefined, { timeout: 15_000 });
    assert.match(await text("keystore-state"), /Key store worker ready: 0 key\(s\)/);
    assert.equal(await errorShown(), false, await text("error"));
    await screenshot("web-start");

    const res = assertOk(
      await inDir(["token", "create", NAME, "--profile", "client", "--uri", URI, "--ttl", "1h", "--json"]),
      "mtls token create",
    );
    const token = (JSON.parse(res.stdout) as { token: string }).token;
    await page.fill("#token", token);
    await runStep("enroll");
    assert.equal(await errorShown(), false, await text("error"));
    assert.equal(await text("status-badge"), "enrolled");
    assert.equal(await text("cert-subject"), `CN=${NAME}`);

    // The CA recorded exactly the certificate the page holds.
    const rows = (await listJson(dir)).filter((r) => r.name === NAME);
    assert.equal(rows.length, 1, JSON.stringify(rows));
    const row = rows[0] as (typeof rows)[number];
    assert.equal(await text("cert-fingerprint"), row.fingerprint.replace(/:/g, "").toLowerCase());
    assert.equal(hex(await text("cert-serial")), hex(row.serial));
    assert.deepEqual(row.sans, [`uri:${URI}`]);
    assert.equal(row.keyType, "ec-p256");
    firstSerial = row.serial;
    // The gateway relayed the page's session to the CA and audited it (origin, relay, bytes) ...
    let session: Record<string, unknown> | undefined;
    await waitFor(
      () => {
        session = gatewayEvents("relay.session").find((e) => e.relay === "ca");
        return session !== undefined;
      },
      5_000,
      "the gateway's relay.session line for the CA",
      gateway.output,
    );
    assert.equal(session?.origin, gwOrigin);
    assert.ok(Number(session?.bytesToTarget) > 500, JSON.stringify(session));
    // ... and carried only ciphertext: what reached the CA is TLS records (a ClientHello first),
    // with neither the token nor the HTTP request in clear.
    const toCa = Buffer.concat(tap.sent);
    // A handshake record (22), version 0x0301 or 0x0303 (RFC 8446 5.1), holding a ClientHello (1).
    assert.equal(toCa[0], 0x16, "a TLS handshake record first");
    assert.ok(toCa[1] === 3 && (toCa[2] === 1 || toCa[2] === 3), "legacy record version 0x0301 or 0x0303");
    assert.equal(toCa[5], 0x01, "a ClientHello");
    for (const clear of [token, token.split(".")[1] as string, "POST /v1/enroll", "CERTIFICATE REQUEST"])
      assert.equal(toCa.includes(clear), false, `"${clear}" crossed the relay in clear`);
    await screenshot("web-enrolled");
  });

  it("the key in the worker's IndexedDB cannot be exported", async (t) => {
    if (skipped(t)) return;
    const found = await page.evaluate(async () => {
      const db = await new Promise<IDBDatabase>((resolve, reject) => {
        const req = indexedDB.open("mtls-keystore");
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
      const records = await new Promise<Array<{ keyId: string; privateKey: CryptoKey }>>(
        (resolve, reject) => {
          const req = db.transaction("keys", "readonly").objectStore("keys").getAll();
          req.onsuccess = () => resolve(req.result);
          req.onerror = () => reject(req.error);
        },
      );
      db.close();
      const out = [];
      for (const r of records) {
        const key = r.privateKey;
        const refused: string[] = [];
        for (const format of ["pkcs8", "jwk"] as const) {
          try {
            await crypto.subtle.exportKey(format, key);
            refused.push(`${format}: EXPORTED`);
          } catch (err) {
            refused.push(`${format}: ${(err as Error).name}`);
          }
        }
        out.push({
          keyId: r.keyId,
          type: key.type,
          extractable: key.extractable,
          algorithm: key.algorithm as EcKeyAlgorithm,
          usages: key.usages,
          refused,
        });
      }
      return out;
    });
    assert.equal(found.length, 1, JSON.stringify(found));
    const key = found[0] as (typeof found)[number];
    assert.equal(key.keyId, await text("key-id"));
    assert.equal(key.type, "private");
    assert.equal(key.extractable, false);
    assert.deepEqual(key.algorithm, { name: "ECDSA", namedCurve: "P-256" });
    assert.deepEqual(key.usages, ["sign"]);
    assert.deepEqual(key.refused, ["pkcs8: InvalidAccessError", "jwk: InvalidAccessError"]);
  });

  it("calls the API behind the tunnel server with the page's certificate", async (t) => {
    if (skipped(t)) return;
    const calls = apiCalls.length;
    await runStep("call-api");
    assert.equal(await errorShown(), false, await text("error"));
    const shown = await text("api-result");
    assert.match(shown, /^HTTP 200\n/);
    const body = JSON.parse(shown.slice(shown.indexOf("\n") + 1)) as { service: string; path: string };
    assert.equal(body.service, "Acme orders API");
    assert.equal(body.path, "/v1/orders");
    assert.deepEqual(apiCalls.slice(calls), ["/v1/orders"]);
    // The tunnel let the page in by its certificate: its debug line names the serial at once.
    await waitFor(
      () => new RegExp(`"serial":"${firstSerial}"[^\\n]*connection allowed`, "i").test(tunnel.bg.output()),
      5_000,
      "the tunnel's 'connection allowed' line for the page's certificate",
      tunnel.bg.output,
    );
    await screenshot("web-api");
  });

  it("a page of another origin cannot open the relay (403 before the upgrade)", async (t) => {
    if (skipped(t)) return;
    const other = await context.newPage();
    try {
      // The same app served straight from its own server: another origin than the gateway's.
      await other.goto(`${appOrigin}/`, { timeout: 15_000 });
      const outcome = await other.evaluate(
        (url) =>
          new Promise<string>((resolve) => {
            const ws = new WebSocket(url);
            const timer = setTimeout(() => resolve("timeout"), 5_000);
            ws.onopen = () => {
              clearTimeout(timer);
              resolve("open");
            };
            ws.onclose = (e) => {
              clearTimeout(timer);
              resolve(`closed ${e.code}`);
            };
          }),
        `wss://${new URL(gwOrigin).host}/.mtls/relay/api`,
      );
      assert.equal(outcome, "closed 1006");
      await waitFor(
        () => gatewayEvents("relay.refused").some((e) => e.reason === "origin" && e.origin === appOrigin),
        5_000,
        "the gateway's relay.refused line for the other origin",
        gateway.output,
      );
    } finally {
      await other.close();
    }
  });

  it("renews over its own mTLS; the API then sees the new certificate", async (t) => {
    if (skipped(t)) return;
    await runStep("renew");
    assert.equal(await errorShown(), false, await text("error"));
    const rows = (await listJson(dir)).filter((r) => r.name === NAME);
    assert.equal(rows.length, 2, JSON.stringify(rows));
    const renewed = rows.find((r) => r.serial !== firstSerial) as (typeof rows)[number];
    renewedSerial = renewed.serial;
    assert.equal(hex(await text("cert-serial")), hex(renewedSerial));
    assert.equal(await text("cert-fingerprint"), renewed.fingerprint.replace(/:/g, "").toLowerCase());
    assert.match(await text("renew-result"), new RegExp(`${firstSerial}.*→.*${renewedSerial}`, "i"));
    await screenshot("web-renewed");

    // The renewal closed the page's pooled connections: the tunnel's audit line for the first
    // certificate's connection is out, with the page's identity, and the next call uses the new one.
    const first = await waitForLine(
      () => auditOf(firstSerial).find((l) => l.allowed),
      "first serial's audit",
    );
    assert.match(first.identity?.subject ?? "", new RegExp(`CN=${NAME}`));
    assert.deepEqual(first.identity?.sans, [`uri:${URI}`]);
    await runStep("call-api");
    assert.equal(await errorShown(), false, await text("error"));
    await waitFor(
      () => new RegExp(`"serial":"${renewedSerial}"[^\\n]*connection allowed`, "i").test(tunnel.bg.output()),
      5_000,
      "the tunnel's 'connection allowed' line for the renewed certificate",
      tunnel.bg.output,
    );
  });

  it("after `mtls revoke`, the next connection is refused and the page shows the error", async (t) => {
    if (skipped(t)) return;
    // Revocations the tunnel's feed delivered (whatever the series' labels).
    const seen = async () =>
      (await metricsOf(tunnel))
        .split("\n")
        .filter((l) => l.startsWith("mtls_revocation_feed_revocations_total"))
        .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
    const before = await seen();
    assertOk(await inDir(["revoke", NAME]), `mtls revoke ${NAME}`);
    // The revocation feed reaches the tunnel within about a second (two certificates: the first
    // and the renewed one); an open connection of the page's is cut then.
    await waitFor(async () => (await seen()) >= before + 2, 10_000, "the revocation on the tunnel's feed");
    const cut = auditOf(renewedSerial).find((l) => l.reason === "revoked");
    if (cut) assert.match(cut.identity?.subject ?? "", new RegExp(`CN=${NAME}`));
    const calls = apiCalls.length;
    await runStep("call-api");
    assert.equal(await errorShown(), true, "the page shows an error");
    const code = await page.locator("#error").getAttribute("data-code");
    const message = await text("error-message");
    // The tunnel ends the session right after the handshake, without an alert: the page sees the TLS
    // session cut without close_notify (E_TLS), or, when that close came as a TCP reset, the relay's
    // "target connection lost" (E_RELAY, close 1011). Either way the page says the server refused.
    if (code === "E_RELAY") assert.match(message, /\b1011 target connection lost\b/);
    else assert.equal(code, "E_TLS", `${code}: ${message}`);
    assert.equal(await text("status-badge"), "refused by the server");
    const refused = await waitForLine(
      () => auditOf(renewedSerial).find((l) => !l.allowed),
      "the tunnel's refusal of the revoked certificate",
    );
    assert.equal(refused.reason, "revoked");
    assert.equal(apiCalls.length, calls, "nothing reached the API");
    await screenshot("web-revoked");
  });
});

async function waitForLine(find: () => AuditLine | undefined, what: string, ms = 5_000): Promise<AuditLine> {
  let hit: AuditLine | undefined;
  await waitFor(
    () => {
      hit = find();
      return hit !== undefined;
    },
    ms,
    what,
    () => `${tunnel.bg.output()}\n--- gateway ---\n${gateway.output()}\n--- app ---\n${appServer.output()}`,
  );
  return hit as AuditLine;
}
