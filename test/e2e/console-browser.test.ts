/**
 * The admin console and the enrollment portal of `mtls ca serve` in a real browser (issue 8):
 * Chromium (Debian's /usr/bin/chromium) driven by playwright-core against the built CLI.
 *
 *   1. `mtls ca serve --init` creates the CA and the first admin's PKCS#12.
 *   2. A browser context with that PKCS#12 opens the console and issues a client certificate for
 *      "dana" as a one-time enrollment link.
 *   3. A second context, with no certificate at all, follows the link, creates the certificate and
 *      downloads the .p12 (once: a second download is gone, a second visit of the link says it was
 *      used).
 *   4. A third context presents that .p12: "check my certificate" names dana and says valid; the
 *      console, which dana may not use, recognises her and refuses her as a non-admin (403).
 *   5. The admin revokes dana through the form (reason, confirmation). The next visit of the third
 *      context is refused: /check says revoked, and the console no longer recognises the
 *      certificate at all (401: a revoked certificate counts as none). The TLS handshake itself
 *      still succeeds: the API listener asks for certificates optionally (like the gateway's
 *      `optional` mode), so that /check can explain what is wrong instead of a bare TLS error.
 *   6. A certificate whose CN is `<script>alert(1)</script>` renders as text in the table and on
 *      its page (no script element is created, no dialog opens).
 * Screenshots of every page go to artifacts/console/ (and to docs/images/console-*.png with
 * MTLS_UPDATE_DOC_IMAGES=1).
 *
 * Trust, with no ignoreHTTPSErrors anywhere: as in gateway-browser.test.ts, contexts with a client
 * certificate go through Playwright's own TLS proxy, which runs in a browser server whose Node
 * trust store is the CA's root alone (SSL_CERT_FILE + --use-openssl-ca); a context without one
 * talks to the service directly and Chromium verifies the chain against an NSS database in its
 * HOME where the root is trusted (certutil). 127.0.0.1 only. Debian packages: chromium,
 * libnss3-tools, openssl.
 */
import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { openSqliteStore } from "../../src/store/sqlite.js";
import { CHROMIUM, startBrowser, trustRootInNss } from "./browser.js";
import {
  assertOk,
  type Background,
  CLI,
  mtls,
  REPO_ROOT,
  requireTool,
  run,
  startBackground,
  tempDir,
} from "./helpers.js";
import { stopChild, waitFor } from "./peers.js";

const NO_CHROMIUM = existsSync(CHROMIUM)
  ? undefined
  : `${CHROMIUM} is absent: the browser end-to-end test of the console did not run (CI installs Debian's chromium)`;
if (NO_CHROMIUM) console.warn(`WARNING: ${NO_CHROMIUM}`);

const ARTIFACTS = join(REPO_ROOT, "artifacts", "console");
const DOC_IMAGES = join(REPO_ROOT, "docs", "images");
const VIEWPORT = { width: 1200, height: 800 };
const NAV_TIMEOUT = 20_000;
const PERSON = "dana";
const PERSON_EMAIL = "dana@acme.test";
const PERSON_SPIFFE = "spiffe://acme.test/user/dana";
const HOSTILE = "<script>alert(1)</script>";

let dir: string;
let cleanup: () => void;
let state: string;
let origin: string;
let server: Background;
let browser: Browser;
const running: { stop(): Promise<void> }[] = [];

/** What the flow hands from one step to the next (the steps run in order, one at a time). */
const flow: {
  link?: string;
  p12Path?: string;
  p12Password?: string;
  serial?: string;
  holder?: BrowserContext;
} = {};

// ---------------------------------------------------------------------------------------------
// Browser plumbing (test/e2e/browser.ts starts Chromium; see the header).

/** A context that presents `p12` (path, password) to the service, or nothing. */
function newContext(p12?: { path: string; password: string }): Promise<BrowserContext> {
  return browser.newContext({
    viewport: VIEWPORT,
    acceptDownloads: true,
    ...(p12 ? { clientCertificates: [{ origin, pfxPath: p12.path, passphrase: p12.password }] } : {}),
  });
}

