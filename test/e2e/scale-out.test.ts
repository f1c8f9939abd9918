/**
 * The end-to-end proof of issue 7 with the built CLI: two `mtls ca serve` processes on one
 * PostgreSQL schema (node A made by `mtls init --store URL`, node B a copy of A's state directory
 * on the same URL), driven by concurrent HTTPS clients that create tokens, enroll, replay tokens,
 * renew and revoke, each client alternating nodes. Then: the store holds exactly what the clients
 * were told, the audit chain verifies, both nodes' CRLs list every revocation; a kill -9 of one
 * node costs its clients connection errors and nothing else; a tunnel subscribed to node B's
 * revocation feed cuts a connection within 2 s of a revocation made on node A; and a PostgreSQL
 * restart and a 2 s outage (a private cluster, never the shared server) are answered with 503s at
 * worst, after which both nodes carry on and the feed still works. Figures go to the console (with
 * console.log, so they show in the test output) for docs and reports.
 */
import assert from "node:assert/strict";
import { cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { Agent, request as httpsRequest } from "node:https";
import { connect, createServer as createTcpServer, type Server, type Socket } from "node:net";
import { availableParallelism, loadavg } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { buildCsrPem } from "../../src/pki/csr-builder.js";
import { generateKeyPair } from "../../src/pki/keys.js";
import { keyObjectSigner } from "../../src/pki/signer.js";
import { createPgCluster, type PgCluster, pgClusterUnavailable } from "../fixtures/pg-cluster.js";
import { postgresUnavailable, TEST_POSTGRES_URL, testSchemas } from "../fixtures/postgres.js";
import {
  assertOk,
  type CaServe,
  type ListRow,
  listJson,
  mtls,
  requireTool,
  run,
  startCaServe,
  tempDir,
} from "./helpers.js";
import { auditLines, sleep, startTunnel, type Tunnel, waitFor, waitForAudit } from "./peers.js";

// ---------------------------------------------------------------------------------------------
// Two CA nodes on one store.

interface CaNode {
  name: "A" | "B";
  serve: CaServe;
  /** Keep-alive connections for the admin's and anonymous requests. */
  agent: Agent;
  stateDir: string;
}

interface Cluster {
  dir: string;
  url: string;
  a: CaNode;
  b: CaNode;
  nodes: CaNode[];
  caPem: string;
  admin: Identity;
  /** `mtls ARGS --state A --store URL` in the cluster's folder. */
  cli(args: string[]): ReturnType<typeof mtls>;
}

/** A client certificate (chain PEM) and its key, to present on a request. */
interface Identity {
  cert: string;
  key: string;
}

const running: { stop(): Promise<void> }[] = [];
const folders: (() => void)[] = [];
after(async () => {
  for (const r of running.reverse()) await r.stop().catch(() => undefined);
  for (const c of folders) c();
});

/** Node A by `mtls init --store URL`, node B a copy of its state directory; both serving. */
async function startCluster(url: string, label: string): Promise<Cluster> {
  const { dir, cleanup } = tempDir(`mtls-e2e-scale-${label}-`);
  folders.push(cleanup);
  const stateA = join(dir, "a");
  const stateB = join(dir, "b");
  // No MTLS_PASSPHRASE: init generates STATE/passphrase, which travels with the copy to B.
  assertOk(
    await mtls(["init", "--name", `Scale ${label}`, "--state", stateA, "--store", url], { cwd: dir }),
    "init",
  );
  cpSync(stateA, stateB, { recursive: true });
  const start = async (name: "A" | "B", stateDir: string): Promise<CaNode> => {
    const serve = await startCaServe(dir, ["--state", stateDir, "--store", url, "--rate-limit", "0"]);
    running.push({ stop: () => serve.bg.stop() });
    const agent = new Agent({ keepAlive: true, maxSockets: 32 });
    running.push({ stop: async () => agent.destroy() });
    return { name, serve, agent, stateDir };
  };
  const [a, b] = await Promise.all([start("A", stateA), start("B", stateB)]);
  return {
    dir,
    url,
    a,
    b,
    nodes: [a, b],
    caPem: readFileSync(join(stateA, "ca", "root.crt"), "utf8"),
    admin: {
      cert: readFileSync(join(stateA, "admin", "admin.crt"), "utf8"),
      key: readFileSync(join(stateA, "admin", "admin.key"), "utf8"),
    },
    cli: (args) => mtls([...args, "--state", stateA, "--store", url], { cwd: dir }),
  };
}

// ---------------------------------------------------------------------------------------------
// HTTPS requests, classified.

interface Reply {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: the API's JSON, checked field by field by each step.
  json: any;
}

/** POST PATH to a node's API as `id` (or anonymously); rejects on a connection error or after 15 s. */
function post(c: Cluster, node: CaNode, path: string, body: unknown, id?: Identity): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(`${node.serve.api}${path}`, {
      method: "POST",
      ca: c.caPem,
      ...(id ? { cert: id.cert, key: id.key } : {}),
      // A holder's certificate is used once or twice: a connection of its own, closed after.
      agent: id && id !== c.admin ? false : node.agent,
      headers: { "content-type": "application/json" },
    });
    req.setTimeout(15_000, () => req.destroy(new Error("no answer within 15 s")));
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        text += d;
      });
      res.on("end", () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = { unparsed: text.slice(0, 200) };
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

type Op = "token" | "enroll" | "replay" | "renew" | "revoke";
/** ok: the answer expected; unavailable: 503 with a JSON error code; connection: no answer. */
type Outcome = "ok" | "unavailable" | "connection" | "wrong";

interface Sent {
  node: "A" | "B";
  op: Op;
  at: number;
  ms: number;
  outcome: Outcome;
  detail: string;
}

interface Load {
  sent: Sent[];
  /** serial → what a client was told about it. */
  issued: Map<string, { name: string; via: "enroll" | "renew"; node: "A" | "B" }>;
  revoked: Set<string>;
  /** Serials handed out twice. */
  duplicates: string[];
  /** Serials whose revocation got no answer (it may or may not have been recorded). */
  revokeUnknown: Set<string>;
}

const emptyLoad = (): Load => ({
  sent: [],
  issued: new Map(),
  revoked: new Set(),
  duplicates: [],
  revokeUnknown: new Set(),
});

/** One request of a client: its outcome recorded in `load.sent`; the answer when it was the expected one. */
async function step(
  c: Cluster,
  load: Load,
  node: CaNode,
  op: Op,
  path: string,
  body: unknown,
  id: Identity | undefined,
  expected: (r: Reply) => boolean,
): Promise<{ reply?: Reply; outcome: Outcome }> {
  const at = Date.now();
  let outcome: Outcome;
  let detail = "";
  let reply: Reply | undefined;
  try {
    reply = await post(c, node, path, body, id);
    if (expected(reply)) outcome = "ok";
    else if (reply.status === 503 && typeof reply.json?.error?.code === "string") outcome = "unavailable";
    else outcome = "wrong";
    detail = outcome === "ok" ? "" : `${reply.status} ${JSON.stringify(reply.json).slice(0, 300)}`;
  } catch (err) {
    outcome = "connection";
    detail = (err as Error).message;
  }
  load.sent.push({ node: node.name, op, at, ms: Date.now() - at, outcome, detail });
  return outcome === "ok" ? { reply: reply as Reply, outcome } : { outcome };
}

interface LoadClient {
  index: number;
  csr: string;
  key: string;
}

async function loadClients(n: number): Promise<LoadClient[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, index) => {
      const { privateKey } = generateKeyPair("ec-p256");
      const csr = await buildCsrPem(
        { subject: { commonName: `load-${index}` } },
        keyObjectSigner(privateKey),
      );
      return { index, csr, key: privateKey.export({ type: "pkcs8", format: "pem" }).toString() };
    }),
  );
}

