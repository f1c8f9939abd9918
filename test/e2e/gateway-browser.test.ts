/**
 * The gateway in front of a real browser (issue 5): Chromium (Debian's /usr/bin/chromium) driven by
 * playwright-core opens pages behind the built `mtls gateway` (mode require) with the PKCS#12 that
 * `mtls issue client alice --p12` wrote, without a certificate, and after `mtls revoke alice`; and
 * a WebSocket opened by the page goes through the gateway to an upstream that echoes. Screenshots
 * of the three pages go to artifacts/gateway/ (and to docs/images/ with MTLS_UPDATE_DOC_IMAGES=1).
 *
 * How the browser trusts the private CA, with no ignoreHTTPSErrors anywhere in this file:
 * - Playwright gives a context a client certificate by routing the browser through its own local
 *   SOCKS proxy, which opens the TLS connection to the gateway itself (Node's tls, with the
 *   PKCS#12) and shows the browser a throwaway certificate that Playwright makes it accept. That
 *   proxy verifies the gateway's chain against Node's trust store: it runs inside a Playwright
 *   browser server started as a child process whose trust store is the CA's ca.crt alone
 *   (`node --use-openssl-ca` with SSL_CERT_FILE). NODE_EXTRA_CA_CERTS does not do: a TLS context
 *   made from a PKCS#12 gets a store of Node's bundled roots plus the PKCS#12's own CA
 *   certificates, without the extra ones (Node 20: "unable to get issuer certificate").
 * - A context without a client certificate talks to the gateway directly: Chromium verifies the
 *   chain itself, against an NSS database in the HOME it runs with, where ca.crt is a trusted root
 *   (certutil), as a person would install it.
 * 127.0.0.1 only. Debian packages: chromium, libnss3-tools.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { CHROMIUM, startBrowser, trustRootInNss } from "./browser.js";
import { assertOk, CLI, mtls, REPO_ROOT, requireTool, startBackground, tempDir } from "./helpers.js";
import { PASSPHRASE_ENV, sha256, stopChild, TestCa, type Tunnel, waitFor } from "./peers.js";

const NO_CHROMIUM = existsSync(CHROMIUM)
  ? undefined
  : `${CHROMIUM} is absent: the browser end-to-end test of the gateway did not run (CI installs Debian's chromium)`;
if (NO_CHROMIUM) console.warn(`WARNING: ${NO_CHROMIUM}`);

const ENROLL_URL = "https://ca.acme.test/enroll";
const ALICE_URI = "spiffe://acme.test/user/alice";
const ARTIFACTS = join(REPO_ROOT, "artifacts", "gateway");
const DOC_IMAGES = join(REPO_ROOT, "docs", "images");
const VIEWPORT = { width: 1000, height: 700 };

let dir: string;
let cleanup: () => void;
let ca: TestCa;
let p12Password: string;
let upstream: Server;
/** What the upstream saw: each request's path and X-Client-Identity, each WebSocket's. */
const seen: { kind: "http" | "ws"; path: string; identity: string | undefined }[] = [];
let gw: Tunnel;
let browser: Browser;
const running: { stop(): Promise<void> }[] = [];

