/**
 * End-to-end tests of `mtls up -c mtls.yaml` with the built CLI (dist/cli/main.js): a server and
 * client tunnel pair plus an SNI server tunnel (two names, two certificates, two targets, two rule
 * sets on one port) from one YAML file; curl through them; the file edited while running (a rule
 * removed: new connections refused within 2 s, an open one kept), a broken file (the config in
 * force stays, the log says why), and `mtls up --check`. 127.0.0.1 only; every wait is bounded and
 * every process is killed in a finally.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { makeSan } from "../../src/pki/names.js";
import { createTestPki, type IssuedFiles, type TestPki } from "../fixtures/pki.js";
import {
  assertCliError,
  type Background,
  CLI,
  freePort,
  mtls,
  requireTool,
  run,
  startBackground,
  withTimeout,
} from "./helpers.js";

let pki: TestPki;
const certs: Record<string, IssuedFiles> = {};
const servers: Server[] = [];
const running: Background[] = [];
const sockets: Socket[] = [];
let portA: number;
let portB: number;

/** An HTTP service that says who it is; keep-alive long enough for a connection held across a reload. */
async function service(name: string): Promise<number> {
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.setHeader("content-type", "text/plain");
      res.end(`hello from ${name}: ${req.method} ${req.url}\n`);
    });
  });
  server.keepAliveTimeout = 120_000;
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  servers.push(server);
  return (server.address() as AddressInfo).port;
}

function curl(args: string[]) {
  return run("curl", ["-sS", "--max-time", "5", ...args], { timeoutMs: 15_000 });
}

/** curl to the SNI tunnel for `name`, verifying the certificate of that name, as `who`. */
function curlSni(port: number, name: string, who: string) {
  const c = certs[who] as IssuedFiles;
  return curl([
    "--resolve",
    `${name}:${port}:127.0.0.1`,
    "--cacert",
    c.ca,
    "--cert",
    c.cert,
    "--key",
    c.key,
    `https://${name}:${port}/sni`,
  ]);
}

/** One HTTP/1.1 request on a kept-alive raw connection; resolves with the body line. */
function request(s: Socket, path: string): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      let got = "";
      const onData = (d: Buffer) => {
        got += d.toString();
        const m = /\r\n\r\n(hello from [^\n]*\n)/.exec(got);
        if (m) {
          s.off("data", onData);
          s.off("close", onClose);
          resolve(m[1] as string);
        }
      };
      const onClose = () => reject(new Error(`connection closed; got ${JSON.stringify(got)}`));
      s.on("data", onData);
      s.once("close", onClose);
      s.write(`GET ${path} HTTP/1.1\r\nHost: test\r\n\r\n`);
    }),
    5000,
    `request ${path}`,
  );
}

