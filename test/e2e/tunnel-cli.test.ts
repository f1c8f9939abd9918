/**
 * End-to-end tests of `mtls tunnel server` and `mtls tunnel client` (issue 3) with the built CLI
 * (dist/cli/main.js): a CA and certificates made by `mtls init` / `mtls issue`, a Node HTTP service
 * behind a tunnel server, curl through a tunnel client and straight to the server, refusals counted
 * in /metrics, startup errors as one `mtls: ` line, and a graceful SIGTERM. 127.0.0.1 only; every
 * wait is bounded and every process is killed in a finally.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  assertCliError,
  assertOk,
  type Background,
  CLI,
  mtls,
  requireTool,
  run,
  startBackground,
  tempDir,
  withTimeout,
} from "./helpers.js";

const ENV = { MTLS_PASSPHRASE: "e2e-passphrase" };

let dir: string;
let cleanup: () => void;
let http: Server;
let httpPort: number;
const running: Background[] = [];

const certs = (name: string) => ({
  cert: join(dir, "certs", `${name}.crt`),
  key: join(dir, "certs", `${name}.key`),
  ca: join(dir, "certs", "ca.crt"),
});
const certFlags = (name: string) => {
  const c = certs(name);
  return ["--cert", c.cert, "--key", c.key, "--ca", c.ca];
};

/** Starts `mtls tunnel KIND ARGS` and resolves with it and the port(s) its "listening" line names. */
async function tunnel(
  kind: "server" | "client",
  args: string[],
): Promise<{ bg: Background; port: number; status?: number }> {
  const bg = await startBackground(process.execPath, [CLI, "tunnel", kind, ...args], {
    cwd: dir,
    ready: /mtls: tunnel (server|client) listening on \S+ → \S+.*\n/,
    timeoutMs: 15_000,
  });
  running.push(bg);
  const m = /listening on 127\.0\.0\.1:(\d+) → [^\s;]+(?:; status on 127\.0\.0\.1:(\d+))?/.exec(bg.output());
  assert.ok(m, bg.output());
  return { bg, port: Number(m[1]), ...(m[2] ? { status: Number(m[2]) } : {}) };
}

async function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run("curl", ["-sS", "--max-time", "10", ...args], { timeoutMs: 20_000 });
}

/** A metric's value from a Prometheus text page (0 when absent). */
function metricValue(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

before(async () => {
  await requireTool("curl", ["--version"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-tunnel-"));
  assertOk(await mtls(["init", "--name", "Acme"], { cwd: dir, env: ENV }), "mtls init");
  for (const [profile, name, extra] of [
    ["server", "tunnel", ["--dns", "localhost", "--ip", "127.0.0.1"]],
    ["client", "alice", ["--uri", "spiffe://acme.test/user/alice"]],
    ["client", "bob", []],
  ] as const) {
    assertOk(
      await mtls(["issue", profile, name, "--out", "certs", ...extra], { cwd: dir, env: ENV }),
      `mtls issue ${name}`,
    );
  }
  http = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => {
      body += d;
    });
    req.on("end", () => {
      res.setHeader("content-type", "text/plain");
      res.end(`hello from the target: ${req.method} ${req.url}${body ? ` ${body}` : ""}\n`);
    });
  });
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  httpPort = (http.address() as AddressInfo).port;
});

after(async () => {
  for (const bg of running) await bg.stop();
  http?.close();
  cleanup?.();
});