const adminP12 = () => ({
  path: join(state, "admin", "admin.p12"),
  password: readFileSync(join(state, "admin", "admin.p12.password"), "utf8").trim(),
});

/** A full-page screenshot into artifacts/console/NAME.png (and docs/images/ when asked). */
async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  assert.equal(readFileSync(file).subarray(1, 4).toString("latin1"), "PNG", `${file} is a PNG`);
  if (process.env.MTLS_UPDATE_DOC_IMAGES === "1") {
    mkdirSync(DOC_IMAGES, { recursive: true });
    copyFileSync(file, join(DOC_IMAGES, `${name}.png`));
  }
}

/** Opens `path` and asserts the status; the page's text in the message when it differs. */
async function open(page: Page, path: string, status = 200): Promise<void> {
  const res = await page.goto(`${origin}${path}`, { timeout: NAV_TIMEOUT });
  assert.equal(
    res?.status(),
    status,
    `GET ${path}: ${(await page.locator("body").textContent())?.slice(0, 600)}`,
  );
}

const h1 = (page: Page) => page.locator("h1").first().textContent();

/** Admin console pages refuse without the admin certificate; run each step with a fresh admin context. */
async function asAdmin(fn: (page: Page) => Promise<void>): Promise<void> {
  const context = await newContext(adminP12());
  try {
    await fn(await context.newPage());
  } finally {
    await context.close();
  }
}

const skipped = (t: TestContext): boolean => {
  if (NO_CHROMIUM) t.skip(NO_CHROMIUM);
  return NO_CHROMIUM !== undefined;
};

