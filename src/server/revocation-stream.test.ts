/**
 * GET /v1/revocations/stream on a real `mtls ca serve` (in process, SQLite): the wire format H2's
 * client reads (docs/api.md "Revocation stream"), resume points, live events, heartbeats, limits,
 * metrics and shutdown.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import type { IncomingHttpHeaders } from "node:http";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { initCa } from "../ca/index.js";
import { type StatePaths, statePaths } from "../config/state.js";
import { createLogger } from "../observe/index.js";
import { type RunningCaServer, startCaServer } from "./serve.js";

interface SseEvent {
  event?: string;
  data?: string;
  id?: string;
  retry?: string;
  comment?: string;
}

interface Stream {
  status: number;
  headers: IncomingHttpHeaders;
  /** Every block received so far, in order. */
  events: SseEvent[];
  /** Resolves with the first block (from index `from` on) that matches, or rejects after `ms`. */
  next(match: (e: SseEvent) => boolean, ms: number, from?: number): Promise<SseEvent>;
  /** Resolves when the server ends the stream. */
  ended: Promise<void>;
  /** The raw body so far. */
  raw(): string;
  close(): void;
}

function parseBlock(block: string): SseEvent {
  const e: SseEvent = {};
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) e.comment = line.slice(1).trim();
    const m = /^(event|data|id|retry): ?(.*)$/.exec(line);
    if (m) e[m[1] as "event" | "data" | "id" | "retry"] = m[2] as string;
  }
  return e;
}

function openStream(url: string, ca: string, headers: Record<string, string> = {}): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, headers, agent: false }, (res) => {
      let raw = "";
      let pending = "";
      const events: SseEvent[] = [];
      const waiters = new Set<() => void>();
      const ended = new Promise<void>((r) => {
        res.on("end", r);
        res.on("close", r);
        res.on("error", () => r());
      });
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        raw += chunk;
        pending += chunk;
        let at = pending.indexOf("\n\n");
        while (at >= 0) {
          events.push(parseBlock(pending.slice(0, at)));
          pending = pending.slice(at + 2);
          at = pending.indexOf("\n\n");
        }
        for (const w of waiters) w();
      });
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        events,
        ended,
        raw: () => raw,
        close: () => req.destroy(),
        next(match, ms, from = 0) {
          return new Promise((ok, fail) => {
            const check = () => {
              const found = events.slice(from).find(match);
              if (!found) return;
              waiters.delete(check);
              clearTimeout(timer);
              ok(found);
            };
            const timer = setTimeout(() => {
              waiters.delete(check);
              fail(new Error(`no matching event within ${ms} ms; got ${JSON.stringify(events)}`));
            }, ms);
            waiters.add(check);
            check();
          });
        },
      });
    });
    req.on("error", reject);
    req.end();
  });
}

function getJson(url: string, ca: string): Promise<{ status: number; body: { error: { code: string } } }> {
  return new Promise((resolve, reject) => {
    httpsRequest(url, { ca, agent: false }, (res) => {
      let body = "";
      res.on("data", (c) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(body) }));
    })
      .on("error", reject)
      .end();
  });
}

function metricsText(addr: AddressInfo): Promise<string> {
  return new Promise((resolve, reject) => {
    httpRequest({ host: "127.0.0.1", port: addr.port, path: "/metrics" }, (res) => {
      let body = "";
      res.on("data", (c) => {
        body += c;
      });
      res.on("end", () => resolve(body));
    })
      .on("error", reject)
      .end();
  });
}

const revokedData = (e: SseEvent) => JSON.parse(e.data ?? "null");