/**
 * Runs `clients` until `until()` holds. Iteration i of client c: a token from one node (as the
 * admin), the enrollment on the other, every 4th time a replay of the token on the first node,
 * every 3rd a renewal, every 2nd a revocation (by the holder itself for odd clients, by the admin
 * for even ones). A client that gets no answer from a node (it died) stops using it, as a client
 * behind a load balancer would; any other failure ends the iteration after a short pause.
 */
async function runLoad(c: Cluster, clients: LoadClient[], tag: string, until: () => boolean): Promise<Load> {
  const load = emptyLoad();
  const record = (serial: string, name: string, via: "enroll" | "renew", node: CaNode) => {
    if (load.issued.has(serial)) load.duplicates.push(serial);
    load.issued.set(serial, { name, via, node: node.name });
  };
  const one = async (client: LoadClient) => {
    const down = new Set<string>();
    const pick = (i: number): [CaNode, CaNode] => {
      const up = c.nodes.filter((n) => !down.has(n.name));
      const first = up[(client.index + i) % up.length] as CaNode;
      return [first, (up.length > 1 ? up.find((n) => n !== first) : first) as CaNode];
    };
    const go = async (
      node: CaNode,
      op: Op,
      path: string,
      body: unknown,
      id: Identity | undefined,
      ok: (r: Reply) => boolean,
    ) => {
      const res = await step(c, load, node, op, path, body, id, ok);
      if (res.outcome === "connection") down.add(node.name);
      if (res.outcome !== "ok") await sleep(50);
      return res;
    };
    for (let i = 0; !until() && down.size < c.nodes.length; i++) {
      const [n1, n2] = pick(i);
      const name = `${tag}-${client.index}-${i}`;
      const token = (
        await go(
          n1,
          "token",
          "/v1/tokens",
          { name, profile: "client" },
          c.admin,
          (r) => r.status === 201 && typeof r.json?.token === "string",
        )
      ).reply;
      if (!token) continue;
      const enrolled = (
        await go(
          n2,
          "enroll",
          "/v1/enroll",
          { token: token.json.token, csr: client.csr },
          undefined,
          (r) => r.status === 201 && r.json?.name === name && typeof r.json?.serial === "string",
        )
      ).reply;
      if (!enrolled) continue;
      record(enrolled.json.serial, name, "enroll", n2);
      let current = {
        serial: enrolled.json.serial as string,
        id: { cert: enrolled.json.chain as string, key: client.key },
      };
      if (i % 4 === 0) {
        await go(
          n1,
          "replay",
          "/v1/enroll",
          { token: token.json.token, csr: client.csr },
          undefined,
          (r) => r.status === 403 && r.json?.error?.code === "E_TOKEN_USED",
        );
      }
      if (i % 3 === 1) {
        const renewed = (
          await go(
            n1,
            "renew",
            "/v1/renew",
            {},
            current.id,
            (r) => r.status === 201 && r.json?.name === name && r.json?.serial !== current.serial,
          )
        ).reply;
        if (!renewed) continue;
        record(renewed.json.serial, name, "renew", n1);
        current = { serial: renewed.json.serial, id: { cert: renewed.json.chain, key: client.key } };
      }
      if (i % 2 === 0) {
        const byAdmin = client.index % 2 === 0;
        const serial = current.serial;
        const revoked = await go(
          n2,
          "revoke",
          "/v1/revoke",
          byAdmin ? { serial, reason: "superseded" } : { reason: "superseded" },
          byAdmin ? c.admin : current.id,
          (r) => r.status === 200 && r.json?.serial === serial,
        );
        if (revoked.outcome === "ok") load.revoked.add(serial);
        else if (revoked.outcome !== "wrong") load.revokeUnknown.add(serial);
      }
    }
  };
  await Promise.all(clients.map(one));
  return load;
}