describe("mtls tunnel (built CLI)", () => {
  it("carries curl through a client and a server tunnel to an HTTP service, and refuses the rest", async () => {
    const server = await tunnel("server", [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${httpPort}`,
      ...certFlags("tunnel"),
      "--allow-uri",
      "spiffe://acme.test/user/*",
      "--status",
      "127.0.0.1:0",
    ]);
    const client = await tunnel("client", [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${server.port}`,
      "--server-name",
      "localhost",
      ...certFlags("alice"),
    ]);

    // Plain curl through the tunnel client.
    const plain = await curl([`http://127.0.0.1:${client.port}/through?x=1`]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, "hello from the target: GET /through?x=1\n");
    const put = await curl(["-X", "PUT", "--data", "payload", `http://127.0.0.1:${client.port}/file`]);
    assert.equal(put.stdout, "hello from the target: PUT /file payload\n");

    // curl with a client certificate straight to the tunnel server.
    const a = certs("alice");
    const base = ["--resolve", `localhost:${server.port}:127.0.0.1`, "--cacert", a.ca];
    const url = `https://localhost:${server.port}/direct`;
    const direct = await curl([...base, "--cert", a.cert, "--key", a.key, url]);
    assert.equal(direct.code, 0, direct.stderr);
    assert.equal(direct.stdout, "hello from the target: GET /direct\n");

    // Refused: a certificate the rules do not allow, and no certificate at all.
    const b = certs("bob");
    const bob = await curl([...base, "--cert", b.cert, "--key", b.key, url]);
    assert.notEqual(bob.code, 0, "bob must be refused");
    const anonymous = await curl([...base, url]);
    assert.notEqual(anonymous.code, 0, "a client without a certificate must be refused");

    // The status endpoint saw all of it.
    const s = `http://127.0.0.1:${server.status}`;
    assert.equal((await curl([`${s}/healthz`])).stdout, "ok\n");
    const ready = await curl(["-w", "%{http_code}", `${s}/readyz`]);
    assert.match(ready.stdout, /accepts connections\n200$/);
    const metrics = (await curl([`${s}/metrics`])).stdout;
    const t = `tunnel="127.0.0.1:0"`;
    assert.equal(metricValue(metrics, `mtls_tunnel_handshake_failures_total{${t},reason="not_allowed"}`), 1);
    assert.equal(
      metricValue(metrics, `mtls_tunnel_handshake_failures_total{${t},reason="no_certificate"}`),
      1,
    );
    assert.ok(metricValue(metrics, `mtls_tunnel_bytes_total{${t},direction="out"}`) > 0);
    assert.ok(metricValue(metrics, `mtls_certificate_expiry_seconds{${t},certificate="leaf"}`) > 86_400);
    assert.match(metrics, /process_resident_memory_bytes/);

    // The audit lines on stderr: one JSON line per connection.
    const audit = server.bg
      .output()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.event === "connection");
    assert.ok(
      audit.some((l) => l.allowed === true && (l.identity as { subject: string }).subject.includes("alice")),
    );
    assert.ok(audit.some((l) => l.allowed === false && l.reason === "not_allowed"));
    assert.ok(audit.some((l) => l.allowed === false && l.reason === "no_certificate"));
    assert.ok(!server.bg.output().includes("PRIVATE KEY"));

    // SIGTERM: a graceful stop, exit 0.
    server.bg.child.kill("SIGTERM");
    assert.equal(await withTimeout(server.bg.exited, 10_000, "server exit after SIGTERM"), 0);
    client.bg.child.kill("SIGINT");
    assert.equal(await withTimeout(client.bg.exited, 10_000, "client exit after SIGINT"), 0);
  });

  it("a client tunnel with a certificate the server does not allow gets nothing through", async () => {
    const server = await tunnel("server", [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${httpPort}`,
      ...certFlags("tunnel"),
      "--allow-cn",
      "alice",
    ]);
    const client = await tunnel("client", [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `localhost:${server.port}`,
      ...certFlags("bob"),
    ]);
    const res = await curl([`http://127.0.0.1:${client.port}/`]);
    assert.notEqual(res.code, 0);
    assert.equal(res.stdout, "");
    await withTimeout(
      (async () => {
        while (!/"reason":"not_allowed"/.test(server.bg.output()))
          await new Promise((r) => setTimeout(r, 20));
      })(),
      5000,
      "audit line for bob",
    );
  });

  it("startup errors are one `mtls:` line: bad flags (exit 2), port in use and missing files (exit 1)", async () => {
    const busy = await tunnel("server", [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${httpPort}`,
      ...certFlags("tunnel"),
      "--allow-all",
    ]);
    const inUse = await mtls(
      [
        "tunnel",
        "server",
        "--listen",
        `127.0.0.1:${busy.port}`,
        "--target",
        `127.0.0.1:${httpPort}`,
        ...certFlags("tunnel"),
        "--allow-all",
      ],
      { cwd: dir },
    );
    assertCliError(inUse, 1, /address already in use/);
    assertCliError(
      await mtls(
        [
          "tunnel",
          "server",
          "--listen",
          "127.0.0.1:0",
          "--target",
          `127.0.0.1:${httpPort}`,
          ...certFlags("tunnel"),
        ],
        {
          cwd: dir,
        },
      ),
      2,
      /deny by default: give at least one --allow-\* rule/,
    );
    assertCliError(
      await mtls(
        [
          "tunnel",
          "server",
          "--listen",
          "127.0.0.1:0",
          "--target",
          "192.0.2.1:80",
          ...certFlags("tunnel"),
          "--allow-all",
        ],
        { cwd: dir },
      ),
      2,
      /unsafe-target/,
    );
    assertCliError(
      await mtls(
        ["tunnel", "client", "--listen", "0.0.0.0:0", "--target", "localhost:1", ...certFlags("alice")],
        { cwd: dir },
      ),
      2,
      /unsafe-listen/,
    );
    assertCliError(
      await mtls(
        [
          "tunnel",
          "client",
          "--listen",
          "127.0.0.1:0",
          "--target",
          "localhost:1",
          "--cert",
          "nope.crt",
          "--key",
          "nope.key",
          "--ca",
          "nope.crt",
        ],
        { cwd: dir },
      ),
      1,
      /not found: .*nope/,
    );
    assertCliError(
      await mtls(
        ["tunnel", "client", "--listen", "127.0.0.1:0", "--target", "localhost", ...certFlags("alice")],
        { cwd: dir },
      ),
      2,
      /invalid --target "localhost"/,
    );
  });

  it("--state DIR --name NAME takes the files the CA issued", async () => {
    const server = await tunnel("server", [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${httpPort}`,
      "--state",
      join(dir, ".mtls"),
      "--name",
      "tunnel",
      "--allow-cn",
      "alice",
    ]);
    const client = await tunnel("client", [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `localhost:${server.port}`,
      "--state",
      join(dir, ".mtls"),
      "--name",
      "alice",
    ]);
    const res = await curl([`http://127.0.0.1:${client.port}/state`]);
    assert.equal(res.stdout, "hello from the target: GET /state\n");
  });
});