describe("GET /v1/revocations/stream", { concurrency: 1 }, () => {
  let dir = "";
  let paths: StatePaths;
  let server: RunningCaServer;
  let url = "";
  let rootPem = "";
  const HEARTBEAT_MS = 300;
  const logLines: Record<string, unknown>[] = [];

  const issueAndRevoke = async (name: string, reason: "keyCompromise" | "superseded" = "keyCompromise") => {
    const issued = await server.ca.issue({ profile: "client", name, sans: [], actor: "test" });
    const [revoked] = await server.ca.revoke([issued.record.serial], reason, "test");
    assert.ok(revoked?.revokedAt);
    return { ...revoked, revokedAt: revoked.revokedAt };
  };

  before(async () => {
    dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "mtls-stream-"));
    paths = statePaths(join(dir, "state"));
    await initCa({ paths, name: "Acme", passphrase: "test", actor: "test", admin: false });
    server = await startCaServer({
      paths,
      listen: "127.0.0.1:0",
      publicListen: null,
      status: "127.0.0.1:0",
      env: { MTLS_PASSPHRASE: "test" },
      logger: createLogger({
        level: "info",
        destination: { write: (line: string) => logLines.push(JSON.parse(line)) },
      }),
      revocationFeed: { heartbeatMs: HEARTBEAT_MS, maxStreams: 3 },
    });
    url = `${server.api.url}/v1/revocations/stream`;
    rootPem = readFileSync(paths.rootCert, "utf8");
  });
  after(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("with no revocations: retry, then ready with the current seq, without a client certificate", async () => {
    const s = await openStream(url, rootPem);
    try {
      assert.equal(s.status, 200);
      assert.equal(s.headers["content-type"], "text/event-stream; charset=utf-8");
      assert.equal(s.headers["cache-control"], "no-store");
      assert.equal(s.headers["x-accel-buffering"], "no");
      const ready = await s.next((e) => e.event === "ready", 2000);
      assert.ok(s.raw().startsWith("retry: 1000\n"), s.raw());
      const seq = await server.ca.store.lastAuditSeq();
      assert.deepEqual(JSON.parse(ready.data ?? ""), { seq, heartbeatMs: HEARTBEAT_MS });
      assert.equal(ready.id, String(seq));
      assert.deepEqual(
        s.events.filter((e) => e.event === "revoked"),
        [],
      );
    } finally {
      s.close();
    }
  });

  it("without a resume point sends a snapshot of the revoked leaves, the last one with the snapshot's seq", async () => {
    const a = await issueAndRevoke("snap-a");
    const b = await issueAndRevoke("snap-b", "superseded");
    const s = await openStream(url, rootPem);
    try {
      const ready = await s.next((e) => e.event === "ready", 2000);
      const seq = await server.ca.store.lastAuditSeq();
      const revoked = s.events.filter((e) => e.event === "revoked");
      assert.deepEqual(
        revoked.map(revokedData).sort((x, y) => (x.name < y.name ? -1 : 1)),
        [
          {
            serial: a.serial,
            issuerSerial: server.ca.intermediate.serial,
            revokedAt: a.revokedAt.toISOString(),
            reason: "keyCompromise",
            name: "snap-a",
          },
          {
            serial: b.serial,
            issuerSerial: server.ca.intermediate.serial,
            revokedAt: b.revokedAt.toISOString(),
            reason: "superseded",
            name: "snap-b",
          },
        ],
      );
      assert.deepEqual(
        revoked.map((e) => e.id),
        [undefined, String(seq)],
      );
      assert.equal(ready.id, String(seq));
      assert.equal(JSON.parse(ready.data ?? "").seq, seq);
    } finally {
      s.close();
    }
  });

  it("with Last-Event-ID (or ?after=) sends every revocation after that seq, each with its seq as id", async () => {
    const from = await server.ca.store.lastAuditSeq();
    const c = await issueAndRevoke("after-c");
    const d = await issueAndRevoke("after-d");
    const events = await server.ca.store.listAudit({ afterSeq: from, actions: ["cert.revoke"] });
    const variants: Record<string, string>[] = [{ "last-event-id": String(from) }, {}];
    for (const headers of variants) {
      const s = await openStream(headers["last-event-id"] ? url : `${url}?after=${from}`, rootPem, headers);
      try {
        const ready = await s.next((e) => e.event === "ready", 2000);
        const revoked = s.events.filter((e) => e.event === "revoked");
        assert.deepEqual(
          revoked.map((e) => [revokedData(e).serial, revokedData(e).name, e.id]),
          [
            [c.serial, "after-c", String(events[0]?.seq)],
            [d.serial, "after-d", String(events[1]?.seq)],
          ],
        );
        assert.equal(ready.id, String(await server.ca.store.lastAuditSeq()));
      } finally {
        s.close();
      }
    }
    // Last-Event-ID wins over ?after= (an EventSource reconnecting keeps its original URL).
    const s = await openStream(`${url}?after=0`, rootPem, { "last-event-id": String(events[0]?.seq) });
    try {
      await s.next((e) => e.event === "ready", 2000);
      assert.deepEqual(
        s.events.filter((e) => e.event === "revoked").map((e) => revokedData(e).serial),
        [d.serial],
      );
    } finally {
      s.close();
    }
  });

  it("answers a resume point beyond the newest event (a restored log) with a snapshot", async () => {
    const seq = await server.ca.store.lastAuditSeq();
    const s = await openStream(`${url}?after=${seq + 1000}`, rootPem);
    try {
      const ready = await s.next((e) => e.event === "ready", 2000);
      assert.equal(ready.id, String(await server.ca.store.lastAuditSeq()));
      const revoked = s.events.filter((e) => e.event === "revoked");
      assert.equal(
        revoked.length,
        (await server.ca.store.listRevoked(server.ca.intermediate.serial, new Date())).length,
      );
      assert.ok(revoked.length >= 4);
      assert.equal(revoked.at(-1)?.id, ready.id);
    } finally {
      s.close();
    }
  });

  it("refuses a resume point that is not a non-negative integer with 400 E_BAD_INPUT", async () => {
    for (const q of ["?after=abc", "?after=-1", "?after=1.5", "?after="]) {
      const res = await getJson(`${url}${q}`, rootPem);
      assert.equal(res.status, 400, q);
      assert.equal(res.body.error.code, "E_BAD_INPUT", q);
    }
  });

  it("sends a revocation made while connected within a second, and heartbeats", async () => {
    const s = await openStream(url, rootPem);
    try {
      await s.next((e) => e.event === "ready", 2000);
      const mark = s.events.length;
      const t0 = performance.now();
      const rec = await issueAndRevoke("live-e");
      const live = await s.next(
        (e) => e.event === "revoked" && revokedData(e).serial === rec.serial,
        1000,
        mark,
      );
      const ms = performance.now() - t0;
      const event = (await server.ca.store.listAudit({ actions: ["cert.revoke"] })).find(
        (e) => e.subject === rec.serial,
      );
      assert.equal(live.id, String(event?.seq));
      assert.equal(revokedData(live).name, "live-e");
      await s.next((e) => e.comment === "keep-alive", HEARTBEAT_MS * 4, mark);
      assert.match(s.raw(), /\n: keep-alive\n\n/);
      console.log(`# live revocation on the stream ${ms.toFixed(0)} ms after revoke() began`);
    } finally {
      s.close();
    }
  });

  it("counts streams and events in the metrics, and refuses streams beyond the limit with 503", async () => {
    const open = [
      await openStream(url, rootPem),
      await openStream(url, rootPem),
      await openStream(url, rootPem),
    ];
    try {
      for (const s of open) await s.next((e) => e.event === "ready", 2000);
      const refused = await getJson(url, rootPem);
      assert.equal(refused.status, 503);
      assert.equal(refused.body.error.code, "E_UNAVAILABLE");
      const text = await metricsText(server.status?.address as AddressInfo);
      assert.match(text, /^mtls_ca_revocation_streams 3$/m);
      assert.match(text, /^mtls_ca_revocation_events_sent_total\{phase="snapshot"\} [1-9]/m);
      assert.match(text, /^mtls_ca_revocation_notify_up 0$/m);
    } finally {
      for (const s of open) s.close();
    }
  });

  it("ends open streams when the server closes, without waiting for the drain time", async () => {
    const s = await openStream(url, rootPem);
    await s.next((e) => e.event === "ready", 2000);
    const t0 = performance.now();
    await server.close();
    const ms = performance.now() - t0;
    await s.ended;
    assert.ok(ms < 3000, `close took ${ms} ms (drain is 10 s)`);
    // Each stream still has its request log line, written when it ended.
    const line = logLines.find((l) => l.msg === "request" && l.ended === "server closing");
    assert.ok(line, JSON.stringify(logLines.slice(-5)));
    assert.equal(line.path, "/v1/revocations/stream");
    assert.equal(line.status, 200);
    assert.equal(line.actor, "anonymous");
    assert.equal(typeof line.ms, "number");
  });
});
