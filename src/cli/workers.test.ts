import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parseWorkers } from "./workers.js";

const PEER = resolve(dirname(fileURLToPath(import.meta.url)), "../../test/fixtures/workers-peer.ts");
const dir = mkdtempSync(join(tmpdir(), "mtls-workers-"));
after(() => rmSync(dir, { recursive: true, force: true }));

interface Peer {
  child: ChildProcess;
  port: number;
  statusPort: number;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Starts the fixture's primary; resolves once every worker listens (or rejects with its stderr). */
function startPeer(workers: number, failFlag?: string): Promise<Peer> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", PEER, String(workers), ...(failFlag ? [failFlag] : [])],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  let err = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    err += d;
  });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return new Promise((resolvePeer, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`no ready line within 30 s: ${err}`));
    }, 30_000);
    child.stdout?.on("data", () => {
      const m = /ready (\d+) (\d+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      resolvePeer({ child, port: Number(m[1]), statusPort: Number(m[2]), stderr: () => err, exited });
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`exited ${code} before ready`), { code, stderr: err }));
    });
  });
}

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolveGet, reject) => {
    const req = request({ host: "127.0.0.1", port, path, agent: false, timeout: 10_000 }, (res) => {
      let body = "";
      res.on("data", (c) => {
        body += c;
      });
      res.on("end", () => resolveGet({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

/** Live children of `pid` running the fixture (the workers; not tsx's esbuild), from /proc. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(f[1]) !== pid || f[0] === "Z") continue;
      if (readFileSync(`/proc/${e}/cmdline`, "utf8").includes("workers-peer")) out.push(Number(e));
    } catch {}
  }
  return out.sort();
}

async function until<T>(what: string, fn: () => T | undefined | false, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const metric = (text: string, name: string): number | undefined => {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : undefined;
};

describe("parseWorkers", () => {
  it("takes a whole number from 1, or auto", () => {
    assert.equal(parseWorkers("1"), 1);
    assert.equal(parseWorkers("4"), 4);
    assert.ok(parseWorkers("auto") >= 1);
    for (const bad of ["0", "-1", "1.5", "two", "", "5000"]) {
      assert.throws(() => parseWorkers(bad), { code: "E_USAGE" }, bad);
    }
  });
});

describe("runWorkers (real forked workers)", () => {
  it("serves from every worker, sums their metrics, restarts a killed one, reloads on SIGHUP, drains on SIGTERM", async () => {
    const peer = await startPeer(2);
    try {
      const workers = childrenOf(peer.child.pid as number);
      assert.equal(workers.length, 2, "two workers forked");
      for (let i = 0; i < 6; i++) assert.equal((await get(peer.port, "/pid")).status, 200);

      const metrics = (await get(peer.statusPort, "/metrics")).body;
      assert.equal(metric(metrics, "peer_requests_total"), 6, "requests summed over the workers");
      assert.equal(metric(metrics, "mtls_workers_listening"), 2);
      assert.equal((await get(peer.statusPort, "/healthz")).status, 200);
      const ready = await get(peer.statusPort, "/readyz");
      assert.equal(ready.status, 200);
      assert.match(ready.body, /^2 of 2 workers ready; pid \d+/);

      // A worker dies: another takes its place, and the service never stops answering.
      process.kill(workers[0] as number, "SIGKILL");
      const replaced = await until("a new worker", () => {
        const now = childrenOf(peer.child.pid as number);
        return now.length === 2 && !now.includes(workers[0] as number) && now;
      });
      assert.ok(replaced.includes(workers[1] as number), "the other worker was left alone");
      const listening = async () => {
        for (const end = Date.now() + 15_000; Date.now() < end; ) {
          const text = (await get(peer.statusPort, "/metrics")).body;
          if (metric(text, "mtls_workers_listening") === 2) return text;
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error("the new worker never listened");
      };
      assert.equal(metric(await listening(), "mtls_worker_restarts_total"), 1);
      assert.equal((await get(peer.port, "/pid")).status, 200);
      assert.match(peer.stderr(), /worker died; starting another/);

      // SIGHUP reaches every worker once.
      peer.child.kill("SIGHUP");
      let reloads = 0;
      for (const end = Date.now() + 10_000; Date.now() < end && reloads < 2; ) {
        await new Promise((r) => setTimeout(r, 50));
        reloads = metric((await get(peer.statusPort, "/metrics")).body, "peer_reloads_total") ?? 0;
      }
      await new Promise((r) => setTimeout(r, 200));
      reloads = metric((await get(peer.statusPort, "/metrics")).body, "peer_reloads_total") ?? 0;
      assert.equal(reloads, 2, "each worker reloaded once");

      // SIGTERM: a request in flight finishes, then everything exits 0.
      const slow = get(peer.port, "/slow?ms=800");
      await new Promise((r) => setTimeout(r, 200));
      peer.child.kill("SIGTERM");
      const answer = await slow;
      assert.equal(answer.status, 200, "the request in flight was answered");
      assert.equal(await peer.exited, 0);
      assert.deepEqual(childrenOf(peer.child.pid as number), []);
      await assert.rejects(get(peer.port, "/pid"), /ECONNREFUSED/);
    } finally {
      peer.child.kill("SIGKILL");
    }
  });

  it("fails once, with the workers' one-line error, when they cannot start", async () => {
    const flag = join(dir, "fail-now");
    writeFileSync(flag, "");
    const err = (await startPeer(3, flag).then(
      () => assert.fail("should not start"),
      (e: { code: number; stderr: string }) => e,
    )) as { code: number; stderr: string };
    assert.equal(err.code, 1);
    const lines = err.stderr.split("\n").filter((l) => l.startsWith("mtls:"));
    assert.deepEqual(lines, [`mtls: cannot open ${flag}`]);
  });

  it("gives up, exiting non-zero, when restarted workers keep failing to start", async () => {
    const flag = join(dir, "fail-later");
    const peer = await startPeer(2, flag);
    try {
      writeFileSync(flag, "");
      const [first] = childrenOf(peer.child.pid as number);
      process.kill(first as number, "SIGKILL");
      const code = await Promise.race([
        peer.exited,
        new Promise((r) => setTimeout(() => r("still running"), 20_000)),
      ]);
      assert.equal(code, 1);
      assert.match(peer.stderr(), /mtls: peer workers failed to start 5 times in a row: cannot open /);
      assert.deepEqual(childrenOf(peer.child.pid as number), []);
    } finally {
      peer.child.kill("SIGKILL");
    }
  });
});
