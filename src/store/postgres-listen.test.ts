import assert from "node:assert/strict";
import { createServer } from "node:net";
import { test } from "node:test";
import { listenWithReconnect } from "./postgres-listen.js";
import type { RevocationWatchState } from "./types.js";

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

test("retries a connection that fails with doubling delays up to the cap, and stops on close", async () => {
  const port = await closedPort();
  const states: { at: number; s: RevocationWatchState }[] = [];
  let wakes = 0;
  const watch = await listenWithReconnect({
    client: { host: "127.0.0.1", port, user: "nobody", database: "none", connectionTimeoutMillis: 1000 },
    channel: "mtls_revoked_test",
    onWake: () => wakes++,
    onState: (s) => states.push({ at: performance.now(), s }),
    minDelayMs: 50,
    maxDelayMs: 200,
  });
  // The first attempt has failed by the time it resolves.
  assert.equal(states.length, 1);
  assert.equal(states[0]?.s.connected, false);
  assert.match(String(states[0]?.s.error?.message), /ECONNREFUSED/);
  const deadline = performance.now() + 3000;
  while (states.length < 6 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await watch.close();
  const count = states.length;
  assert.ok(count >= 6, `${count} attempts`);
  const gaps = states.slice(1, 6).map((x, i) => x.at - (states[i] as { at: number }).at);
  // 50, 100, 200, 200, 200 ms (plus the time a refused connect takes).
  const wanted = [50, 100, 200, 200, 200];
  gaps.forEach((g, i) => {
    const w = wanted[i] as number;
    assert.ok(g >= w - 5 && g < w + 150, `gap ${i}: ${g.toFixed(0)} ms, wanted about ${w} (${gaps})`);
  });
  assert.ok(states.every((x) => !x.s.connected));
  assert.equal(wakes, 0, "no wake without a connection");
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(states.length, count, "no attempt after close()");
});

test("refuses a channel name PostgreSQL would need quoted", async () => {
  await assert.rejects(
    listenWithReconnect({ client: {}, channel: "bad; drop table x", onWake: () => {} }),
    /bad channel name/,
  );
});
