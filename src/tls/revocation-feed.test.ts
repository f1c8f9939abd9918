import assert from "node:assert/strict";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import {
  type FeedServer,
  openStream,
  readyEvent,
  revokedEvent,
  startFeedServer as startFixture,
} from "../../test/fixtures/feed.js";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { statePaths } from "../config/state.js";
import { isMtlsError } from "../errors.js";
import { type CertInfo, parseCertificates } from "../pki/index.js";
import { makeSan } from "../pki/names.js";
import { createRevocationChecker } from "./revocation.js";
import {
  type FeedRevocation,
  type FeedTransition,
  feedStreamUrl,
  RevocationFeedClient,
  type RevocationFeedOptions,
} from "./revocation-feed.js";
import { type SseEvent, SseParser } from "./sse.js";

// ---------------------------------------------------------------------------------------------
// A small HTTPS server speaking the feed's wire format, driven by each test.

let pki: TestPki;
let serverFiles: IssuedFiles;
let anchors: string;
let otherAnchors: string;

before(async () => {
  pki = await createTestPki("mtls-feed-");
  serverFiles = await pki.issue("server", "feed-server", {
    sans: [makeSan("dns", "localhost"), makeSan("ip", "127.0.0.1")],
  });
  anchors = readFileSync(serverFiles.ca, "utf8");
  otherAnchors = readFileSync((await pki.issue("client", "evil", { other: true })).ca, "utf8");
});

const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  await pki?.close();
});

async function startFeedServer(files: IssuedFiles = serverFiles): Promise<FeedServer> {
  const fs = await startFixture(files);
  // Nothing but the open stream unless a test says otherwise.
  fs.handler = (_req, res) => openStream(res);
  cleanups.push(() => fs.close());
  return fs;
}

function feedClient(url: string, over: Partial<RevocationFeedOptions> = {}) {
  const errors: Error[] = [];
  const updates: FeedRevocation[] = [];
  const statuses: FeedTransition[] = [];
  const client = new RevocationFeedClient({
    url,
    anchors,
    onError: (e) => errors.push(e),
    minBackoffMs: 20,
    maxBackoffMs: 200,
    ...over,
  });
  client.on("update", (r: FeedRevocation) => updates.push(r));
  client.on("status", (t: FeedTransition) => statuses.push(t));
  cleanups.push(() => client.close());
  client.start();
  return { client, errors, updates, statuses };
}

const revoked = revokedEvent;
const ready = readyEvent;

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------

describe("SseParser", () => {
  const parse = (chunks: (string | Buffer)[]) => {
    const events: SseEvent[] = [];
    const comments: string[] = [];
    const retries: number[] = [];
    const p = new SseParser({
      onEvent: (e) => events.push(e),
      onComment: (c) => comments.push(c),
      onRetry: (ms) => retries.push(ms),
    });
    for (const c of chunks) p.push(c);
    return { events, comments, retries, parser: p };
  };
  const stream =
    ': keep-alive\r\nid: 7\r\nevent: revoked\r\ndata: {"a":\r\ndata:  1}\r\n\r\nretry: 1500\nevent: ready\ndata: x\n\n';

  test("CRLF and LF, comments, multi-line data, id, retry", () => {
    const { events, comments, retries, parser } = parse([stream]);
    assert.deepEqual(events, [
      { event: "revoked", data: '{"a":\n 1}', id: "7" },
      { event: "ready", data: "x", id: "7" },
    ]);
    assert.deepEqual(comments, [" keep-alive"]);
    assert.deepEqual(retries, [1500]);
    assert.equal(parser.lastEventId, "7");
  });

  test("the same stream split at every byte gives the same events", () => {
    const bytes = Buffer.from(stream);
    const whole = parse([stream]).events;
    const split = parse([...bytes].map((b) => Buffer.from([b]))).events;
    assert.deepEqual(split, whole);
    // And split in two at every position, CR and LF of a CRLF in different chunks included.
    for (let i = 1; i < bytes.length; i++) {
      assert.deepEqual(parse([bytes.subarray(0, i), bytes.subarray(i)]).events, whole, `split at ${i}`);
    }
  });

  test("lone CR line ends, a UTF-8 character split across chunks, no dispatch without data", () => {
    const utf8 = Buffer.from("data: Zoë\r\r");
    const at = utf8.indexOf(0xc3) + 1; // inside "ë"
    const { events } = parse([
      "event: nothing\n\n",
      "id: 3\n\n",
      utf8.subarray(0, at),
      utf8.subarray(at),
      "data\n\n",
    ]);
    assert.deepEqual(events, [
      { event: "message", data: "Zoë", id: "3" },
      { event: "message", data: "", id: "3" },
    ]);
  });

  test("a line without end larger than the limit is refused (E_BAD_INPUT)", () => {
    const p = new SseParser({ onEvent: () => undefined }, { maxBytes: 64 });
    assert.throws(
      () => p.push("data: ".padEnd(100, "x")),
      (e: unknown) => isMtlsError(e, "E_BAD_INPUT"),
    );
    const q = new SseParser({ onEvent: () => undefined }, { maxBytes: 64 });
    assert.throws(
      () => q.push("data: 0123456789012345678901234567890123456789\n".repeat(3)),
      (e: unknown) => isMtlsError(e, "E_BAD_INPUT"),
    );
  });
});