const count = (load: Load, pred: (s: Sent) => boolean) => load.sent.filter(pred).length;

/** Per node and operation: requests answered as expected. */
function figures(load: Load): string {
  const ops: Op[] = ["token", "enroll", "replay", "renew", "revoke"];
  return ["A", "B"]
    .map(
      (n) =>
        `node ${n}: ${ops.map((op) => `${op} ${count(load, (s) => s.node === n && s.op === op && s.outcome === "ok")}`).join(", ")}`,
    )
    .join("; ");
}

/** Median and slowest answer time per operation. */
function latencies(load: Load): string {
  const ops: Op[] = ["token", "enroll", "replay", "renew", "revoke"];
  return ops
    .map((op) => {
      const ms = load.sent
        .filter((s) => s.op === op)
        .map((s) => s.ms)
        .sort((x, y) => x - y);
      return ms.length ? `${op} p50 ${ms[Math.floor(ms.length / 2)]} ms, max ${ms.at(-1)} ms` : `${op} -`;
    })
    .join("; ");
}

const failuresOf = (sent: Sent[]) =>
  sent
    .slice(0, 10)
    .map((s) => `${s.node} ${s.op} ${s.outcome}: ${s.detail}`)
    .join("\n");

// ---------------------------------------------------------------------------------------------
// What the store and the CRLs say.

/** The CA's own certificates in the inventory: no client was told about them. */
const caOwn = (r: ListRow) =>
  ["ca-root", "ca-intermediate", "ocsp"].includes(r.profile) || ["admin", "ca-server"].includes(r.name);

const hex = (s: string) => s.toLowerCase().replace(/^0+/, "");

/**
 * Every serial a client was told was issued is in the store with the status the clients made it
 * (revoked when a revocation was answered or may have been recorded unanswered); no serial is in
 * the store twice; and the certificates no client heard of are the CA's own plus at most
 * `unanswered` (issuances that got no answer) and the `setup` serials the test enrolled itself.
 * Returns the inventory.
 */