// ---------------------------------------------------------------------------------------------
// The upstream: a page that shows the identity headers it received, and a WebSocket echo.

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function identityPage(req: IncomingMessage): string {
  const raw = req.headers["x-client-identity"];
  const clientCert = req.headers["client-cert"];
  const id = typeof raw === "string" ? (JSON.parse(raw) as Record<string, unknown>) : undefined;
  // RFC 9440: the DER between colons, base64.
  const der = typeof clientCert === "string" ? Buffer.from(clientCert.slice(1, -1), "base64") : undefined;
  const rows = id
    ? [
        ["Subject", String(id.subject)],
        ["SANs", (id.sans as string[]).join(", ")],
        ["Serial", String(id.serial)],
        ["Fingerprint (X-Client-Identity)", String(id.fingerprint)],
        ["Client-Cert (RFC 9440)", der ? `${der.length} bytes, SHA-256 ${sha256(der)}` : "absent"],
      ]
    : [["Identity", "none received"]];
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Acme app</title>
<style>body{font-family:system-ui,sans-serif;margin:3rem auto;max-width:46rem;color:#1f2328}
dt{font-weight:600;margin-top:.6rem}dd{margin:0;font-family:monospace;word-break:break-all}</style></head>
<body><h1>Acme app behind mtls gateway</h1><p>Signed in by client certificate. The gateway sent:</p>
<dl>${rows.map(([k, v]) => `<dt>${esc(k as string)}</dt><dd data-field="${esc(k as string)}">${esc(v as string)}</dd>`).join("")}</dl>
</body></html>`;
}

/** One WebSocket frame from the server (never masked), text or close. */
function wsFrame(opcode: number, payload: Buffer): Buffer {
  const head =
    payload.length < 126
      ? Buffer.from([0x80 | opcode, payload.length])
      : Buffer.from([0x80 | opcode, 126, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([head, payload]);
}

/**
 * A minimal RFC 6455 server on an upgraded socket: answers the handshake, sends who it saw, then
 * echoes every text message as "echo: …" and answers a close. Messages are small (one frame each).
 */
function acceptWebSocket(req: IncomingMessage, socket: Socket): void {
  const key = req.headers["sec-websocket-key"];
  if (typeof key !== "string") {
    socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
    return;
  }
  const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
  const identity = req.headers["x-client-identity"];
  socket.write(wsFrame(1, Buffer.from(JSON.stringify({ identity: identity ?? null }))));
  let buf = Buffer.alloc(0);
  socket.on("error", () => undefined);
  socket.on("data", (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (buf.length < 2) return;
      const opcode = (buf[0] as number) & 0x0f;
      let len = (buf[1] as number) & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        socket.destroy(); // never sent by this test
        return;
      }
      const masked = ((buf[1] as number) & 0x80) !== 0;
      const end = at + (masked ? 4 : 0) + len;
      if (buf.length < end) return;
      const mask = masked ? buf.subarray(at, at + 4) : undefined;
      const payload = Buffer.from(buf.subarray(end - len, end));
      if (mask)
        for (let i = 0; i < payload.length; i++)
          payload[i] = (payload[i] as number) ^ (mask[i % 4] as number);
      buf = buf.subarray(end);
      if (opcode === 1) socket.write(wsFrame(1, Buffer.concat([Buffer.from("echo: "), payload])));
      else if (opcode === 8) {
        socket.end(wsFrame(8, payload.subarray(0, 2)));
        return;
      }
    }
  });
}

function startUpstream(): Promise<Server> {
  const server = createServer((req, res) => {
    const identity = req.headers["x-client-identity"];
    seen.push({
      kind: "http",
      path: req.url ?? "",
      identity: typeof identity === "string" ? identity : undefined,
    });
    if (req.url === "/favicon.ico") {
      res.writeHead(204).end();
      return;
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(identityPage(req));
  });
  server.on("upgrade", (req: IncomingMessage, socket: Socket) => {
    const identity = req.headers["x-client-identity"];
    seen.push({
      kind: "ws",
      path: req.url ?? "",
      identity: typeof identity === "string" ? identity : undefined,
    });
    acceptWebSocket(req, socket);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

// ---------------------------------------------------------------------------------------------
// The browser: a Playwright browser server in a child process (see the header) and Chromium.

/** Requests and upgrades the upstream got, favicon fetches (which the browser times itself) left out. */
const reached = () => seen.filter((s) => s.path !== "/favicon.ico").length;

const origin = () => `https://127.0.0.1:${gw.port}`;

/** A fresh context per case; `withCert`: alice's PKCS#12 for the gateway's origin. */
function newContext(withCert: boolean): Promise<BrowserContext> {
  return browser.newContext({
    viewport: VIEWPORT,
    ...(withCert
      ? {
          clientCertificates: [
            { origin: origin(), pfxPath: join(ca.dir, "certs", "alice.p12"), passphrase: p12Password },
          ],
        }
      : {}),
  });
}

/** A full-page screenshot into artifacts/gateway/NAME.png (and docs/images/ when asked). */
async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  const png = readFileSync(file);
  assert.equal(png.subarray(1, 4).toString("latin1"), "PNG", `${file} is a PNG`);
  if (process.env.MTLS_UPDATE_DOC_IMAGES === "1") {
    mkdirSync(DOC_IMAGES, { recursive: true });
    copyFileSync(file, join(DOC_IMAGES, `${name}.png`));
  }
}

const skipped = (t: TestContext): boolean => {
  if (NO_CHROMIUM) t.skip(NO_CHROMIUM);
  return NO_CHROMIUM !== undefined;
};

before(async () => {
  if (NO_CHROMIUM) return;
  await requireTool("certutil", ["-H"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-gateway-browser-"));
  ca = await TestCa.init(dir);
  await ca.issue("server", "gateway", ["--dns", "localhost", "--ip", "127.0.0.1"]);
  const issued = assertOk(
    await mtls(["issue", "client", "alice", "--uri", ALICE_URI, "--out", "certs", "--p12", "--json"], {
      cwd: dir,
      env: PASSPHRASE_ENV,
    }),
    "mtls issue client alice --p12",
  );
  // Generated, printed once (in the JSON as p12Password).
  p12Password = (JSON.parse(issued.stdout) as { p12Password: string }).p12Password;
  assert.ok(p12Password && existsSync(join(dir, "certs", "alice.p12")));

  upstream = await startUpstream();
  const up = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  const f = ca.files("gateway");
  const bg = await startBackground(
    process.execPath,
    [
      CLI,
      "gateway",
      "--listen",
      "127.0.0.1:0",
      "--cert",
      f.cert,
      "--key",
      f.key,
      "--ca",
      f.ca,
      "--crl",
      join(ca.state, "ca", "crl.pem"),
      "--enroll-url",
      ENROLL_URL,
      "--allow-uri",
      ALICE_URI,
      "--route",
      `/=${up};mode=require`,
    ],
    { cwd: dir, ready: /mtls: gateway listening on .*\n/, timeoutMs: 15_000 },
  );
  running.push({ stop: () => stopChild(bg.child, 0, "SIGKILL") });
  const m = /listening on 127\.0\.0\.1:(\d+):/.exec(bg.output());
  assert.ok(m, bg.output());
  gw = { bg, port: Number(m[1]) };

  const home = join(dir, "home");
  await trustRootInNss(home, ca.files("gateway").ca, "Acme E2E Root CA");
  const started = await startBrowser(home, ca.files("gateway").ca);
  running.push(started);
  browser = started.browser;
});

after(async () => {
  await browser?.close().catch(() => undefined);
  for (const r of running.reverse()) await r.stop();
  await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
  cleanup?.();
});

describe("mtls gateway in Chromium", () => {
  it("alice's PKCS#12 opens the app; the page shows the identity the gateway sent", async (t) => {
    if (skipped(t)) return;
    const context = await newContext(true);
    try {
      const page = await context.newPage();
      const res = await page.goto(`${origin()}/app`, { timeout: 20_000 });
      assert.equal(res?.status(), 200, await page.content());
      assert.equal(await page.locator("h1").textContent(), "Acme app behind mtls gateway");
      const field = (name: string) => page.locator(`dd[data-field="${name}"]`).textContent();
      assert.match((await field("Subject")) ?? "", /CN=alice/);
      assert.equal(await field("SANs"), `uri:${ALICE_URI}`);
      // Client-Cert carries alice's very certificate: the first PEM block of alice.crt.
      const leafPem = readFileSync(ca.files("alice").cert, "utf8").split(
        "-----END CERTIFICATE-----",
      )[0] as string;
      const leafDer = Buffer.from(leafPem.replace(/-----BEGIN CERTIFICATE-----|\s+/g, ""), "base64");
      assert.equal(await field("Fingerprint (X-Client-Identity)"), sha256(leafDer));
      assert.equal(
        await field("Client-Cert (RFC 9440)"),
        `${leafDer.length} bytes, SHA-256 ${sha256(leafDer)}`,
      );
      await screenshot(page, "gateway-allowed");
    } finally {
      await context.close();
    }
  });

  it("a WebSocket opened by the page goes through the gateway with alice's identity", async (t) => {
    if (skipped(t)) return;
    const context = await newContext(true);
    try {
      const page = await context.newPage();
      await page.goto(`${origin()}/app`, { timeout: 20_000 });
      const before = seen.filter((s) => s.kind === "ws").length;
      // From the app's own page (same origin), as the app's scripts would.
      const got = await page.evaluate(
        (url) =>
          new Promise<string[]>((resolve, reject) => {
            const messages: string[] = [];
            const ws = new WebSocket(url);
            const timer = setTimeout(
              () => reject(new Error(`no echo in time: ${messages.join(" | ")}`)),
              10_000,
            );
            ws.onopen = () => ws.send("hello through the gateway");
            ws.onmessage = (e) => {
              messages.push(String(e.data));
              if (messages.length === 2) ws.close(1000);
            };
            ws.onclose = (e) => {
              clearTimeout(timer);
              if (messages.length === 2) resolve(messages);
              else reject(new Error(`closed (${e.code}) after ${messages.length} messages`));
            };
          }),
        `wss://127.0.0.1:${gw.port}/ws/chat`,
      );
      const greeting = JSON.parse(got[0] as string) as { identity: string };
      assert.match(greeting.identity, /CN=alice/);
      assert.ok(greeting.identity.includes(ALICE_URI), greeting.identity);
      assert.equal(got[1], "echo: hello through the gateway");
      const upgrades = seen.filter((s) => s.kind === "ws").slice(before);
      assert.deepEqual(
        upgrades.map((s) => s.path),
        ["/ws/chat"],
      );
    } finally {
      await context.close();
    }
  });

  it("without a certificate: the page says what is missing and links to enrollment", async (t) => {
    if (skipped(t)) return;
    const context = await newContext(false);
    try {
      const page = await context.newPage();
      const before = reached();
      const res = await page.goto(`${origin()}/app`, { timeout: 20_000 });
      assert.equal(res?.status(), 401);
      // Chromium verified the gateway's chain itself (the CA is trusted in its NSS database).
      const tls = await res?.securityDetails();
      assert.equal(tls?.issuer, "Acme E2E Intermediate CA");
      assert.match(tls?.protocol ?? "", /^TLS 1\.[23]$/);
      assert.equal(await page.title(), "A client certificate is needed");
      assert.equal(await page.locator("h1").textContent(), "A client certificate is needed");
      const link = page.getByRole("link", { name: "Get a certificate" });
      assert.equal(await link.getAttribute("href"), ENROLL_URL);
      assert.match((await page.locator("body").textContent()) ?? "", /none was presented/);
      await screenshot(page, "gateway-no-certificate");

      // No WebSocket either: refused by the gateway (401 to the upgrade), never seen by the
      // upstream. Opened from a blank page: the refusal page's CSP (default-src 'none') would
      // stop the browser before it even connects.
      const blank = await context.newPage();
      const closed = await blank.evaluate(
        (url) =>
          new Promise<number>((resolve) => {
            const ws = new WebSocket(url);
            ws.onclose = (e) => resolve(e.code);
          }),
        `wss://127.0.0.1:${gw.port}/ws/chat`,
      );
      await waitFor(
        () => gw.bg.output().includes('"path":"/ws/chat","status":401'),
        5_000,
        "the gateway's audit line of the refused upgrade",
        gw.bg.output,
      );
      assert.equal(closed, 1006);
      assert.equal(reached(), before, "nothing reached the upstream");
    } finally {
      await context.close();
    }
  });

  it("after `mtls revoke alice`, her certificate gets the revoked page", async (t) => {
    if (skipped(t)) return;
    await ca.revoke("alice");
    const context = await newContext(true);
    try {
      const page = await context.newPage();
      // The gateway watches the CRL file `mtls revoke` rewrote; bounded wait for it to take effect.
      let status: number | undefined;
      await waitFor(
        async () => {
          status = (await page.goto(`${origin()}/app`, { timeout: 20_000 }))?.status();
          return status === 401;
        },
        10_000,
        "the gateway to refuse the revoked certificate",
        () => `last status ${status}\n${gw.bg.output()}`,
      );
      assert.equal(await page.locator("h1").textContent(), "Your certificate has been revoked");
      const body = (await page.locator("body").textContent()) ?? "";
      assert.match(body, /CN=alice/, "the page shows which certificate was presented");
      assert.equal(
        await page.getByRole("link", { name: "Get a certificate" }).getAttribute("href"),
        ENROLL_URL,
      );
      await screenshot(page, "gateway-revoked");
      const reachedBefore = reached();
      assert.equal((await page.reload({ timeout: 20_000 }))?.status(), 401);
      assert.equal(reached(), reachedBefore, "a refused request never reaches the upstream");
    } finally {
      await context.close();
    }
  });
});