describe("feedStreamUrl", () => {
  test("adds the stream path to a bare origin, keeps a full URL", () => {
    assert.equal(
      feedStreamUrl("https://ca.acme.test:8443").href,
      "https://ca.acme.test:8443/v1/revocations/stream",
    );
    assert.equal(feedStreamUrl("https://ca.acme.test/").href, "https://ca.acme.test/v1/revocations/stream");
    assert.equal(feedStreamUrl("https://ca.acme.test/x/feed").href, "https://ca.acme.test/x/feed");
    assert.equal(feedStreamUrl("http://127.0.0.1:9/").href, "http://127.0.0.1:9/v1/revocations/stream");
    assert.equal(feedStreamUrl("http://[::1]:9").href, "http://[::1]:9/v1/revocations/stream");
  });

  test("refuses non-URLs, other schemes and plain http off loopback (E_USAGE)", () => {
    for (const bad of [
      "ca.acme.test",
      "ftp://ca.acme.test",
      "http://ca.acme.test",
      "https://u:p@ca.acme.test",
    ]) {
      assert.throws(
        () => feedStreamUrl(bad),
        (e: unknown) => isMtlsError(e, "E_USAGE") && !e.message.includes("\n"),
        bad,
      );
    }
  });
});

describe("RevocationFeedClient", () => {
  test("snapshot, ready, then live events; lookup by serial and issuer serial", async () => {
    const srv = await startFeedServer();
    srv.handler = (req, res) => {
      openStream(res);
      res.write(`id: 1\n${revoked("00AB01")}`);
      res.write(`id: 2\n${revoked("cd02", { issuerSerial: "0F" })}`);
      res.write(`id: 2\n${ready(2)}`);
      assert.equal(req.headers.accept, "text/event-stream");
    };
    const { client, updates, statuses } = feedClient(srv.url);
    assert.equal(client.state().stale, true, "stale before the first ready");
    await until(() => client.state().current, 3000, "ready");
    const st = client.state();
    assert.equal(st.connected, true);
    assert.equal(st.stale, false);
    assert.equal(st.revocations, 2);
    assert.ok(st.lastContactAt instanceof Date);
    assert.deepEqual(
      statuses.map((s) => s.kind),
      ["connected", "fresh"],
    );
    assert.equal(srv.requests[0]?.url, "/v1/revocations/stream");
    assert.equal(srv.requests[0]?.headers["last-event-id"], undefined);

    assert.equal(client.lookup("ab01")?.name, "alice");
    assert.equal(client.lookup("AB01", "99")?.serial, "ab01", "issuer unknown to the feed: matches");
    assert.equal(client.lookup("cd02", "f")?.issuerSerial, "f");
    assert.equal(client.lookup("cd02", "10"), undefined, "another issuer's certificate with that serial");
    assert.equal(client.lookup("cd02")?.serial, "cd02", "issuer unknown to the caller: matches");
    assert.equal(client.lookup("ef03"), undefined);

    // Live: a new one is an update; the same again (a replay) is not.
    srv.send(`id: 3\n${revoked("ef03")}`);
    srv.send(`id: 4\n${revoked("ef03")}`);
    srv.send(": keep-alive\n\n");
    await until(() => updates.length === 3, 2000, "live update");
    await sleep(50);
    assert.equal(updates.length, 3);
    assert.equal(updates[2]?.serial, "ef03");
    assert.equal(updates[2]?.revokedAt.toISOString(), "2030-01-01T00:00:00.000Z");
    assert.equal(client.state().revocations, 3);
    assert.equal(client.state().received, 3);
  });

  test("resumes with Last-Event-ID after the server drops the stream", async () => {
    const srv = await startFeedServer();
    srv.handler = (req, res, n) => {
      openStream(res);
      if (n === 1) {
        res.write(`id: 1\n${revoked("a1")}id: 2\n${ready(2)}`);
      } else {
        // Only what came after the client's last id.
        assert.equal(req.headers["last-event-id"], "3");
        res.write(`id: 4\n${revoked("a4")}id: 4\n${ready(4)}`);
      }
    };
    const { client, updates, statuses } = feedClient(srv.url);
    await until(() => client.state().current, 3000, "first ready");
    srv.send(`id: 3\n${revoked("a3")}`);
    await until(() => updates.length === 2, 2000, "live event");
    srv.drop();
    await until(() => srv.requests.length === 2 && client.state().current, 3000, "resumed");
    assert.equal(srv.requests[1]?.headers["last-event-id"], "3");
    await until(() => updates.length === 3, 2000, "missed event");
    assert.deepEqual(
      updates.map((u) => u.serial),
      ["a1", "a3", "a4"],
    );
    // Not pruned: a resumed stream is no snapshot.
    assert.equal(client.state().revocations, 3);
    assert.deepEqual(
      statuses.map((s) => s.kind),
      ["connected", "fresh", "down", "stale", "connected", "fresh"],
    );
  });

  test("a fresh snapshot (no ids: nothing to resume from) drops what the server no longer lists", async () => {
    const srv = await startFeedServer();
    srv.handler = (_req, res, n) => {
      openStream(res);
      res.write(n === 1 ? `${revoked("b1")}${revoked("b2")}${ready(0)}` : `${revoked("b2")}${ready(0)}`);
    };
    const { client } = feedClient(srv.url);
    await until(() => client.state().revocations === 2, 3000, "first snapshot");
    srv.drop();
    await until(() => srv.requests.length === 2 && client.state().current, 3000, "second snapshot");
    assert.equal(srv.requests[1]?.headers["last-event-id"], undefined);
    assert.equal(client.state().revocations, 1);
    assert.equal(client.lookup("b1"), undefined);
    assert.ok(client.lookup("b2"));
  });

  test("goes stale after silence, drops the silent stream, and recovers", async () => {
    const srv = await startFeedServer();
    let beat: NodeJS.Timeout | undefined;
    cleanups.push(() => clearInterval(beat));
    srv.handler = (_req, res, n) => {
      openStream(res);
      res.write(ready(0, 100));
      // The first stream falls silent; the second one keeps alive.
      if (n === 2) beat = setInterval(() => res.write(": keep-alive\n\n"), 50);
    };
    const { client, statuses, errors } = feedClient(srv.url, { staleAfterMs: 300 });
    await until(() => client.state().current, 3000, "ready");
    assert.equal(client.state().stale, false);
    await until(() => client.state().stale, 2000, "stale after silence");
    // And the silent stream is dropped as a failure (then a new one is opened).
    await until(() => errors.some((e) => /silent for more than/.test(e.message)), 2000, "silence reported");
    await until(() => srv.requests.length >= 2 && !client.state().stale, 3000, "fresh again");
    // Still fresh well past the stale limit: keep-alives count as contact.
    await sleep(600);
    const st = client.state();
    assert.equal(st.stale, false);
    assert.equal(st.connected, true);
    assert.equal(srv.requests.length, 2);
    assert.deepEqual(
      statuses.map((s) => s.kind),
      ["connected", "fresh", "down", "stale", "connected", "fresh"],
    );
  });

  test("a server certificate from another CA: not connected, onError, retried", async () => {
    const srv = await startFeedServer();
    const { client, errors, statuses } = feedClient(srv.url, { anchors: otherAnchors });
    await until(() => errors.length > 0, 3000, "TLS error");
    await sleep(300);
    const st = client.state();
    assert.equal(st.connected, false);
    assert.equal(st.stale, true);
    assert.match(st.lastError ?? "", /certificate|verify|issuer/i);
    assert.equal(srv.requests.length, 0, "no request got through");
    // Reported once, not at every retry; one "down" for the outage.
    assert.equal(errors.length, 1);
    assert.deepEqual(
      statuses.map((s) => s.kind),
      ["down"],
    );
  });

  test("the host name is checked: our CA's certificate for another name does not pass", async () => {
    const srv = await startFeedServer();
    srv.handler = (_req, res) => {
      openStream(res);
      res.write(ready(0));
    };
    const port = new URL(srv.url).port;
    const byIp = feedClient(`https://127.0.0.1:${port}`);
    await until(() => byIp.client.state().current, 3000, "by IP SAN");
    const elsewhere = await pki.issue("server", "feed-elsewhere", {
      sans: [makeSan("dns", "feed.acme.test")],
    });
    const other = await startFeedServer(elsewhere);
    const bad = feedClient(other.url);
    await until(() => bad.errors.length > 0, 3000, "name error");
    assert.equal(bad.client.state().connected, false);
    assert.match(bad.errors[0]?.message ?? "", /ALTNAME|does not match|not in the cert/i);
    assert.equal(other.requests.length, 0);
  });

  test("garbage from the server: no crash, reported, and the feed keeps working", async () => {
    const srv = await startFeedServer();
    srv.handler = (_req, res, n) => {
      if (n === 1) {
        res.writeHead(200, { "content-type": "text/html" });
        res.end("<html>not a feed</html>");
        return;
      }
      openStream(res);
      if (n === 2) {
        res.write(
          `event: revoked\ndata: {not json\n\nevent: revoked\ndata: {"serial":"zz","revokedAt":"2030-01-01T00:00:00Z"}\n\n` +
            `event: revoked\ndata: {"serial":"aa","revokedAt":"yesterday"}\n\nevent: revoked\ndata: [1]\n\n` +
            `\u0000\u0001\u00ff binary \r\n\n`,
        );
        res.write(`id: 9\n${revoked("c1")}${ready(9)}`);
        // Then a line that never ends, past the parser's limit: the stream is dropped.
        res.write("data: ".padEnd(1_100_000, "x"));
      } else {
        res.write(`id: 10\n${revoked("c2")}${ready(10)}`);
      }
    };
    const { client, errors, updates } = feedClient(srv.url);
    await until(() => srv.requests.length >= 3 && client.state().current, 5000, "third stream ready");
    assert.deepEqual(
      updates.map((u) => u.serial),
      ["c1", "c2"],
    );
    const messages = errors.map((e) => e.message).join("\n");
    assert.match(messages, /HTTP 200 text\/html/);
    assert.match(messages, /malformed revoked event: not JSON/);
    assert.match(messages, /no hex serial/);
    assert.match(messages, /no valid revokedAt/);
    assert.match(messages, /longer than/);
    assert.equal(srv.requests[2]?.headers["last-event-id"], "9");
  });

  test("unreachable at start: keeps retrying without throwing, connects when the server comes", async () => {
    const srv = await startFeedServer();
    const port = new URL(srv.url).port;
    await srv.close();
    const { client, statuses } = feedClient(`https://localhost:${port}`);
    await sleep(300);
    assert.equal(client.state().connected, false);
    assert.deepEqual(
      statuses.map((s) => s.kind),
      ["down"],
    );
    assert.match(client.state().lastError ?? "", /ECONNREFUSED/);
    client.close();
  });
});