async function checkStore(
  c: Cluster,
  load: Load,
  unanswered: number,
  setup: string[] = [],
): Promise<ListRow[]> {
  const rows = await listJson(c.dir, ["--all", "--state", c.a.stateDir, "--store", c.url]);
  const bySerial = new Map(rows.map((r) => [r.serial, r]));
  assert.equal(bySerial.size, rows.length, "a serial listed twice");
  assert.deepEqual(load.duplicates, [], "a serial handed to two clients");
  for (const [serial, told] of load.issued) {
    const row = bySerial.get(serial);
    assert.ok(
      row,
      `${told.via} of ${told.name} on node ${told.node} answered ${serial}, but the store has no such certificate`,
    );
    assert.equal(row.name, told.name, serial);
    const want = load.revoked.has(serial)
      ? ["revoked"]
      : load.revokeUnknown.has(serial)
        ? ["valid", "revoked"]
        : ["valid"];
    assert.ok(
      want.includes(row.status),
      `${serial} (${told.name}) is ${row.status} in the store, clients made it ${want.join(" or ")}`,
    );
  }
  const unknown = rows.filter((r) => !load.issued.has(r.serial) && !caOwn(r) && !setup.includes(r.serial));
  assert.ok(
    unknown.length <= unanswered,
    `${unknown.length} certificates in the store no client was told of (at most ${unanswered} requests went unanswered): ${unknown
      .slice(0, 5)
      .map((r) => `${r.serial} ${r.name} ${r.status}`)
      .join(", ")}`,
  );
  const revokedLeaves = rows.filter((r) => r.status === "revoked" && load.issued.has(r.serial));
  const maybe = [...load.revokeUnknown].filter((s) => bySerial.get(s)?.status === "revoked").length;
  assert.equal(
    revokedLeaves.length,
    load.revoked.size + maybe,
    "revoked certificates in the store vs revocations answered",
  );
  return rows;
}

/** `mtls audit verify` on the shared store: the hash chain both nodes appended to is whole. */
async function auditIntact(c: Cluster, when: string): Promise<void> {
  const res = assertOk(await c.cli(["audit", "verify"]), `mtls audit verify ${when}`);
  assert.match(res.stdout + res.stderr, /hash chain intact/, when);
}

/** The shared store's audit log, through `mtls audit export --format jsonl`. */
async function auditEvents(c: Cluster): Promise<{ action: string; subject: string | null }[]> {
  const file = join(c.dir, `audit-${Date.now()}.jsonl`);
  assertOk(await c.cli(["audit", "export", "--format", "jsonl", "--out", file]), "mtls audit export");
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { action: string; subject: string | null });
}

/** GET URL (plain HTTP, the public listener) as bytes; rejects after 10 s. */
function getBytes(url: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (d: Buffer) => chunks.push(d));
      res.on("end", () =>
        res.statusCode === 200
          ? resolve(Buffer.concat(chunks))
          : reject(new Error(`${url}: HTTP ${res.statusCode}`)),
      );
      res.on("error", reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`${url}: no answer within 10 s`)));
    req.on("error", reject);
    req.end();
  });
}

/** The serials (normalized hex) a node's /crl lists, read by `openssl crl`. */
async function crlSerials(c: Cluster, node: CaNode): Promise<{ serials: Set<string>; number: string }> {
  const file = join(c.dir, `crl-${node.name}.der`);
  writeFileSync(file, await getBytes(`${node.serve.pub}/crl`));
  const res = await run("openssl", ["crl", "-inform", "DER", "-in", file, "-noout", "-text"], {
    timeoutMs: 30_000,
  });
  assert.equal(res.code, 0, res.stderr);
  const serials = new Set(
    [...res.stdout.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => hex(m[1] as string)),
  );
  const number = /X509v3 CRL Number:\s*\n?\s*(\d+)/.exec(res.stdout)?.[1] ?? "?";
  return { serials, number };
}

/** Waits (at most `ms`) until both nodes' CRLs list every serial of `revoked`; returns how long it took. */
async function waitForCrls(c: Cluster, revoked: Set<string>, ms: number): Promise<number> {
  const t0 = Date.now();
  const missing = new Map<string, number | string>();
  const wanted = [...revoked].map(hex);
  await waitFor(
    async () => {
      for (const node of c.nodes) {
        try {
          const { serials } = await crlSerials(c, node);
          missing.set(node.name, wanted.filter((s) => !serials.has(s)).length);
        } catch (err) {
          missing.set(node.name, (err as Error).message);
        }
      }
      return [...missing.values()].every((n) => n === 0);
    },
    ms,
    "both nodes' CRLs to list every revocation",
    () =>
      c.nodes
        .map(
          (n) =>
            `node ${n.name}: ${missing.get(n.name) ?? "?"} of ${wanted.length} missing; log:\n${n.serve.bg.output().slice(-2000)}`,
        )
        .join("\n"),
  );
  return Date.now() - t0;
}

// ---------------------------------------------------------------------------------------------
// A tunnel on node B's revocation feed.

