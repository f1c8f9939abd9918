/**
 * End-to-end tests of the agent side of the CA service (issue 4) with the built CLI against the real
 * `mtls ca serve`: `mtls enroll` with a token from `mtls token create`, `mtls renew --if-due`
 * (not due: exit 0 without contacting the CA; due: renewed; expired: one line saying to enroll
 * again), and the point of it all: a `mtls tunnel server` whose short-lived certificate (20 s) is
 * renewed (with a new key each time) by `mtls agent` keeps one connection open across several
 * renewals while new connections see each new certificate. 127.0.0.1 only; every wait is bounded
 * and every process is stopped in a finally.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import {
  assertCliError,
  assertOk,
  type Background,
  CLI,
  freePort,
  listJson,
  modeOf,
  mtls,
  partialFiles,
  pemBlocks,
  startBackground,
  tempDir,
  withTimeout,
} from "./helpers.js";

let dir: string;
let cleanup: () => void;
let caUrl: string;
let echo: Server;
let echoPort: number;
const running: Background[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const inDir = (args: string[]) => mtls(args, { cwd: dir });
const ROOT = () => join(dir, ".mtls", "ca", "root.crt");

/** `mtls token create NAME ...` → the token. */
async function token(name: string, args: string[]): Promise<string> {
  const res = assertOk(await inDir(["token", "create", name, ...args, "--json"]), "mtls token create");
  return (JSON.parse(res.stdout) as { token: string }).token;
}

async function enroll(name: string, tokenText: string, out = "certs"): Promise<void> {
  assertOk(
    await inDir(["enroll", name, "--ca-url", caUrl, "--ca-cert", ROOT(), "--token", tokenText, "--out", out]),
    `mtls enroll ${name}`,
  );
}

const serialOf = (pemFile: string): string =>
  new X509Certificate(readFileSync(pemFile, "utf8")).serialNumber.toLowerCase();

before(async () => {
  ({ dir, cleanup } = tempDir("mtls-e2e-agent-"));
  // A generated passphrase in .mtls/passphrase: init, token create, issue and serve all find it there.
  assertOk(await inDir(["init", "--name", "Acme"]), "mtls init");
  const serve = await startBackground(
    process.execPath,
    [
      CLI,
      "ca",
      "serve",
      "--state",
      ".mtls",
      "--listen",
      "127.0.0.1:0",
      "--public-listen",
      "off",
      "--log-level",
      "warn",
    ],
    { cwd: dir, ready: /CA service: https:\/\/127\.0\.0\.1:\d+/, timeoutMs: 30_000 },
  );
  running.push(serve);
  caUrl = (/CA service: (https:\/\/127\.0\.0\.1:\d+)/.exec(serve.output()) as RegExpExecArray)[1] as string;

  echo = createServer((s) => {
    s.on("error", () => {});
    s.pipe(s);
  });
  echo.listen(0, "127.0.0.1");
  await once(echo, "listening");
  echoPort = (echo.address() as AddressInfo).port;
});

after(async () => {
  for (const bg of running.reverse()) await bg.stop();
  echo?.close();
  cleanup?.();
});