// ---------------------------------------------------------------------------------------------

describe("RevocationChecker with a feed", () => {
  let alice: IssuedFiles;
  let leaf: CertInfo;
  let issuer: CertInfo;
  before(async () => {
    alice = await pki.issue("client", "feed-alice");
    [leaf, issuer] = parseCertificates(readFileSync(alice.cert)) as [CertInfo, CertInfo];
  });

  test("check() says revoked from the feed (before CRL/OCSP) and 'update' fires", async () => {
    const srv = await startFeedServer();
    srv.handler = (_req, res) => {
      openStream(res);
      res.write(ready(0));
    };
    const checker = await createRevocationChecker({ feed: { url: srv.url, anchors } });
    cleanups.push(() => checker.close());
    await until(() => checker.feedState?.()?.current === true, 3000, "feed ready");
    assert.deepEqual(await checker.check(leaf, issuer), { status: "unknown", source: "none" });
    const update = once(checker, "update");
    srv.send(
      `id: 1\n${revoked(leaf.serial.toUpperCase(), { issuerSerial: issuer.serial, reason: "keyCompromise" })}`,
    );
    const [info] = (await Promise.race([update, sleep(2000).then(() => [undefined])])) as [unknown];
    assert.deepEqual(info, { source: `feed:${srv.url}` });
    const st = await checker.check(leaf, issuer);
    assert.equal(st.status, "revoked");
    assert.equal(st.source, `feed:${srv.url}`);
    assert.equal(st.reason, "keyCompromise");
    assert.equal(st.revokedAt?.toISOString(), "2030-01-01T00:00:00.000Z");
    // Without the issuer (a resumed session the IssuerBook could not complete), still revoked.
    assert.equal((await checker.check(leaf, undefined)).status, "revoked");
    const fs = checker.feedState?.();
    assert.equal(fs?.revocations, 1);
    assert.equal(fs?.stale, false);
  });

  test("feed down: the CRL still applies, the start is not held up, feedState says stale", async () => {
    const bob = await pki.issue("client", "feed-bob");
    const [bobLeaf] = parseCertificates(readFileSync(bob.cert)) as [CertInfo];
    await pki.ca.revoke([bobLeaf.serial], "keyCompromise", "test");
    const srv = await startFeedServer();
    const port = new URL(srv.url).port;
    await srv.close();
    const t0 = Date.now();
    const checker = await createRevocationChecker({
      crl: [statePaths(pki.state).crl],
      feed: { url: `https://localhost:${port}`, anchors },
    });
    cleanups.push(() => checker.close());
    assert.ok(Date.now() - t0 < 1000, "start not held up by the feed");
    const st = await checker.check(bobLeaf, issuer);
    assert.equal(st.status, "revoked");
    assert.match(st.source, /^crl:/);
    assert.equal((await checker.check(leaf, issuer)).status, "good");
    const fs = checker.feedState?.();
    assert.equal(fs?.connected, false);
    assert.equal(fs?.stale, true);
  });

  test("a large snapshot: every serial held once, and a handful of 'update's, not one per serial", async () => {
    const N = 20_000;
    const serial = (i: number) => (0x1000000 + i).toString(16);
    const srv = await startFeedServer();
    srv.handler = (_req, res) => {
      openStream(res);
      let text = "";
      // Each one twice (a duplicate must not be held twice).
      for (let i = 0; i < N; i++) text += revoked(serial(i)) + revoked(serial(i));
      res.write(`${text}id: ${N}\n${ready(N)}`);
    };
    const checker = await createRevocationChecker({ feed: { url: srv.url, anchors } });
    cleanups.push(() => checker.close());
    let updates = 0;
    checker.on("update", () => updates++);
    await until(() => checker.feedState?.()?.current === true, 10_000, "snapshot loaded");
    assert.equal(checker.feedState?.()?.revocations, N);
    await sleep(20);
    assert.ok(updates >= 1 && updates < 60, `${updates} updates for ${N} revocations`);
    const leafLike = { ...leaf, serial: serial(N - 1) };
    assert.equal((await checker.check(leafLike, issuer)).status, "revoked");
  });

  test("a bad feed URL fails the start with one E_USAGE line", async () => {
    await assert.rejects(
      createRevocationChecker({ feed: { url: "http://ca.acme.test", anchors } }),
      (e: unknown) => isMtlsError(e, "E_USAGE"),
    );
  });
});