interface FeedTunnel {
  tunnel: Tunnel;
  client: Tunnel;
  /** The client certificate's name (its CN) and serial. */
  user: string;
  serial: string;
  /** The tunnel server's certificate. */
  serverSerial: string;
}

/** A TCP target that streams "tick" lines to whoever connects, so a cut shows at once. */
async function tickTarget(): Promise<{ server: Server; port: number }> {
  const server = createTcpServer((s) => {
    const tick = setInterval(() => s.write("tick\n"), 50);
    s.on("close", () => clearInterval(tick));
    s.on("error", () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  running.push({
    stop: async () => {
      server.close();
    },
  });
  return { server, port: (server.address() as { port: number }).port };
}

/**
 * Enrolls NAME through node A's API (a token as the admin, then a CSR), and writes CERTS/NAME.crt
 * (the chain), CERTS/NAME.key and CERTS/ca.crt for a tunnel. Returns the serial.
 */
async function enrollFiles(
  c: Cluster,
  certs: string,
  name: string,
  profile: "server" | "client",
  sans: string[],
): Promise<string> {
  const token = await post(c, c.a, "/v1/tokens", { name, profile, sans }, c.admin);
  assert.equal(token.status, 201, JSON.stringify(token.json));
  const { privateKey } = generateKeyPair("ec-p256");
  const csr = await buildCsrPem({ subject: { commonName: name } }, keyObjectSigner(privateKey));
  const issued = await post(c, c.a, "/v1/enroll", { token: token.json.token, csr });
  assert.equal(issued.status, 201, JSON.stringify(issued.json));
  mkdirSync(certs, { recursive: true });
  writeFileSync(join(certs, `${name}.crt`), issued.json.chain);
  writeFileSync(join(certs, `${name}.key`), privateKey.export({ type: "pkcs8", format: "pem" }), {
    mode: 0o600,
  });
  writeFileSync(join(certs, "ca.crt"), c.caPem);
  return issued.json.serial;
}

/**
 * A server certificate for the tunnel and a client certificate for `user`, then a tunnel server
 * subscribed to `feedNode`'s revocation feed in front of a ticking target, and a tunnel client
 * presenting `user`.
 */
async function feedTunnel(c: Cluster, feedNode: CaNode, user: string): Promise<FeedTunnel> {
  const certs = join(c.dir, "certs");
  const serverSerial = await enrollFiles(c, certs, "tunnel", "server", ["dns:localhost", "ip:127.0.0.1"]);
  const serial = await enrollFiles(c, certs, user, "client", []);
  const flags = (name: string) => [
    "--cert",
    join(certs, `${name}.crt`),
    "--key",
    join(certs, `${name}.key`),
    "--ca",
    join(certs, "ca.crt"),
  ];
  const target = await tickTarget();
  const tunnel = await startTunnel(
    "server",
    [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${target.port}`,
      ...flags("tunnel"),
      "--allow-cn",
      user,
      "--status",
      "127.0.0.1:0",
      "--revocation-feed",
      feedNode.serve.api,
    ],
    c.dir,
    running,
  );
  const client = await startTunnel(
    "client",
    [
      "--listen",
      "127.0.0.1:0",
      "--target",
      `127.0.0.1:${tunnel.port}`,
      "--server-name",
      "localhost",
      ...flags(user),
    ],
    c.dir,
    running,
  );
  return { tunnel, client, user, serial, serverSerial };
}

/**
 * Opens a connection through the tunnel pair, waits for the stream, revokes the user on `revokeOn`
 * (POST /v1/revoke as the admin) and measures the time from sending the revocation to the
 * connection closing. Then a new connection as the user must be refused by the tunnel server.
 * Returns the milliseconds.
 */
async function revokeToDrop(c: Cluster, ft: FeedTunnel, revokeOn: CaNode): Promise<number> {
  const serial = ft.serial;
  const socket: Socket = connect(ft.client.port, "127.0.0.1");
  let received = "";
  let closedAt = 0;
  socket.on("data", (d) => {
    received += d;
  });
  socket.on("error", () => undefined);
  socket.on("close", () => {
    closedAt = Date.now();
  });
  try {
    await waitFor(
      () => (received.match(/tick/g) ?? []).length >= 3,
      5_000,
      "the stream through the tunnel",
      () => ft.tunnel.bg.output(),
    );
    assert.equal(closedAt, 0, "the connection is open before the revocation");
    const sentAt = Date.now();
    const res = await post(c, revokeOn, "/v1/revoke", { serial, reason: "keyCompromise" }, c.admin);
    const answeredAt = Date.now();
    assert.equal(res.status, 200, JSON.stringify(res.json));
    await waitFor(
      () => closedAt > 0,
      5_000,
      "the tunnel to cut the revoked peer's connection",
      () => ft.tunnel.bg.output(),
    );
    const ms = closedAt - sentAt;
    console.log(
      `revoke on node ${revokeOn.name} → connection through the tunnel on node B's feed dropped: ${ms} ms after POST /v1/revoke was sent (the answer itself took ${answeredAt - sentAt} ms)`,
    );
    assert.ok(ms < 2_000, `dropped ${ms} ms after the revocation (limit 2,000 ms)`);
    // The tunnel says why it cut: the peer was revoked (it has no CRL or OCSP: only the feed knew).
    const cut = await waitForAudit(ft.tunnel, (l) => l.allowed === true && l.reason === "revoked", "the cut");
    assert.equal(cut.identity?.serial, serial, JSON.stringify(cut));

    // A new connection with the revoked certificate is refused by the tunnel server.
    const audited = auditLines(ft.tunnel).length;
    const again: Socket = connect(ft.client.port, "127.0.0.1");
    let data = "";
    let closed = false;
    again.on("data", (d) => {
      data += d;
    });
    again.on("error", () => undefined);
    again.on("close", () => {
      closed = true;
    });
    try {
      await waitFor(() => closed, 5_000, "the new connection of a revoked peer to be closed");
      assert.equal(data, "", "nothing may come through for a revoked peer");
      const line = await waitForAudit(ft.tunnel, (l) => l.allowed === false, "the refusal", audited);
      assert.equal(line.reason, "revoked", JSON.stringify(line));
    } finally {
      again.destroy();
    }
    return ms;
  } finally {
    socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------------

await requireTool("openssl", ["version"]);
const unavailable = await postgresUnavailable();
if (unavailable !== undefined) {
  console.warn(
    `\n*** SKIPPING the scale-out e2e tests: ${TEST_POSTGRES_URL} is unreachable (${unavailable}).\n`,
  );
}

describe("two mtls ca serve nodes on one PostgreSQL schema", {
  skip: unavailable ? `PostgreSQL unreachable: ${unavailable}` : false,
  concurrency: 1,
  timeout: 180_000,
}, () => {
  const schemas = testSchemas("mtls_e2e_scale");
  after(() => schemas.dropAll());

  it("16 clients for 30 s across both nodes: the store holds exactly what they were told; audit and CRLs agree", async () => {
    const c = await startCluster(await schemas.create(), "load");
    const clients = await loadClients(16);
    const t0 = Date.now();
    const load = await runLoad(c, clients, "load", () => Date.now() - t0 >= 30_000);
    const seconds = (Date.now() - t0) / 1000;
    const enrolled = count(load, (s) => s.op === "enroll" && s.outcome === "ok");
    const renewed = count(load, (s) => s.op === "renew" && s.outcome === "ok");
    console.log(
      `scale-out load (load average ${loadavg()[0]?.toFixed(1)} on ${availableParallelism()} CPUs): 16 clients, ${seconds.toFixed(1)} s: ${enrolled} enrollments (${(enrolled / seconds).toFixed(0)}/s), ${renewed} renewals, ${load.revoked.size} revocations, ${load.sent.length} requests; ${figures(load)}`,
    );
    console.log(`answer times: ${latencies(load)}`);
    const bad = load.sent.filter((s) => s.outcome !== "ok");
    assert.equal(bad.length, 0, `requests not answered as expected:\n${failuresOf(bad)}`);
    for (const client of clients) {
      const enrolledBy = [...load.issued.values()].filter((i) => i.name.startsWith(`load-${client.index}-`));
      assert.ok(enrolledBy.length > 0, `client ${client.index} enrolled nothing`);
    }
    for (const n of ["A", "B"])
      assert.ok(count(load, (s) => s.node === n && s.op === "enroll") > 0, `no enrollment on node ${n}`);
    assert.ok(
      count(load, (s) => s.op === "replay" && s.outcome === "ok") > 0,
      "token replays across nodes were tried and refused",
    );

    const [rows, events] = await Promise.all([
      checkStore(c, load, 0),
      auditEvents(c),
      auditIntact(c, "after the load"),
    ]);
    // The audit log agrees with the clients, event for event.
    const ofAction = (action: string) => events.filter((e) => e.action === action);
    const okCount = (op: Op) => count(load, (s) => s.op === op && s.outcome === "ok");
    assert.equal(ofAction("token.create").length, okCount("token"), "token.create events");
    assert.equal(ofAction("token.use").length, enrolled, "token.use events");
    assert.deepEqual(
      new Set(ofAction("cert.renew").map((e) => e.subject)),
      new Set([...load.issued].filter(([, t]) => t.via === "renew").map(([serial]) => serial)),
      "cert.renew events",
    );
    assert.deepEqual(
      new Set(ofAction("cert.revoke").map((e) => e.subject)),
      load.revoked,
      "cert.revoke events",
    );
    assert.equal(ofAction("cert.revoke").length, load.revoked.size, "one cert.revoke event per revocation");
    const issuedEvents = new Set(ofAction("cert.issue").map((e) => e.subject));
    for (const serial of load.issued.keys())
      assert.ok(issuedEvents.has(serial), `no cert.issue event for ${serial}`);
    console.log(
      `store after the load: ${rows.length} certificates (${rows.filter(caOwn).length} the CA's own), ${rows.filter((r) => r.status === "revoked").length} revoked; audit log: ${events.length} events, chain intact`,
    );

    const ms = await waitForCrls(c, load.revoked, 15_000);
    const numbers = await Promise.all(
      c.nodes.map(async (n) => `${n.name} ${(await crlSerials(c, n)).number}`),
    );
    console.log(
      `both nodes' CRLs list all ${load.revoked.size} revocations (${ms} ms after the load; CRL numbers ${numbers.join(", ")})`,
    );
  });

  it("kill -9 of node A mid-load: B answers every request, A's clients get connection errors, nothing told is lost", async () => {
    const c = await startCluster(await schemas.create(), "kill");
    const clients = await loadClients(8);
    const t0 = Date.now();
    let killedAt = 0;
    const loading = runLoad(c, clients, "kill", () => killedAt > 0 && Date.now() - killedAt >= 4_000);
    await sleep(3_000);
    c.a.serve.bg.child.kill("SIGKILL");
    killedAt = Date.now();
    const load = await loading;
    await c.a.serve.bg.stop();
    const before = load.sent.filter((s) => s.at < killedAt);
    const afterKill = load.sent.filter((s) => s.at >= killedAt);
    const enrolledAfter = afterKill.filter((s) => s.op === "enroll" && s.outcome === "ok").length;
    console.log(
      `kill -9 of node A after ${killedAt - t0} ms: before it ${before.filter((s) => s.outcome === "ok").length} requests answered; after it node B answered ${afterKill.filter((s) => s.node === "B").length} requests (${enrolledAfter} enrollments), node A gave ${load.sent.filter((s) => s.node === "A" && s.outcome === "connection").length} connection errors; whole run: ${figures(load)}`,
    );
    const wrongB = load.sent.filter((s) => s.node === "B" && s.outcome !== "ok");
    assert.equal(wrongB.length, 0, `node B failed requests:\n${failuresOf(wrongB)}`);
    const wrongA = load.sent.filter(
      (s) => s.node === "A" && s.outcome !== "ok" && s.outcome !== "connection",
    );
    assert.equal(wrongA.length, 0, `node A answered wrongly:\n${failuresOf(wrongA)}`);
    assert.ok(enrolledAfter >= 10, `node B enrolled only ${enrolledAfter} after the kill`);
    assert.ok(
      afterKill.every((s) => s.node === "B" || s.outcome === "connection"),
      "no request to node A after the kill got an answer",
    );
    // Issuances that got no answer may or may not have been recorded before the kill.
    const unanswered = count(
      load,
      (s) => (s.op === "enroll" || s.op === "renew") && s.outcome === "connection",
    );
    await Promise.all([checkStore(c, load, unanswered), auditIntact(c, "after the kill")]);
  });

  it("a tunnel on node B's revocation feed drops a connection within 2 s of a revocation made on node A", async () => {
    const c = await startCluster(await schemas.create(), "feed");
    const ft = await feedTunnel(c, c.b, "dave");
    await revokeToDrop(c, ft, c.a);
  });
});

/**
 * Sessions whose last statement was a LISTEN (the nodes' revocation feeds waiting for NOTIFY),
 * counting only those connected since `since` when given.
 */
async function listenSessions(url: string, since = new Date(0)): Promise<number> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  client.on("error", () => undefined);
  await client.connect();
  try {
    const res = await client.query(
      "select count(*)::int as n from pg_stat_activity where query ilike 'listen %' and backend_start >= $1",
      [since],
    );
    return (res.rows[0] as { n: number }).n;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const noCluster = pgClusterUnavailable();
describe("PostgreSQL restarted under two nodes (a private cluster)", {
  skip: noCluster ? `no private PostgreSQL cluster: ${noCluster}` : false,
  concurrency: 1,
  timeout: 180_000,
}, () => {
  let pg: PgCluster | undefined;
  before(async () => {
    pg = await createPgCluster("mtls-e2e-pg-");
  });
  after(async () => {
    await pg?.destroy();
  });

  it("a restart and a 2 s outage: 2xx or 503 answers only, both nodes carry on, the feed reconnects", async () => {
    const cluster = pg as PgCluster;
    const schema = testSchemas("mtls_e2e_restart", cluster.url);
    const c = await startCluster(await schema.create(), "restart");
    const ft = await feedTunnel(c, c.b, "erin");
    const clients = await loadClients(4);
    await waitFor(
      async () => (await listenSessions(cluster.url)) === 2,
      5_000,
      "each node to LISTEN for revocations",
    );
    // Under load: `pg_ctl restart -m fast` after 3 s; 4 s later the server stopped for 2 s
    // (`pg_ctl stop -m fast`, then start), so requests also arrive while there is no database at
    // all; 5 s more of load after that.
    const t0 = Date.now();
    let doneAt = 0;
    const loading = runLoad(c, clients, "restart", () => doneAt > 0 && Date.now() - doneAt >= 5_000);
    await sleep(3_000);
    const restartStart = Date.now();
    await cluster.restart();
    const restartedAt = Date.now();
    await sleep(4_000);
    const outageStart = Date.now();
    await cluster.stop();
    await sleep(2_000);
    const outageEnd = Date.now();
    await cluster.start();
    doneAt = Date.now();
    const load = await loading;

    const bad = load.sent.filter((s) => s.outcome === "wrong" || s.outcome === "connection");
    const unavailableAnswers = load.sent.filter((s) => s.outcome === "unavailable");
    /** From `from` to the first answer as expected of a request sent after it, per node. */
    const recovery = (from: number) =>
      c.nodes
        .map((n) => {
          const first = load.sent.find((s) => s.node === n.name && s.at >= from && s.outcome === "ok");
          return `${n.name} ${first ? `${first.at + first.ms - from} ms` : "never"}`;
        })
        .join(", ");
    const whileDown = load.sent.filter((s) => s.at >= outageStart + 200 && s.at < outageEnd);
    const codes = [...new Set(unavailableAnswers.map((s) => /"code":"(\w+)"/.exec(s.detail)?.[1]))];
    console.log(
      `PostgreSQL under load (${load.sent.length} requests, ${count(load, (s) => s.outcome === "ok")} answered as expected, ${unavailableAnswers.length} 503s with codes ${codes.join(", ")}, ${bad.length} other failures): restart -m fast ${restartStart - t0} ms in took ${restartedAt - restartStart} ms, first success after it: ${recovery(restartedAt)}; ${whileDown.length} requests while stopped for ${outageEnd - outageStart} ms all got ${[...new Set(whileDown.map((s) => s.outcome))].join("/")}, first success after the start: ${recovery(doneAt)}`,
    );
    assert.equal(
      bad.length,
      0,
      `requests that got neither the expected answer nor a 503:\n${failuresOf(bad)}`,
    );
    assert.ok(
      whileDown.some((s) => s.outcome === "unavailable"),
      "requests sent while PostgreSQL was stopped were answered 503",
    );
    for (const n of c.nodes) {
      assert.equal(n.serve.bg.child.exitCode, null, `node ${n.name} exited:\n${n.serve.bg.output()}`);
      // Carrying on: every request sent from 3 s after the restart until the stop, and from 3 s
      // after the start on, was answered as expected.
      const late = load.sent.filter(
        (s) =>
          s.node === n.name &&
          ((s.at >= restartedAt + 3_000 && s.at + s.ms < outageStart) || s.at >= doneAt + 3_000),
      );
      assert.ok(late.length > 0, `no requests to node ${n.name} after the restarts`);
      const lateBad = late.filter((s) => s.outcome !== "ok");
      assert.equal(
        lateBad.length,
        0,
        `node ${n.name} still failing 3 s after PostgreSQL came back:\n${failuresOf(lateBad)}`,
      );
    }
    const unanswered = count(load, (s) => (s.op === "enroll" || s.op === "renew") && s.outcome !== "ok");
    await Promise.all([
      checkStore(c, load, unanswered, [ft.serial, ft.serverSerial]),
      auditIntact(c, "after the restart"),
    ]);

    // Both nodes' LISTEN sessions are back (new backends: the stop ended the old ones), and a
    // revocation on A reaches the tunnel on B through them.
    await waitFor(
      async () => (await listenSessions(cluster.url, new Date(outageEnd))) === 2,
      10_000,
      "both nodes to LISTEN again on new connections",
    );
    await revokeToDrop(c, ft, c.a);
    // The private cluster goes in after(); the nodes first, so they do not log its disappearance.
    await Promise.all(c.nodes.map((n) => n.serve.bg.stop()));
  });
});
