/**
 * End-to-end tests of keys in a PKCS#11 token (issue 6) with the built CLI and Debian's SoftHSM2: a
 * fresh token per run (its own SOFTHSM2_CONF in a temp dir), `mtls init --ca-key pkcs11:...` making
 * the intermediate's key inside the token, certificates and CRLs it signs there that `openssl
 * verify` accepts, `pkcs11-tool -O` showing the key sensitive and never extractable with no key file
 * in the state directory, OCSP through `mtls ca serve`, the errors a person can trigger, `mtls hsm
 * list` and `keygen`, a tunnel server whose TLS key lives in the token completing mTLS with `openssl
 * s_client` (and reloading a renewed certificate), a tunnel client with its key in the token, and the
 * gateway with its key in the token. 127.0.0.1 only; every wait is bounded and every process is
 * stopped in a finally.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { connect, createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { openPkcs11Signer } from "../../src/keys/index.js";
import { buildCsrPem } from "../../src/pki/csr-builder.js";
import { createSoftHsm, hasSoftHsm, pkcs11Tool, type SoftHsm } from "../fixtures/softhsm.js";
import {
  assertCliError,
  assertOk,
  type Background,
  CLI,
  listFiles,
  mtls,
  requireTool,
  run,
  startBackground,
  tempDir,
} from "./helpers.js";
import { sleep } from "./peers.js";

const PIN = "e2e-user-pin";
const PASSPHRASE = { MTLS_PASSPHRASE: "e2e-hsm-passphrase" };
const CA_KEY = "pkcs11:token=mtls;object=intermediate";

describe("mtls with keys in a PKCS#11 token (SoftHSM2)", () => {
  let dir: string;
  let cleanup: () => void;
  let hsm: SoftHsm;
  let pinFile: string;
  let env: NodeJS.ProcessEnv;
  let state: string;

  before(async () => {
    assert.ok(hasSoftHsm(), "softhsm2 is required (.ci/run installs it)");
    await requireTool("pkcs11-tool", ["--help"]);
    await requireTool("openssl", ["version"]);
    ({ dir, cleanup } = tempDir("mtls-e2e-hsm-"));
    hsm = createSoftHsm();
    hsm.initToken("mtls", PIN);
    // This process builds a CSR through pkcs11js below: it must see the same tokens.
    process.env.SOFTHSM2_CONF = hsm.conf;
    pinFile = join(dir, "pin.txt");
    writeFileSync(pinFile, `${PIN}\n`, { mode: 0o600 });
    env = { ...hsm.env, ...PASSPHRASE };
    state = join(dir, "state");
  });
  after(() => {
    cleanup?.();
    hsm?.cleanup();
  });

  const stateArgs = (args: string[]) => [...args, "--state", state];
  const run_ = (args: string[], extra: NodeJS.ProcessEnv = {}) =>
    mtls(stateArgs(args), { cwd: dir, env: { ...env, ...extra } });

  it("refuses a wrong PIN, a missing module and a PIN on the command line, with one line each", async () => {
    const bad = join(dir, "bad-pin.txt");
    writeFileSync(bad, "not-the-pin\n");
    const base = ["init", "--ca-key", CA_KEY, "--pkcs11-module", hsm.module];
    assertCliError(
      await run_([...base, "--pin-file", bad]),
      1,
      /wrong PIN on token "mtls" \(CKR_PIN_INCORRECT\)/,
    );
    assertCliError(
      await run_([
        "init",
        "--ca-key",
        CA_KEY,
        "--pkcs11-module",
        "/nonexistent/libpkcs11.so",
        "--pin-file",
        pinFile,
      ]),
      1,
      /PKCS#11 module \/nonexistent\/libpkcs11\.so does not exist/,
    );
    const inUri = await run_([
      "init",
      "--ca-key",
      `${CA_KEY}?pin-value=${PIN}`,
      "--pkcs11-module",
      hsm.module,
    ]);
    assertCliError(inUri, 2, /would show in process lists and logs/);
    assert.ok(!inUri.stderr.includes(PIN));
    assertCliError(await run_(base), 1, /needs its PIN/);
    assertCliError(
      await run_([
        "init",
        "--ca-key",
        "pkcs11:token=nope;object=x",
        "--pkcs11-module",
        hsm.module,
        "--pin-file",
        pinFile,
      ]),
      1,
      /no initialized token matches token="nope"/,
    );
    assert.equal(existsSync(join(state, "ca", "intermediate.crt")), false, "no CA after a failed init");
  });

  it("refuses a token key of the wrong type", async () => {
    pkcs11Tool(hsm, [
      "--token-label",
      "mtls",
      "--login",
      "--pin",
      PIN,
      "--keypairgen",
      "--key-type",
      "EC:secp256k1",
      "--label",
      "k1",
    ]);
    assertCliError(
      await run_([
        "init",
        "--ca-key",
        "pkcs11:token=mtls;object=k1",
        "--pkcs11-module",
        hsm.module,
        "--pin-file",
        pinFile,
      ]),
      1,
      /unsupported curve: use P-256 or P-384/,
    );
  });

  it("init makes the intermediate's key in the token: sensitive, never extractable, no key file", async () => {
    const res = assertOk(
      await run_([
        "init",
        "--name",
        "HSM Corp",
        "--key-type",
        "ec-p384",
        "--ca-key",
        CA_KEY,
        "--pkcs11-module",
        hsm.module,
        "--pin-file",
        pinFile,
      ]),
      "mtls init --ca-key",
    );
    assert.match(
      res.stdout,
      /CA key: {7}pkcs11:token=mtls;object=intermediate;id=(%[0-9a-f]{2}){8};type=private \(generated in the token\)/,
    );
    assert.ok(!res.stdout.includes(PIN) && !res.stderr.includes(PIN));

    const keyFiles = listFiles(state).filter((f) => f.endsWith(".key"));
    assert.deepEqual(
      keyFiles.sort(),
      ["admin/admin.key", "ca/root.key"],
      "only the root's and the admin's key files",
    );
    for (const f of listFiles(state)) {
      assert.ok(!readFileSync(join(state, f)).includes(PIN), `${f} holds the PIN`);
    }

    const objects = pkcs11Tool(hsm, [
      "--token-label",
      "mtls",
      "--login",
      "--pin",
      PIN,
      "-O",
      "--label",
      "intermediate",
    ]);
    const priv = objects.slice(objects.indexOf("Private Key Object"));
    assert.match(priv, /^Private Key Object; EC/);
    assert.match(priv, /Access:\s+sensitive, always sensitive, never extractable/);
    // The token's public key is the intermediate certificate's.
    const certText = (
      await run("openssl", ["x509", "-in", join(state, "ca", "intermediate.crt"), "-noout", "-text"])
    ).stdout;
    assert.match(certText, /NIST CURVE: P-384/);
  });

  it("issues certificates and CRLs signed in the token that openssl verifies", async () => {
    const env2 = { MTLS_PKCS11_PIN_FILE: pinFile };
    assertOk(
      await run_(["issue", "server", "web", "--dns", "localhost", "--out", "certs"], env2),
      "mtls issue",
    );
    const chain = [
      "-CAfile",
      join(state, "ca", "root.crt"),
      "-untrusted",
      join(state, "ca", "intermediate.crt"),
    ];
    const ok = await run("openssl", ["verify", ...chain, join(dir, "certs", "web.crt")]);
    assert.equal(ok.stdout.trim(), `${join(dir, "certs", "web.crt")}: OK`, ok.stderr);
    const leaf = (await run("openssl", ["x509", "-in", join(dir, "certs", "web.crt"), "-noout", "-text"]))
      .stdout;
    assert.match(leaf, /Signature Algorithm: ecdsa-with-SHA384/);

    assertOk(await run_(["revoke", "web"], { MTLS_PKCS11_PIN: PIN }), "mtls revoke");
    const crl = await run("openssl", [
      "crl",
      "-in",
      join(state, "ca", "crl.pem"),
      "-CAfile",
      join(state, "ca", "intermediate.crt"),
      "-noout",
    ]);
    assert.match(crl.stderr + crl.stdout, /verify OK/);
    const revoked = await run("openssl", [
      "verify",
      "-crl_check",
      "-CRLfile",
      join(state, "ca", "crl.pem"),
      ...chain,
      join(dir, "certs", "web.crt"),
    ]);
    assert.match(revoked.stdout + revoked.stderr, /certificate revoked/);

    // --pin-file instead of the environment, on each command that signs.
    assertOk(
      await run_(["issue", "client", "pinfile", "--out", "certs", "--pin-file", pinFile]),
      "mtls issue --pin-file",
    );
    assertOk(await run_(["revoke", "pinfile", "--pin-file", pinFile]), "mtls revoke --pin-file");
    assertOk(await run_(["crl", "--pin-file", pinFile]), "mtls crl --pin-file");
    assertCliError(await run_(["issue", "client", "nopin", "--out", "certs"]), 1, /needs its PIN/);
    assertCliError(
      await run_(["issue", "client", "badpin", "--out", "certs"], { MTLS_PKCS11_PIN: "nope" }),
      1,
      /wrong PIN on token "mtls"/,
    );
  });

  it("an RSA intermediate in the token signs with sha256WithRSAEncryption", async () => {
    const rsaState = join(dir, "state-rsa");
    const args = ["--state", rsaState];
    const init = await mtls(
      [
        "init",
        ...args,
        "--no-admin",
        "--key-type",
        "rsa-2048",
        "--ca-key",
        "pkcs11:token=mtls;object=rsa-ca",
        "--pkcs11-module",
        hsm.module,
        "--pin-file",
        pinFile,
      ],
      { cwd: dir, env },
    );
    assertOk(init, "mtls init (RSA)");
    assertOk(
      await mtls(["issue", "client", "rsa-leaf", "--out", "rsa-certs", ...args], {
        cwd: dir,
        env: { ...env, MTLS_PKCS11_PIN: PIN },
      }),
      "mtls issue (RSA CA)",
    );
    const leaf = join(dir, "rsa-certs", "rsa-leaf.crt");
    const ok = await run("openssl", [
      "verify",
      "-CAfile",
      join(rsaState, "ca", "root.crt"),
      "-untrusted",
      join(rsaState, "ca", "intermediate.crt"),
      leaf,
    ]);
    assert.equal(ok.stdout.trim(), `${leaf}: OK`, ok.stderr);
    assert.match(
      (await run("openssl", ["x509", "-in", leaf, "-noout", "-text"])).stdout,
      /Signature Algorithm: sha256WithRSAEncryption/,
    );
    assert.equal(existsSync(join(rsaState, "ca", "intermediate.key")), false);
  });

  it("mtls ca serve answers OCSP through a responder certificate the token key signed", async () => {
    let bg: Background | undefined;
    try {
      bg = await startBackground(
        "env",
        [
          `SOFTHSM2_CONF=${hsm.conf}`,
          `MTLS_PKCS11_PIN_FILE=${pinFile}`,
          `MTLS_PASSPHRASE=${PASSPHRASE.MTLS_PASSPHRASE}`,
          process.execPath,
          CLI,
          "ca",
          "serve",
          "--state",
          state,
          "--listen",
          "127.0.0.1:0",
          "--public-listen",
          "127.0.0.1:0",
          "--log-level",
          "warn",
        ],
        { cwd: dir, ready: /\(CRL, OCSP\)\n/, timeoutMs: 20_000 },
      );
      const url = /(http:\/\/127\.0\.0\.1:\d+) \(CRL, OCSP\)/.exec(bg.output())?.[1];
      assert.ok(url, bg.output());
      const ocsp = await run(
        "openssl",
        [
          "ocsp",
          "-issuer",
          join(state, "ca", "intermediate.crt"),
          "-cert",
          join(dir, "certs", "web.crt"),
          "-url",
          `${url}/ocsp`,
          "-CAfile",
          join(state, "ca", "root.crt"),
        ],
        { timeoutMs: 15_000 },
      );
      assert.match(ocsp.stderr + ocsp.stdout, /Response verify OK/);
      assert.match(ocsp.stdout, /web\.crt: revoked/);
    } finally {
      await bg?.stop();
    }
  });

  it("mtls hsm list shows the slot, the token and its keys", async () => {
    const res = assertOk(
      await mtls(["hsm", "list", "--pkcs11-module", hsm.module, "--pin-file", pinFile], { cwd: dir, env }),
      "mtls hsm list",
    );
    assert.match(res.stdout, /token "mtls" {2}SoftHSM project SoftHSM v2/);
    assert.match(res.stdout, /private\s+ec-p384\s+intermediate\s+[0-9a-f]{16}\s+sensitive, not extractable/);
    const json = JSON.parse(
      assertOk(
        await mtls(["hsm", "list", "--pkcs11-module", hsm.module, "--json"], {
          cwd: dir,
          env: { ...env, MTLS_PKCS11_PIN: PIN },
        }),
      ).stdout,
    );
    const token = json.slots.find((s: { token?: { label: string } }) => s.token?.label === "mtls");
    assert.ok(
      token.objects.some(
        (o: { class: string; label: string }) => o.class === "private" && o.label === "intermediate",
      ),
    );
    const bad = join(dir, "bad-pin.txt");
    assertCliError(
      await mtls(["hsm", "list", "--pkcs11-module", hsm.module, "--pin-file", bad], { cwd: dir, env }),
      1,
      /wrong PIN/,
    );
  });

  it("mtls hsm keygen makes a key in the token and a CSR it signed", async () => {
    const args = [
      "hsm",
      "keygen",
      "pkcs11:token=mtls;object=gw",
      "--pkcs11-module",
      hsm.module,
      "--pin-file",
      pinFile,
    ];
    const res = assertOk(
      await mtls([...args, "--csr", "gw.csr", "--cn", "gw.acme.test"], { cwd: dir, env }),
      "mtls hsm keygen",
    );
    assert.match(
      res.stdout,
      /generated ec-p256 key pkcs11:token=mtls;object=gw;id=(%[0-9a-f]{2}){8};type=private/,
    );
    const csr = await run("openssl", ["req", "-in", join(dir, "gw.csr"), "-noout", "-verify", "-subject"]);
    assert.match(csr.stdout + csr.stderr, /verify OK/);
    assert.match(csr.stdout, /CN = gw\.acme\.test/);
    const objects = pkcs11Tool(hsm, [
      "--token-label",
      "mtls",
      "--login",
      "--pin",
      PIN,
      "-O",
      "--label",
      "gw",
    ]);
    assert.match(objects.slice(objects.indexOf("Private Key Object")), /never extractable/);
    assertCliError(
      await mtls(args, { cwd: dir, env }),
      1,
      /already holds a private key matching pkcs11:token=mtls;object=gw/,
    );
  });

  it("a tunnel server whose TLS key is in the token completes mTLS with openssl s_client", async () => {
    // A key made by another tool (OpenSC), then a CSR it signs through pkcs11js, signed by the CA.
    pkcs11Tool(hsm, [
      "--token-label",
      "mtls",
      "--login",
      "--pin",
      PIN,
      "--keypairgen",
      "--key-type",
      "EC:prime256v1",
      "--label",
      "tunnel",
      "--id",
      "7e",
    ]);
    const signer = openPkcs11Signer({ module: hsm.module, uri: "pkcs11:token=mtls;object=tunnel", pin: PIN });
    writeFileSync(join(dir, "tunnel.csr"), await buildCsrPem({ subject: { commonName: "tunnel" } }, signer));
    assertOk(
      await run_(
        ["sign", "tunnel.csr", "--profile", "server", "--ip", "127.0.0.1", "--out", join(dir, "tunnel.crt")],
        {
          MTLS_PKCS11_PIN: PIN,
        },
      ),
      "mtls sign",
    );
    assertOk(
      await run_(["issue", "client", "alice", "--out", "certs"], { MTLS_PKCS11_PIN: PIN }),
      "mtls issue alice",
    );
    const engineConf = join(dir, "engine.cnf");
    const conf = assertOk(
      await mtls(["hsm", "openssl-config", "--pkcs11-module", hsm.module], { cwd: dir, env }),
      "mtls hsm openssl-config",
    );
    writeFileSync(engineConf, conf.stdout);

    const echo: Server = createServer((s) =>
      s.once("data", (d) => s.end(Buffer.concat([Buffer.from("echo:"), d]))),
    );
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
    const echoPort = (echo.address() as { port: number }).port;
    const tunnelArgs = [
      "tunnel",
      "server",
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${echoPort}`,
      "--cert",
      join(dir, "tunnel.crt"),
      "--key",
      "pkcs11:token=mtls;object=tunnel",
      "--ca",
      join(state, "ca", "root.crt"),
      "--allow-cn",
      "alice",
      "--allow-cn",
      "alice-hsm",
    ];
    const tokenEnv = [
      `SOFTHSM2_CONF=${hsm.conf}`,
      `MTLS_PKCS11_MODULE=${hsm.module}`,
      `MTLS_PKCS11_PIN_FILE=${pinFile}`,
    ];
    let bg: Background | undefined;
    let client: Background | undefined;
    try {
      // Without the engine registered at start-up, one clear line, not a crash.
      const noEngine = await run(
        "env",
        ["-u", "OPENSSL_CONF", ...tokenEnv, process.execPath, CLI, ...tunnelArgs],
        {
          cwd: dir,
          timeoutMs: 20_000,
        },
      );
      assertCliError(
        noEngine,
        1,
        /OpenSSL engine "pkcs11" is not registered in this process: start mtls with OPENSSL_CONF/,
      );

      bg = await startBackground(
        "env",
        [`OPENSSL_CONF=${engineConf}`, ...tokenEnv, process.execPath, CLI, ...tunnelArgs],
        {
          cwd: dir,
          ready: /mtls: tunnel server listening on 127\.0\.0\.1:\d+/,
          timeoutMs: 20_000,
        },
      );
      const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(bg.output())?.[1]);
      const alice = [
        "-cert",
        join(dir, "certs", "alice.crt"),
        "-cert_chain",
        join(dir, "certs", "alice.crt"),
      ];
      const sClient = await run(
        "openssl",
        [
          "s_client",
          "-connect",
          `127.0.0.1:${port}`,
          ...alice,
          "-key",
          join(dir, "certs", "alice.key"),
          "-CAfile",
          join(state, "ca", "root.crt"),
          "-verify_return_error",
          "-verify_ip",
          "127.0.0.1",
          "-quiet",
        ],
        { input: "hello through the token\n", timeoutMs: 15_000 },
      );
      assert.match(sClient.stdout, /echo:hello through the token/, sClient.stderr);
      // The server proved the key it holds in the token: its certificate is the one signed above.
      const served = await run(
        "openssl",
        [
          "s_client",
          "-connect",
          `127.0.0.1:${port}`,
          ...alice,
          "-key",
          join(dir, "certs", "alice.key"),
          "-brief",
        ],
        {
          timeoutMs: 15_000,
        },
      );
      assert.match(served.stderr + served.stdout, /Peer certificate: (.*, )?CN = tunnel\n/);

      // A renewed certificate for the same token key is picked up without a restart: the engine,
      // registered at start-up, serves any number of TLS contexts in one process.
      const renewed = assertOk(
        await run_(
          [
            "sign",
            "tunnel.csr",
            "--profile",
            "server",
            "--ip",
            "127.0.0.1",
            "--out",
            join(dir, "tunnel.crt"),
            "--force",
            "--json",
          ],
          { MTLS_PKCS11_PIN: PIN },
        ),
        "mtls sign (renewal)",
      );
      const serial = (JSON.parse(renewed.stdout) as { serial: string }).serial;
      process.kill(bg.child.pid as number, "SIGHUP");
      const deadline = Date.now() + 15_000;
      let servedSerial = "";
      while (Date.now() < deadline) {
        const r = await run(
          "openssl",
          ["s_client", "-connect", `127.0.0.1:${port}`, ...alice, "-key", join(dir, "certs", "alice.key")],
          {
            timeoutMs: 10_000,
          },
        );
        const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)?.[0];
        servedSerial = pem ? new X509Certificate(pem).serialNumber.toLowerCase() : "";
        if (servedSerial === serial.toLowerCase()) break;
        await new Promise((r2) => setTimeout(r2, 200));
      }
      assert.equal(servedSerial, serial.toLowerCase(), bg.output());
      assert.match(bg.output(), /TLS certificate reloaded/);

      // A tunnel client whose key is in the token too: mTLS with a token key on both ends.
      assertOk(
        await mtls(
          [
            "hsm",
            "keygen",
            "pkcs11:token=mtls;object=tclient",
            "--pin-file",
            pinFile,
            "--csr",
            "tclient.csr",
            "--cn",
            "alice-hsm",
          ],
          { cwd: dir, env: { ...env, MTLS_PKCS11_MODULE: hsm.module } },
        ),
        "mtls hsm keygen (client)",
      );
      assertOk(
        await run_(["sign", "tclient.csr", "--profile", "client", "--out", join(dir, "tclient.crt")], {
          MTLS_PKCS11_PIN: PIN,
        }),
        "mtls sign (client)",
      );
      client = await startBackground(
        "env",
        [
          `OPENSSL_CONF=${engineConf}`,
          ...tokenEnv,
          process.execPath,
          CLI,
          "tunnel",
          "client",
          "--listen",
          "127.0.0.1:0",
          "--target",
          `127.0.0.1:${port}`,
          "--cert",
          join(dir, "tclient.crt"),
          "--key",
          "pkcs11:token=mtls;object=tclient",
          "--ca",
          join(state, "ca", "root.crt"),
        ],
        { cwd: dir, ready: /mtls: tunnel client listening on 127\.0\.0\.1:\d+/, timeoutMs: 20_000 },
      );
      const clientPort = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(client.output())?.[1]);
      const reply = await new Promise<string>((resolveReply, reject) => {
        const sock = connect(clientPort, "127.0.0.1", () => sock.write("via the client"));
        let got = "";
        sock.on("data", (d) => {
          got += d;
        });
        sock.on("end", () => resolveReply(got));
        sock.on("error", reject);
        sock.setTimeout(10_000, () =>
          reject(new Error(`no answer through the tunnel client\n${client?.output()}`)),
        );
      });
      assert.equal(reply, "echo:via the client", `${client.output()}\n${bg.output()}`);
      // The server's audit line for that connection (written when it closes) names the client's identity.
      const until = Date.now() + 10_000;
      while (!/"rule":"cn=alice-hsm"/.test(bg.output()) && Date.now() < until) await sleep(50);
      assert.match(bg.output(), /"rule":"cn=alice-hsm"/);
      assert.ok(!bg.output().includes(PIN), "the PIN never reaches the logs");
    } finally {
      await client?.stop();
      await bg?.stop();
      echo.close();
    }
  });

  it("the gateway serves HTTPS with its key in the token", async () => {
    const upstream = createHttpServer((_req, res) => res.end("upstream says hi"));
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    const upstreamPort = (upstream.address() as { port: number }).port;
    let bg: Background | undefined;
    try {
      bg = await startBackground(
        "env",
        [
          `OPENSSL_CONF=${join(dir, "engine.cnf")}`,
          `SOFTHSM2_CONF=${hsm.conf}`,
          `MTLS_PKCS11_MODULE=${hsm.module}`,
          `MTLS_PKCS11_PIN_FILE=${pinFile}`,
          process.execPath,
          CLI,
          "gateway",
          "--listen",
          "127.0.0.1:0",
          "--route",
          `/=http://127.0.0.1:${upstreamPort}`,
          "--cert",
          join(dir, "tunnel.crt"),
          "--key",
          "pkcs11:token=mtls;object=tunnel",
          "--ca",
          join(state, "ca", "root.crt"),
          "--allow-cn",
          "alice",
        ],
        { cwd: dir, ready: /mtls: gateway listening on 127\.0\.0\.1:\d+/, timeoutMs: 20_000 },
      );
      const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(bg.output())?.[1]);
      const res = await run(
        "curl",
        [
          "-sS",
          "--max-time",
          "10",
          "--cacert",
          join(state, "ca", "root.crt"),
          "--cert",
          join(dir, "certs", "alice.crt"),
          "--key",
          join(dir, "certs", "alice.key"),
          `https://127.0.0.1:${port}/`,
        ],
        { timeoutMs: 15_000 },
      );
      assert.equal(res.stdout, "upstream says hi", `${res.stderr}\n${bg.output()}`);
    } finally {
      await bg?.stop();
      upstream.close();
    }
  });

  it("mtls ca serve --tls-key serves its HTTPS API with a key in the token", async () => {
    const keyUri = "pkcs11:token=mtls;object=ca-https";
    assertOk(
      await mtls(
        [
          "hsm",
          "keygen",
          keyUri,
          "--key-type",
          "ec-p256",
          "--pkcs11-module",
          hsm.module,
          "--pin-file",
          pinFile,
        ],
        { cwd: dir, env },
      ),
      "mtls hsm keygen (ca serve)",
    );
    const tokenSpki = Buffer.from(
      openPkcs11Signer({ module: hsm.module, uri: keyUri, pin: PIN }).spki,
    ).toString("base64");
    // The earlier `ca serve` left a software server key: moving to the token key removes it.
    assert.ok(existsSync(join(state, "server", "ca-server.key")));
    // No MTLS_PKCS11_MODULE: the module comes from the CA's own setting (ca.pkcs11Module).
    const serveArgs = (key: string, pin = pinFile) => [
      `SOFTHSM2_CONF=${hsm.conf}`,
      `MTLS_PKCS11_PIN_FILE=${pinFile}`,
      `MTLS_PASSPHRASE=${PASSPHRASE.MTLS_PASSPHRASE}`,
      process.execPath,
      CLI,
      "ca",
      "serve",
      "--state",
      state,
      "--listen",
      "127.0.0.1:0",
      "--public-listen",
      "off",
      "--log-level",
      "warn",
      "--tls-key",
      key,
      "--pin-file",
      pin,
    ];
    const once = (args: string[], conf?: string) =>
      run("env", [...(conf ? [`OPENSSL_CONF=${conf}`] : ["-u", "OPENSSL_CONF"]), ...args], {
        cwd: dir,
        timeoutMs: 20_000,
      });
    const engineConf = join(dir, "engine.cnf");
    assertCliError(
      await once(serveArgs(keyUri)),
      1,
      /OpenSSL engine "pkcs11" is not registered in this process: start mtls with OPENSSL_CONF/,
    );
    assertCliError(
      await once(serveArgs("pkcs11:token=mtls;object=no-such-key"), engineConf),
      1,
      /no private key matches .*no-such-key.* on token "mtls"/,
    );
    const bad = join(dir, "bad-pin-serve.txt");
    writeFileSync(bad, "not-the-pin\n");
    const wrongPin = await once(serveArgs(keyUri, bad), engineConf);
    assertCliError(wrongPin, 1, /wrong PIN on token "mtls"/);
    assert.ok(!wrongPin.stderr.includes(PIN));

    let bg: Background | undefined;
    try {
      bg = await startBackground("env", [`OPENSSL_CONF=${engineConf}`, ...serveArgs(keyUri)], {
        cwd: dir,
        ready: /\(API, mTLS\)/,
        timeoutMs: 20_000,
      });
      const url = /(https:\/\/127\.0\.0\.1:\d+) \(API, mTLS\)/.exec(bg.output())?.[1];
      assert.ok(url, bg.output());
      const res = await run(
        "curl",
        ["-sS", "--max-time", "10", "--cacert", join(state, "ca", "root.crt"), `${url}/v1/ca`],
        { timeoutMs: 15_000 },
      );
      assert.equal(res.code, 0, `${res.stderr}\n${bg.output()}`);
      assert.match(res.stdout, /BEGIN CERTIFICATE|root/i);
      // The certificate the server presents is for the token's key.
      const port = new URL(url).port;
      const served = await run(
        "openssl",
        [
          "s_client",
          "-connect",
          `127.0.0.1:${port}`,
          "-CAfile",
          join(state, "ca", "root.crt"),
          "-verify_return_error",
        ],
        { input: "", timeoutMs: 15_000 },
      );
      const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(served.stdout)?.[0];
      assert.ok(pem, served.stdout + served.stderr);
      const spki = (x: string) =>
        (new X509Certificate(x).publicKey.export({ type: "spki", format: "der" }) as Buffer).toString(
          "base64",
        );
      assert.equal(spki(pem), tokenSpki);
      assert.equal(spki(readFileSync(join(state, "server", "ca-server.crt"), "utf8")), tokenSpki);
      assert.deepEqual(
        listFiles(join(state, "server")).filter((f) => /\.key$/.test(f)),
        [],
        "no server key file in the state directory",
      );
      assert.ok(!bg.output().includes(PIN), "the PIN never reaches the logs");
    } finally {
      await bg?.stop();
    }
  });
});
