/**
 * Chromium for the browser end-to-end tests (gateway-browser, console-browser): a Playwright
 * browser server in a child process, started with `node --use-openssl-ca` and SSL_CERT_FILE so that
 * its trust store (read once at start) is the test's CA, and an NSS database in HOME/.pki/nssdb
 * where that CA is a trusted root (Chromium reads server trust from there).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { type Browser, chromium } from "playwright-core";
import { assertOk, REPO_ROOT, run, startBackground } from "./helpers.js";
import { stopChild } from "./peers.js";

export const CHROMIUM = "/usr/bin/chromium";

/** Prints the WebSocket endpoint the test connects to. */
const BROWSER_SERVER = `
const { chromium } = require("playwright-core");
chromium.launchServer(JSON.parse(process.env.MTLS_E2E_LAUNCH)).then(
  (s) => console.log("browser server on " + s.wsEndpoint()),
  (e) => { console.error(e.message); process.exit(1); },
);`;

/** Headless Chromium with HOME at `home`, trusting `rootCert`; `stop` ends it (SIGTERM: Playwright closes Chromium first). */
export async function startBrowser(
  home: string,
  rootCert: string,
): Promise<{ browser: Browser; stop(): Promise<void> }> {
  const launch = {
    executablePath: CHROMIUM,
    headless: true,
    host: "127.0.0.1",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    // Chromium reads its NSS database (the trusted CA) from $HOME/.pki/nssdb.
    env: { ...process.env, HOME: home },
  };
  const bg = await startBackground(
    "env",
    [
      `SSL_CERT_FILE=${rootCert}`,
      `MTLS_E2E_LAUNCH=${JSON.stringify(launch)}`,
      process.execPath,
      "--use-openssl-ca",
      "-e",
      BROWSER_SERVER,
    ],
    { cwd: REPO_ROOT, ready: /browser server on ws:\/\/\S+\n/, timeoutMs: 30_000 },
  );
  const stop = () => stopChild(bg.child, 5_000);
  const ws = /browser server on (ws:\/\/\S+)\n/.exec(bg.output())?.[1] as string;
  try {
    return { browser: await chromium.connect(ws, { timeout: 30_000 }), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** An NSS database in HOME/.pki/nssdb where `rootCert` is a trusted root for servers. */
export async function trustRootInNss(home: string, rootCert: string, nickname: string): Promise<void> {
  const db = join(home, ".pki", "nssdb");
  mkdirSync(db, { recursive: true });
  assertOk(await run("certutil", ["-N", "-d", `sql:${db}`, "--empty-password"]), "certutil -N");
  assertOk(
    await run("certutil", ["-A", "-d", `sql:${db}`, "-n", nickname, "-t", "C,,", "-i", rootCert]),
    "certutil -A",
  );
}