before(async () => {
  if (NO_CHROMIUM) return;
  await requireTool("certutil", ["-H"]);
  await requireTool("openssl", ["version"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-console-browser-"));
  state = join(dir, ".mtls");
  server = await startBackground(
    process.execPath,
    [
      CLI,
      "ca",
      "serve",
      "--init",
      "--listen",
      "127.0.0.1:0",
      "--public-listen",
      "127.0.0.1:0",
      "--log-level",
      "warn",
    ],
    { cwd: dir, ready: /Stop with Ctrl-C/, timeoutMs: 60_000 },
  );
  running.push({ stop: () => stopChild(server.child, 5_000) });
  const m = /CA service: (https:\/\/127\.0\.0\.1:\d+) \(API, mTLS\)/.exec(server.output());
  assert.ok(m?.[1], server.output());
  origin = m[1];
  assert.match(
    server.output(),
    /for browsers: \.mtls\/admin\/admin\.p12 \(password in \.mtls\/admin\/admin\.p12\.password\)/,
  );

  // A few real certificates besides dana's, so that the overview and the table show a fleet:
  // issued by the CLI into the same state while the service runs.
  for (const args of [
    ["client", "alice", "--email", "alice@acme.test", "--ttl", "60d"],
    ["client", "bob", "--ttl", "5d"],
    ["client", "carol", "--uri", "spiffe://acme.test/user/carol", "--ttl", "20d"],
    ["server", "web.acme.test", "--dns", "web.acme.test", "--ttl", "45d"],
  ]) {
    assertOk(
      await mtls(["issue", ...args, "--out", join(dir, "issued")], { cwd: dir }),
      `mtls issue ${args[1]}`,
    );
  }

  const rootCert = join(state, "ca", "root.crt");
  const home = join(dir, "home");
  await trustRootInNss(home, rootCert, "mtls console e2e root");
  const started = await startBrowser(home, rootCert);
  running.push(started);
  browser = started.browser;
});

after(async () => {
  await flow.holder?.close().catch(() => undefined);
  await browser?.close().catch(() => undefined);
  for (const r of running.reverse()) await r.stop();
  cleanup?.();
});

describe("the console and the enrollment portal in Chromium", { concurrency: 1, timeout: 300_000 }, () => {
  it("the admin's PKCS#12 from `ca serve --init` opens the overview", async (t) => {
    if (skipped(t)) return;
    await asAdmin(async (page) => {
      await open(page, "/admin");
      assert.equal(await h1(page), "Overview");
      // The counts are links to the matching view; the four issued above plus the admin are valid.
      const valid = page.locator('a.stat[href="/admin/certificates?view=valid"] .stat-value');
      assert.ok(Number(await valid.textContent()) >= 5, "at least five valid certificates");
      assert.equal(
        await page.locator('a.stat[href="/admin/certificates?view=expiring7"] .stat-value').textContent(),
        "1",
      );
      await screenshot(page, "console-overview");
    });
  });

  it("without a certificate the console asks for the admin's; the CA's answer is a page, not a TLS error", async (t) => {
    if (skipped(t)) return;
    const context = await newContext();
    try {
      const page = await context.newPage();
      await open(page, "/admin", 401);
      assert.equal(await h1(page), "Sign in with your admin certificate");
    } finally {
      await context.close();
    }
  });

  it("the admin issues a client certificate as a one-time enrollment link", async (t) => {
    if (skipped(t)) return;
    await asAdmin(async (page) => {
      await open(page, "/admin/issue");
      await page.getByLabel("Name", { exact: true }).fill(PERSON);
      await page.getByLabel("E-mail (optional)").fill(PERSON_EMAIL);
      await page.getByLabel("SPIFFE ID (optional)").fill(PERSON_SPIFFE);
      await page.getByLabel("Lifetime (optional)").fill("14d");
      await page.locator('input[name="delivery"][value="link"]').check();
      await screenshot(page, "console-issue");
      await Promise.all([
        page.waitForURL(`${origin}/admin/issue`, { timeout: NAV_TIMEOUT }),
        page.getByRole("button", { name: "Issue certificate" }).click(),
      ]);
      const link = (await page.locator("#enroll-link").textContent())?.trim() ?? "";
      assert.match(
        link,
        new RegExp(`^${origin}/enroll/\\S{20,}$`),
        (await page.locator("body").textContent()) ?? "",
      );
      flow.link = link;
      await screenshot(page, "console-issue-link");
    });
  });

  it("the person follows the link with no certificate, creates the certificate and downloads it once", async (t) => {
    if (skipped(t)) return;
    assert.ok(flow.link, "the previous step made a link");
    const context = await newContext();
    try {
      const page = await context.newPage();
      const res = await page.goto(flow.link, { timeout: NAV_TIMEOUT });
      assert.equal(res?.status(), 200);
      assert.equal(await h1(page), "Get your certificate");
      assert.match((await page.locator("body").textContent()) ?? "", new RegExp(`certificate for ${PERSON}`));
      await screenshot(page, "console-enroll");

      await Promise.all([
        page.waitForLoadState("load", { timeout: NAV_TIMEOUT }),
        page.getByRole("button", { name: "Create my certificate" }).click(),
      ]);
      await page.locator("h1", { hasText: "Your certificate is ready" }).waitFor({ timeout: NAV_TIMEOUT });
      const password = (await page.locator("#p12-password").textContent())?.trim() ?? "";
      assert.ok(password.length >= 16, `a generated password is shown once: "${password}"`);
      await screenshot(page, "console-download");

      const downloadLink = page.getByRole("link", { name: `Download ${PERSON}.p12` });
      const href = (await downloadLink.getAttribute("href")) as string;
      const [download] = await Promise.all([
        page.waitForEvent("download", { timeout: NAV_TIMEOUT }),
        downloadLink.click(),
      ]);
      assert.equal(download.suggestedFilename(), `${PERSON}.p12`);
      const p12Path = join(dir, `${PERSON}.p12`);
      await download.saveAs(p12Path);
      // openssl reads it with the password from the page: dana's certificate, from this CA.
      const info = assertOk(
        await run("openssl", [
          "pkcs12",
          "-in",
          p12Path,
          "-nokeys",
          "-clcerts",
          "-passin",
          `pass:${password}`,
        ]),
        "openssl pkcs12",
      ).stdout;
      assert.match(info, new RegExp(`subject=.*CN\\s*=\\s*${PERSON}`));
      flow.p12Path = p12Path;
      flow.p12Password = password;

      // The download works once.
      const again = await context.newPage();
      await open(again, href, 404);
      assert.equal(await h1(again), "This download is gone");
    } finally {
      await context.close();
    }
  });

  it("a used link says it was used", async (t) => {
    if (skipped(t)) return;
    assert.ok(flow.link);
    const context = await newContext();
    try {
      const page = await context.newPage();
      const res = await page.goto(flow.link, { timeout: NAV_TIMEOUT });
      assert.equal(res?.status(), 410);
      assert.equal(await h1(page), "This link has already been used");
      await screenshot(page, "console-enroll-used");
    } finally {
      await context.close();
    }
  });

  it("with the downloaded .p12, /check names the certificate and says it is valid", async (t) => {
    if (skipped(t)) return;
    assert.ok(flow.p12Path && flow.p12Password, "the download step saved the .p12");
    flow.holder = await newContext({ path: flow.p12Path, password: flow.p12Password });
    const page = await flow.holder.newPage();
    await open(page, "/check");
    assert.equal(await page.locator("#verdict").getAttribute("data-verdict"), "valid");
    const card = (await page.locator("section.card").textContent()) ?? "";
    assert.match(card, new RegExp(`Name\\s*${PERSON}`));
    assert.ok(card.includes(`email:${PERSON_EMAIL}`) && card.includes(`uri:${PERSON_SPIFFE}`), card);
    const serial = (await page.locator("dd.mono").first().textContent())?.trim() ?? "";
    assert.match(serial, /^[0-9a-f]{16,}$/);
    flow.serial = serial;
    await screenshot(page, "console-check");
    // The console recognises dana and refuses her as someone who is not an administrator.
    await open(page, "/admin", 403);
    assert.equal(await h1(page), "This certificate is not an administrator's");
    await page.close();
  });

  it("the admin finds the certificate in the table and opens its page", async (t) => {
    if (skipped(t)) return;
    assert.ok(flow.serial);
    await asAdmin(async (page) => {
      await open(page, "/admin/certificates?sort=notAfter&dir=asc");
      assert.equal(await h1(page), "Certificates");
      await screenshot(page, "console-certificates");
      await open(page, `/admin/certificates?q=${PERSON}`);
      const rows = page.locator("table.data tbody tr");
      assert.equal(await rows.count(), 1);
      const row = (await rows.first().textContent()) ?? "";
      assert.ok(row.includes(flow.serial as string) && row.includes(`email:${PERSON_EMAIL}`), row);
      await Promise.all([
        page.waitForURL(`${origin}/admin/certificates/${flow.serial}`, { timeout: NAV_TIMEOUT }),
        rows.first().getByRole("link", { name: PERSON }).click(),
      ]);
      // A 14-day certificate is labelled by the time it has left.
      assert.match((await h1(page)) ?? "", new RegExp(`^${PERSON}\\s+expires in 14d`));
      const body = (await page.locator("main").textContent()) ?? "";
      assert.match(body, /SHA-256/);
      assert.match(body, /BEGIN CERTIFICATE/);
      await screenshot(page, "console-detail");
    });
  });

  it("the admin revokes it through the form; the holder's next visit is refused", async (t) => {
    if (skipped(t)) return;
    assert.ok(flow.serial && flow.holder);
    await asAdmin(async (page) => {
      await open(page, `/admin/certificates/${flow.serial}/revoke`);
      await page.getByLabel("Reason").selectOption("keyCompromise");
      await page.locator('input[name="confirm"]').check();
      await screenshot(page, "console-revoke");
      await Promise.all([
        page.waitForURL(`${origin}/admin/certificates/${flow.serial}`, { timeout: NAV_TIMEOUT }),
        page.getByRole("button", { name: "Revoke certificate" }).click(),
      ]);
      assert.match((await h1(page)) ?? "", new RegExp(`^${PERSON}\\s+revoked`));
      assert.match((await page.locator("body").textContent()) ?? "", /reason: keyCompromise/);
    });

    // The same browser context as before (its TLS session and keep-alive connection may be reused:
    // the service judges the certificate per request).
    const page = await flow.holder.newPage();
    let verdict: string | null = null;
    await waitFor(
      async () => {
        await open(page, "/check");
        verdict = await page.locator("#verdict").getAttribute("data-verdict");
        return verdict === "revoked";
      },
      10_000,
      "/check to call the certificate revoked",
      () => `last verdict ${verdict}`,
    );
    assert.match((await page.locator("#verdict").textContent()) ?? "", /This certificate has been revoked/);
    await screenshot(page, "console-check-revoked");
    await open(page, "/admin", 401);
    // Node may print the serial without its leading zeros.
    const printed = (flow.serial as string).replace(/^0+/, "");
    assert.match((await page.locator("body").textContent()) ?? "", new RegExp(`${printed} is revoked`));
  });

  it("the audit log shows the issuance and the revocation by the admin, the chain verified", async (t) => {
    if (skipped(t)) return;
    await asAdmin(async (page) => {
      await open(page, "/admin/audit");
      assert.equal(await h1(page), "Audit log");
      assert.match((await page.locator("#audit-verdict").textContent()) ?? "", /Hash chain verified/);
      await screenshot(page, "console-audit");
      await open(page, "/admin/audit?action=cert.revoke");
      const rows = page.locator("table.data tbody tr");
      assert.equal(await rows.count(), 1);
      const row = (await rows.first().textContent()) ?? "";
      assert.ok(row.includes(flow.serial as string) && /api:[0-9a-f]+/.test(row), row);
    });
  });

  it("the tokens page lists the used link", async (t) => {
    if (skipped(t)) return;
    await asAdmin(async (page) => {
      await open(page, "/admin/tokens");
      assert.match((await page.locator("body").textContent()) ?? "", new RegExp(PERSON));
      await screenshot(page, "console-tokens");
    });
  });

  it("a CN of <script>alert(1)</script> renders as text in the table and on its page", async (t) => {
    if (skipped(t)) return;
    // The CA refuses such a name at issuance, so the record goes into the inventory directly, as a
    // row imported from elsewhere would; the PEM is a real certificate (the admin's) so that its
    // page renders.
    const store = await openSqliteStore(join(state, "mtls.db"));
    const serial = "7e57".padEnd(32, "0");
    try {
      await store.insertCertificate({
        serial,
        name: HOSTILE,
        profile: "client",
        subject: `CN=${HOSTILE}`,
        sans: ['dns:"><img src=x onerror=alert(2)>'],
        keyType: "ec-p256",
        notBefore: new Date(Date.now() - 86_400_000),
        notAfter: new Date(Date.now() + 30 * 86_400_000),
        status: "valid",
        revokedAt: null,
        revocationReason: null,
        fingerprint: "7e57".repeat(16),
        issuerSerial: null,
        pem: readFileSync(join(state, "admin", "admin.crt"), "utf8"),
        certPath: null,
        keyPath: null,
        p12Path: null,
        createdAt: new Date(),
      });
    } finally {
      await store.close();
    }
    await asAdmin(async (page) => {
      const dialogs: string[] = [];
      page.on("dialog", (d) => {
        dialogs.push(d.message());
        void d.dismiss();
      });
      await open(page, `/admin/certificates?q=${encodeURIComponent("script")}`);
      const rows = page.locator("table.data tbody tr");
      assert.equal(await rows.count(), 1);
      assert.equal(await rows.first().locator("td").first().textContent(), HOSTILE);
      assert.ok(((await rows.first().textContent()) ?? "").includes('dns:"><img src=x onerror=alert(2)>'));
      assert.equal(await page.locator("main script, table script, table img").count(), 0);
      await screenshot(page, "console-escaping");
      await open(page, `/admin/certificates/${serial}`);
      assert.ok(((await h1(page)) ?? "").startsWith(HOSTILE));
      assert.equal(await page.locator("h1 script").count(), 0);
      assert.deepEqual(dialogs, []);
    });
  });
});