async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<number> {
  const start = Date.now();
  while (!(await cond())) {
    if (Date.now() - start > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - start;
}

const rel = (p: string) => p.slice(pki.dir.length + 1);
const tlsOf = (name: string, indent: string) => {
  const c = certs[name] as IssuedFiles;
  return `${indent}cert: ${rel(c.cert)}\n${indent}key: ${rel(c.key)}\n${indent}ca: ${rel(c.ca)}\n`;
};

/** The config: `aliceRule` false removes the rule that lets alice through the pair. */
function config(ports: { pair: number }, aliceRule = true): string {
  return `# written by test/e2e/up.test.ts
log: { level: info }
status: 127.0.0.1:0
defaults:
  shutdown_timeout: 2s
tunnels:
  - name: pair-server
    mode: server
    listen: 127.0.0.1:${ports.pair}
    target: 127.0.0.1:${portA}
${tlsOf("tunnel", "    ")}    allow:
${aliceRule ? "      - uri: spiffe://acme.test/user/*\n        cn: alice\n" : ""}      - cn: bob
  - name: pair-client
    mode: client
    listen: 127.0.0.1:0
    target: localhost:${ports.pair}
${tlsOf("alice", "    ")}  - name: sni
    mode: server
    listen: 127.0.0.1:0
${tlsOf("tunnel", "    ")}    sni:
      - server_name: wiki.acme.test
        target: 127.0.0.1:${portA}
        cert: ${rel((certs.wiki as IssuedFiles).cert)}
        key: ${rel((certs.wiki as IssuedFiles).key)}
        allow: [{ cn: alice }]
      - server_name: files.acme.test
        target: 127.0.0.1:${portB}
        cert: ${rel((certs.files as IssuedFiles).cert)}
        key: ${rel((certs.files as IssuedFiles).key)}
        allow: [{ cn: bob }]
`;
}

before(async () => {
  await requireTool("curl", ["--version"]);
  pki = await createTestPki("mtls-e2e-up-");
  certs.tunnel = await pki.issue("server", "tunnel", { sans: [makeSan("dns", "localhost")] });
  certs.wiki = await pki.issue("server", "wiki", { sans: [makeSan("dns", "wiki.acme.test")] });
  certs.files = await pki.issue("server", "files", { sans: [makeSan("dns", "files.acme.test")] });
  certs.alice = await pki.issue("client", "alice", {
    sans: [makeSan("uri", "spiffe://acme.test/user/alice")],
  });
  certs.bob = await pki.issue("client", "bob");
  portA = await service("A");
  portB = await service("B");
});

after(async () => {
  for (const s of sockets) s.destroy();
  for (const bg of running) await bg.stop();
  for (const s of servers) s.close();
  await pki?.close();
});

describe("mtls up (built CLI)", () => {
  it("--check: 0 and a summary for a good file, 1 and one line naming the place for a bad one", async () => {
    const pair = await freePort();
    writeFileSync(join(pki.dir, "mtls.yaml"), config({ pair }));
    const good = await mtls(["up", "--check", "-c", "mtls.yaml"], { cwd: pki.dir });
    assert.equal(good.code, 0, good.stderr);
    assert.equal(good.stdout, "mtls.yaml: ok (3 tunnels: pair-server, pair-client, sni)\n");

    writeFileSync(join(pki.dir, "bad.yaml"), config({ pair }).replace("cn: bob", "urii: bob"));
    assertCliError(
      await mtls(["up", "--check", "-c", "bad.yaml"], { cwd: pki.dir }),
      1,
      /^mtls: bad\.yaml: tunnels\[0\]\.allow\[1\]: unknown key "urii"$/,
    );
    writeFileSync(
      join(pki.dir, "nocert.yaml"),
      config({ pair }).replace(/cert: certs\/wiki\.crt/, "cert: certs/nope.crt"),
    );
    assertCliError(
      await mtls(["up", "--check", "-c", "nocert.yaml"], { cwd: pki.dir }),
      1,
      /^mtls: nocert\.yaml: tunnel sni: certificate file not found: .*certs\/nope\.crt$/,
    );
    assertCliError(
      await mtls(["up", "-c", "absent.yaml"], { cwd: pki.dir }),
      1,
      /^mtls: absent\.yaml: no such file$/,
    );

    // A tunnel that cannot listen: the others are stopped again and the last line says why.
    const busy = createNetServer();
    busy.listen(0, "127.0.0.1");
    await once(busy, "listening");
    try {
      const port = (busy.address() as AddressInfo).port;
      writeFileSync(join(pki.dir, "inuse.yaml"), config({ pair: port }));
      const res = await mtls(["up", "-c", "inuse.yaml"], { cwd: pki.dir });
      assert.equal(res.code, 1, res.stderr);
      assert.equal(
        res.stderr.trimEnd().split("\n").at(-1),
        `mtls: inuse.yaml: tunnel pair-server: cannot listen on 127.0.0.1:${port} (tunnel server): address already in use`,
      );
    } finally {
      busy.close();
    }
  });

  it("runs a tunnel pair and an SNI tunnel; reloads a changed file without dropping an open connection; keeps the old config when the new one is broken", async (t) => {
    const pair = await freePort();
    const file = join(pki.dir, "mtls.yaml");
    writeFileSync(file, config({ pair }));
    const bg = await startBackground(process.execPath, [CLI, "up", "-c", "mtls.yaml"], {
      cwd: pki.dir,
      ready: /mtls: up: 3 tunnels from mtls\.yaml\n/,
      timeoutMs: 15_000,
    });
    running.push(bg);
    const out = bg.output();
    const portOf = (re: RegExp) => {
      const m = re.exec(out);
      assert.ok(m, `${re} in:\n${out}`);
      return Number(m[1]);
    };
    portOf(/mtls: tunnel pair-server \(server\) listening on 127\.0\.0\.1:(\d+) → 127\.0\.0\.1:\d+\n/);
    const client = portOf(
      /mtls: tunnel pair-client \(client\) listening on 127\.0\.0\.1:(\d+) → localhost:\d+\n/,
    );
    const sni = portOf(
      /mtls: tunnel sni \(server\) listening on 127\.0\.0\.1:(\d+) → wiki\.acme\.test → 127\.0\.0\.1:\d+, files\.acme\.test → 127\.0\.0\.1:\d+\n/,
    );
    const status = portOf(/mtls: status on 127\.0\.0\.1:(\d+)\n/);

    // Through the pair, and to each name of the SNI tunnel with its own certificate and rules.
    const through = await curl([`http://127.0.0.1:${client}/pair`]);
    assert.equal(through.stdout, "hello from A: GET /pair\n", through.stderr);
    assert.equal((await curlSni(sni, "wiki.acme.test", "alice")).stdout, "hello from A: GET /sni\n");
    assert.equal((await curlSni(sni, "files.acme.test", "bob")).stdout, "hello from B: GET /sni\n");
    const wrong = await curlSni(sni, "files.acme.test", "alice");
    assert.notEqual(wrong.code, 0, "alice is not allowed on files.acme.test");
    assert.equal(wrong.stdout, "");

    // One status server for the process.
    const ready = await curl(["-w", "%{http_code}", `http://127.0.0.1:${status}/readyz`]);
    assert.match(ready.stdout, /^pair-server: ready: .*\npair-client: ready: .*\nsni: ready: .*\n200$/);
    const metrics = (await curl([`http://127.0.0.1:${status}/metrics`])).stdout;
    assert.match(metrics, /mtls_tunnel_handshake_failures_total\{tunnel="sni",reason="not_allowed"\} 1/);
    assert.match(metrics, /mtls_tunnel_connections_total\{tunnel="pair-client"\} [1-9]/);
    assert.match(
      metrics,
      /mtls_certificate_expiry_seconds\{tunnel="sni",certificate="leaf:files\.acme\.test"\} \d{5,}/,
    );

    // A connection opened before the edit.
    const raw = connect({ host: "127.0.0.1", port: client });
    sockets.push(raw);
    await withTimeout(once(raw, "connect"), 5000, "raw connect");
    assert.equal(await request(raw, "/before"), "hello from A: GET /before\n");

    // Remove the rule that lets alice through the pair: refused within 2 s; the open one stays.
    writeFileSync(file, config({ pair }, false));
    const took = await waitFor(
      async () => (await curl(["--max-time", "2", `http://127.0.0.1:${client}/after`])).stdout === "",
      2000,
      "alice refused after the rule was removed",
    );
    assert.ok(took <= 2000, `${took} ms`);
    t.diagnostic(`new connections refused ${took} ms after the file was written`);
    assert.equal(await request(raw, "/still-open"), "hello from A: GET /still-open\n");
    await waitFor(() => /"msg":"config reloaded"/.test(bg.output()), 2000, "reload logged");

    // A broken file (which would let alice in again): the config in force stays, the log says why.
    writeFileSync(file, config({ pair }).replace("cn: bob", "cn: bob\n        urii: x"));
    await waitFor(
      () => /"msg":"new config refused; the previous one stays in force"/.test(bg.output()),
      2000,
      "refusal logged",
    );
    const refusal = bg
      .output()
      .split("\n")
      .find((l) => l.includes("new config refused"));
    assert.match(refusal ?? "", /"err":"mtls\.yaml: tunnels\[0\]\.allow\[1\]: unknown key \\"urii\\""/);
    assert.equal((await curl([`http://127.0.0.1:${client}/broken`])).stdout, "", "alice still refused");
    assert.equal((await curlSni(sni, "wiki.acme.test", "alice")).stdout, "hello from A: GET /sni\n");
    assert.equal(await request(raw, "/after-broken"), "hello from A: GET /after-broken\n");

    // SIGHUP with the broken file: still refused, still running.
    const refusals = () => bg.output().split("new config refused").length - 1;
    const before = refusals();
    bg.child.kill("SIGHUP");
    await waitFor(() => refusals() > before, 3000, "SIGHUP reload refused");

    // The file fixed (alice allowed again): in force at once.
    writeFileSync(file, config({ pair }));
    await waitFor(
      async () => (await curl([`http://127.0.0.1:${client}/fixed`])).stdout === "hello from A: GET /fixed\n",
      3000,
      "alice allowed again",
    );
    assert.ok(!bg.output().includes("PRIVATE KEY"));

    if (process.env.MTLS_E2E_SHOW) t.diagnostic(bg.output());
    // SIGTERM: graceful stop, exit 0.
    raw.destroy();
    bg.child.kill("SIGTERM");
    assert.equal(await withTimeout(bg.exited, 10_000, "exit after SIGTERM"), 0);
  });
});