describe("mtls enroll / renew / agent against mtls ca serve (built CLI)", {
  concurrency: 1,
  timeout: 240_000,
}, () => {
  it("enroll: a token from mtls token create gives NAME.crt (leaf + intermediate), NAME.key 0600, ca.crt", async () => {
    const t = await token("web", ["--profile", "server", "--ip", "127.0.0.1", "--dns", "web.acme.test"]);
    await enroll("web", t);
    const crt = readFileSync(join(dir, "certs/web.crt"), "utf8");
    assert.equal(pemBlocks(crt, "CERTIFICATE").length, 2);
    assert.equal(modeOf(join(dir, "certs/web.key")), 0o600);
    assert.match(readFileSync(join(dir, "certs/web.key"), "utf8"), /^-----BEGIN PRIVATE KEY-----/);
    assert.equal(readFileSync(join(dir, "certs/ca.crt"), "utf8"), readFileSync(ROOT(), "utf8"));
    assert.deepEqual(partialFiles(join(dir, "certs")), []);
    const rows = (await listJson(dir, ["--state", ".mtls"])).filter((r) => r.name === "web");
    assert.deepEqual(
      rows.map((r) => r.serial),
      [serialOf(join(dir, "certs/web.crt"))],
    );

    // The token worked once: a second use fails with one line and writes nothing.
    const again = await inDir([
      "enroll",
      "web",
      "--ca-url",
      caUrl,
      "--ca-cert",
      ROOT(),
      "--token",
      t,
      "--out",
      "other",
    ]);
    assertCliError(again, 1, /E_TOKEN_USED/);
    assert.deepEqual(partialFiles(join(dir, "other")), []);
    // Existing files are refused before the token is spent.
    const t2 = await token("web", ["--profile", "server", "--ip", "127.0.0.1"]);
    assertCliError(
      await inDir(["enroll", "web", "--ca-url", caUrl, "--ca-cert", ROOT(), "--token", t2, "--out", "certs"]),
      1,
      /already exists \(use --force/,
    );
  });

  it("renew --if-due: not due → exit 0 without contacting the CA; due → renewed; expired → enroll again", async () => {
    await enroll("gone", await token("gone", ["--profile", "client", "--ttl", "3s"]));
    await enroll("soon", await token("soon", ["--profile", "client", "--ttl", "15s"]));
    const files = (name: string) => [
      "--cert",
      `certs/${name}.crt`,
      "--key",
      `certs/${name}.key`,
      "--ca-cert",
      ROOT(),
    ];
    const soonCrt = join(dir, "certs/soon.crt");
    const first = serialOf(soonCrt);
    // Due at two thirds of the 15 s counted from issuance (the file's time: notBefore is back-dated).
    const issued = statSync(soonCrt).mtimeMs;
    const dueAt =
      issued + ((Date.parse(new X509Certificate(readFileSync(soonCrt)).validTo) - issued) * 2) / 3;

    // Not due: exit 0 and a note on stderr, even with a CA URL where nothing listens.
    const closed = `https://127.0.0.1:${await freePort()}`;
    const notDue = assertOk(await inDir(["renew", "soon", "--if-due", "--ca-url", closed, ...files("soon")]));
    assert.ok(Date.now() < dueAt, "the check ran before the certificate was due (machine too slow?)");
    assert.match(notDue.stderr, /"soon" is not due for renewal until .*; nothing done/);
    assert.equal(notDue.stdout, "");
    assert.equal(serialOf(soonCrt), first);

    // Due once two thirds have passed: renewed, same key, new serial.
    await sleep(Math.max(dueAt - Date.now(), 0) + 500);
    const keyBefore = readFileSync(join(dir, "certs/soon.key"), "utf8");
    const due = assertOk(await inDir(["renew", "soon", "--if-due", "--ca-url", caUrl, ...files("soon")]));
    assert.match(due.stdout, /^renewed "soon": serial [0-9a-f]+ → [0-9a-f]+, valid until /);
    assert.notEqual(serialOf(join(dir, "certs/soon.crt")), first);
    assert.equal(readFileSync(join(dir, "certs/soon.key"), "utf8"), keyBefore);
    assert.deepEqual(partialFiles(join(dir, "certs")), []);

    // Expired: it can no longer prove who it is; one line, exit 1, nothing sent.
    const expired = await inDir(["renew", "gone", "--if-due", "--ca-url", closed, ...files("gone")]);
    assertCliError(expired, 1, /expired at .* can no longer renew itself: enroll again/);
    assertCliError(
      await inDir(["renew", "gone", "--ca-url", caUrl, ...files("gone")]),
      1,
      /can no longer renew itself/,
    );
  });

  it("a tunnel server on an agent-renewed 20 s certificate: one connection open across renewals, new ones see each new certificate", async () => {
    await enroll("edge", await token("edge", ["--profile", "server", "--ip", "127.0.0.1", "--ttl", "20s"]));
    assertOk(
      await inDir(["issue", "client", "alice", "--out", "certs", "--state", ".mtls"]),
      "mtls issue alice",
    );
    const statusPort = await freePort();
    writeFileSync(
      join(dir, "agent.yaml"),
      `agent:
  status: 127.0.0.1:${statusPort}
  ca_url: ${caUrl}
  ca_cert: ${ROOT()}
  certificates:
    - name: edge
      cert: certs/edge.crt
      key: certs/edge.key
      rekey: true
`,
    );
    const tunnel = await startBackground(
      process.execPath,
      [
        CLI,
        "tunnel",
        "server",
        "--listen",
        "127.0.0.1:0",
        "--target",
        `127.0.0.1:${echoPort}`,
        "--cert",
        "certs/edge.crt",
        "--key",
        "certs/edge.key",
        "--ca",
        "certs/ca.crt",
        "--allow-cn",
        "alice",
        "--log-level",
        "warn",
      ],
      { cwd: dir, ready: /mtls: tunnel server listening on 127\.0\.0\.1:\d+/, timeoutMs: 15_000 },
    );
    running.push(tunnel);
    const tunnelPort = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(tunnel.output())?.[1]);
    const agent = await startBackground(process.execPath, [CLI, "agent", "-c", "agent.yaml"], {
      cwd: dir,
      ready: /mtls: agent keeping 1 certificate fresh \(edge\); status on 127\.0\.0\.1:\d+/,
      timeoutMs: 15_000,
    });
    running.push(agent);

    const alice = {
      cert: readFileSync(join(dir, "certs/alice.crt")),
      key: readFileSync(join(dir, "certs/alice.key")),
      ca: readFileSync(join(dir, "certs/ca.crt")),
    };
    /** A fresh TLS connection (no session reuse) through the tunnel: its server serial, and an echo. */
    const connectOnce = async (): Promise<{ socket: TLSSocket; serial: string }> => {
      const socket = tlsConnect({ host: "127.0.0.1", port: tunnelPort, ...alice });
      socket.setNoDelay(true);
      await withTimeout(once(socket, "secureConnect"), 10_000, "TLS handshake with the tunnel");
      const serial = socket.getPeerCertificate().serialNumber?.toLowerCase() ?? "";
      return { socket, serial };
    };
    const echoes = async (socket: TLSSocket, text: string): Promise<void> => {
      let got = "";
      const onData = (d: Buffer) => {
        got += d.toString();
      };
      socket.on("data", onData);
      socket.write(text);
      for (let i = 0; i < 100 && got.length < text.length; i++) await sleep(20);
      socket.off("data", onData);
      assert.equal(got, text);
    };

    const open = await connectOnce();
    let openClosed = false;
    open.socket.on("close", () => {
      openClosed = true;
    });
    open.socket.on("error", () => {});
    const serials = new Set<string>([open.serial]);
    const deadline = Date.now() + 120_000;
    let round = 0;
    // Three renewals at ~13 s each; bounded by the deadline.
    while (serials.size < 4 && Date.now() < deadline) {
      round++;
      await echoes(open.socket, `open connection, round ${round}\n`);
      const fresh = await connectOnce();
      fresh.socket.on("error", () => {});
      await echoes(fresh.socket, `fresh connection ${round}\n`);
      fresh.socket.destroy();
      // The serial the new connection saw is the one on disk (or the one just before, mid-swap).
      serials.add(fresh.serial);
      await sleep(1_000);
    }
    assert.ok(serials.size >= 4, `new connections saw ${serials.size} certificates:\n${agent.output()}`);
    assert.equal(openClosed, false, "the open connection survived every renewal");
    await echoes(open.socket, "still here\n");
    assert.equal(serialOf(join(dir, "certs/edge.crt")) !== open.serial, true);
    open.socket.destroy();

    // The agent's view: /metrics and /readyz on its status address, JSON logs of each renewal.
    const metrics = await (await fetch(`http://127.0.0.1:${statusPort}/metrics`)).text();
    assert.match(metrics, /mtls_agent_cert_seconds_to_expiry\{name="edge"\} \d+/);
    assert.match(metrics, /mtls_agent_last_renewal_timestamp_seconds\{name="edge"\} \d+/);
    assert.doesNotMatch(metrics, /mtls_agent_renewal_failures_total\{name="edge"\} [1-9]/);
    assert.equal((await fetch(`http://127.0.0.1:${statusPort}/healthz`)).status, 200);
    const renewedLines = agent
      .output()
      .split("\n")
      .filter((l) => l.startsWith("{") && (JSON.parse(l) as { msg?: string }).msg === "certificate renewed");
    assert.ok(renewedLines.length >= 3, agent.output());
    assert.ok(renewedLines.every((l) => (JSON.parse(l) as { rekeyed?: boolean }).rekeyed === true));

    // SIGHUP re-reads the config; SIGTERM stops cleanly.
    agent.child.kill("SIGHUP");
    for (let i = 0; i < 50 && !/config reloaded/.test(agent.output()); i++) await sleep(100);
    assert.match(agent.output(), /config reloaded/);
    agent.child.kill("SIGTERM");
    const code = await withTimeout(agent.exited, 15_000, "the agent's exit after SIGTERM");
    assert.equal(code, 0, agent.output());
    assert.match(agent.output(), /agent stopped/);
    assert.deepEqual(partialFiles(join(dir, "certs")), []);
  });
});
