/**
 * A gateway subscribed to a CA's revocation feed (`revocationFeed`, `--revocation-feed`): a feed
 * event cuts the revoked client's open connection within 2 s (ClientAuth re-checks on "update") and
 * its next request is refused; the feed's state is in the metrics.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { Agent, request } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { type FeedServer, revokedEvent, startFeedServer } from "../../test/fixtures/feed.js";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { createRegistry, type Registry, silentLogger } from "../observe/index.js";
import { makeSan } from "../pki/names.js";
import { type BuiltGateway, buildGateway } from "./build.js";

let pki: TestPki;
let upstream: Server;
let feed: FeedServer;
let gw: BuiltGateway;
let port: number;
let ca: string;
let registry: Registry;
const certs: Record<string, IssuedFiles> = {};

function get(
  who: string,
  agent: Agent,
): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  const c = certs[who] as IssuedFiles;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path: "/api/",
        servername: "localhost",
        ca,
        cert: readFileSync(c.cert),
        key: readFileSync(c.key),
        headers: { host: "localhost" },
        agent,
      },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => {
          body += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

async function metric(series: string): Promise<number> {
  const text = await registry.metrics();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(" ")[1]) : Number.NaN;
}

async function until(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

before(async () => {
  pki = await createTestPki("mtls-gateway-feed-");
  certs.gw = await pki.issue("server", "gw", { sans: [makeSan("dns", "localhost")] });
  certs.feed = await pki.issue("server", "ca-feed", { sans: [makeSan("dns", "localhost")] });
  for (const name of ["erin", "frank"]) {
    certs[name] = await pki.issue("client", name, {
      sans: [makeSan("uri", `spiffe://acme.test/user/${name}`)],
    });
  }
  ca = readFileSync((certs.gw as IssuedFiles).ca, "utf8");
  registry = createRegistry();
  upstream = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok");
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
  feed = await startFeedServer(certs.feed as IssuedFiles);
  const g = certs.gw as IssuedFiles;
  gw = await buildGateway(
    {
      name: "gwfeed",
      listen: { host: "127.0.0.1", port: 0 },
      tls: { cert: g.cert, key: g.key, ca: g.ca },
      revocationFeed: feed.url,
      routes: [
        {
          path: "/api/",
          upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
          mode: "require",
          rules: [{ uri: ["spiffe://acme.test/user/*"] }],
        },
      ],
    },
    { logger: silentLogger(), registry },
  );
  port = ((await gw.start()) as AddressInfo).port;
});

after(async () => {
  await gw?.stop(0);
  await feed?.close();
  await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
  await pki?.close();
});

describe("gateway with --revocation-feed", () => {
  it("cuts a kept-alive connection within 2 s of a feed event and refuses the next request", async () => {
    const labels = '{component="gateway",name="gwfeed"}';
    await until(async () => (await metric(`mtls_revocation_feed_connected${labels}`)) === 1, 5000, "feed");
    assert.equal(await metric(`mtls_revocation_feed_stale${labels}`), 0);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const other = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      assert.equal((await get("erin", agent)).status, 200);
      assert.equal((await get("frank", other)).status, 200);
      const idle = Object.values(agent.freeSockets).flat()[0] as Socket;
      assert.ok(idle, "a kept-alive connection");
      const closed = new Promise<number>((r) => idle.once("close", () => r(Date.now())));
      const t0 = Date.now();
      feed.send(`id: 1\n${revokedEvent((certs.erin as IssuedFiles).certificate.serial)}`);
      const at = await Promise.race([
        closed,
        new Promise<number>((_, reject) =>
          setTimeout(() => reject(new Error("still open after 2 s")), 2_000),
        ),
      ]);
      assert.ok(at - t0 < 2000, `${at - t0} ms`);
      assert.equal(await metric('mtls_gateway_connections_cut_total{gateway="gwfeed",reason="revoked"}'), 1);
      const last = await get("erin", agent);
      assert.equal(last.status, 401);
      assert.equal((JSON.parse(last.body) as { error: { code: string } }).error.code, "E_REVOKED");
      // Frank's kept-alive connection and his requests are untouched.
      assert.equal((await get("frank", other)).status, 200);
      assert.equal(await metric(`mtls_revocation_feed_revocations_total${labels}`), 1);
    } finally {
      agent.destroy();
      other.destroy();
    }
  });
});
