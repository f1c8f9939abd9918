/**
 * `mtls gateway --workers N` end to end: the built CLI as a node:cluster primary with two workers
 * on one socket, in front of a Node upstream, driven by curl with a client certificate. Requests
 * pass, a killed worker is replaced, /metrics sums the workers, SIGTERM drains and exits 0, and bad
 * files fail once with one line. Certificates made at test time by the CLI. 127.0.0.1 only.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { assertCliError, CLI, mtls, requireTool, startBackground, tempDir } from "./helpers.js";
import { curl, metricValue, stopChild, TestCa, waitFor } from "./peers.js";

let dir: string;
let cleanup: () => void;
let ca: TestCa;
let upstream: Server;
let upstreamPort: number;

/** Live children of `pid` running the CLI (the workers). */
function workersOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(f[1]) === pid && f[0] !== "Z") out.push(Number(e));
    } catch {}
  }
  return out.sort();
}

before(async () => {
  await requireTool("curl", ["--version"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-gw-workers-"));
  ca = await TestCa.init(dir);
  await ca.issue("server", "gateway", ["--dns", "localhost", "--ip", "127.0.0.1"]);
  await ca.issue("client", "alice", ["--uri", "spiffe://acme.test/user/alice"]);
  upstream = createServer((req, res) => {
    const wait = Number(new URL(req.url ?? "/", "http://x").searchParams.get("wait") ?? 0);
    setTimeout(
      () => res.end(`hello ${req.headers["x-client-identity"] ? "with identity" : "anonymous"}`),
      wait,
    );
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  upstreamPort = (upstream.address() as AddressInfo).port;
});

after(() => {
  upstream?.close();
  cleanup?.();
});

const gatewayArgs = (extra: string[]) => [
  CLI,
  "gateway",
  "--listen",
  "127.0.0.1:0",
  ...ca.flags("gateway"),
  "--route",
  `/=http://127.0.0.1:${upstreamPort}`,
  "--allow-uri",
  "spiffe://acme.test/user/*",
  "--status",
  "127.0.0.1:0",
  "--log-level",
  "warn",
  ...extra,
];

describe("mtls gateway --workers", () => {
  it("serves from two workers, replaces a killed one, sums metrics, drains on SIGTERM", async () => {
    const bg = await startBackground(process.execPath, gatewayArgs(["--workers", "2"]), {
      cwd: dir,
      ready: /mtls: gateway listening on .*\n/,
      timeoutMs: 30_000,
    });
    try {
      const m = /listening on 127\.0\.0\.1:(\d+): .*; 2 workers; status on 127\.0\.0\.1:(\d+)/.exec(
        bg.output(),
      );
      assert.ok(m, bg.output());
      const [port, status] = [Number(m[1]), Number(m[2])];
      const get = (path: string) =>
        curl([
          ...ca.curlFlags("alice"),
          "--resolve",
          `localhost:${port}:127.0.0.1`,
          "-w",
          "\n%{http_code}",
          `https://localhost:${port}${path}`,
        ]);
      for (let i = 0; i < 4; i++) {
        const r = await get("/");
        assert.equal(r.stdout, "hello with identity\n200", r.stderr);
      }
      const workers = workersOf(bg.child.pid as number);
      assert.equal(workers.length, 2, "two workers");
      const metrics = (await curl([`http://127.0.0.1:${status}/metrics`])).stdout;
      const served = metrics
        .split("\n")
        .filter((l) => l.startsWith("mtls_gateway_requests_total{") && l.includes('status="200"'))
        .reduce((sum, l) => sum + Number(l.split(" ").at(-1)), 0);
      assert.equal(served, 4, "requests counted over both workers");
      assert.equal(metricValue(metrics, "mtls_workers_listening"), 2);
      assert.equal(
        (await curl([`http://127.0.0.1:${status}/readyz`])).stdout.split(";")[0],
        "2 of 2 workers ready",
      );

      process.kill(workers[0] as number, "SIGKILL");
      await waitFor(
        async () =>
          metricValue(
            (await curl([`http://127.0.0.1:${status}/metrics`])).stdout,
            "mtls_workers_listening",
          ) === 2 && !workersOf(bg.child.pid as number).includes(workers[0] as number),
        15_000,
        "a new worker in place of the killed one",
        bg.output,
      );
      assert.equal((await get("/")).stdout, "hello with identity\n200");

      // A request in flight when SIGTERM arrives is answered; then the whole group exits 0.
      const slow = get("/?wait=700");
      await new Promise((r) => setTimeout(r, 300));
      bg.child.kill("SIGTERM");
      assert.equal((await slow).stdout, "hello with identity\n200");
      assert.equal(await bg.exited, 0);
      assert.deepEqual(workersOf(bg.child.pid as number), []);
    } finally {
      await stopChild(bg.child, 0, "SIGKILL");
    }
  });

  it("bad files and flags fail once, with one line", async () => {
    const missing = join(dir, "missing.key");
    const res = await mtls(
      gatewayArgs(["--workers", "3"])
        .slice(1)
        .map((a) => (a.endsWith("gateway.key") ? missing : a)),
      { cwd: dir },
    );
    // The same line as without --workers, once, although three workers failed.
    assertCliError(res, 1, /not found: .*missing\.key/);
    assertCliError(await mtls(gatewayArgs(["--workers", "0"]).slice(1), { cwd: dir }), 2, /--workers "0"/);
  });
});
