/**
 * SNI routing on one listening port: a route per TLS server name, each with its own target, rules
 * and (optionally) certificate and trust anchors, chosen during the handshake.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { until, within } from "../../test/fixtures/wait.js";
import type { ConnectionAuditFields } from "../observe/index.js";
import { Registry } from "../observe/index.js";
import { makeSan } from "../pki/names.js";
import { compilePolicy, type RuleSpec } from "../policy/index.js";
import { loadTlsMaterial, type TlsMaterial } from "../tls/index.js";
import type { Address } from "./address.js";
import { TunnelClient } from "./client.js";
import { type Route, TunnelServer } from "./server.js";

let pki: TestPki;
const f: Record<string, IssuedFiles> = {};
const services: Server[] = [];
const cleanups: (() => unknown)[] = [];
let serviceA: Address;
let serviceB: Address;
let serviceC: Address;

/** A service that answers every chunk with its tag in front: tells the targets apart. */
async function tagged(tag: string): Promise<Address> {
  const server = createServer((s) => {
    s.on("error", () => undefined);
    s.on("data", (d) => s.write(`${tag}:${d}`));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  services.push(server);
  return { kind: "tcp", host: "127.0.0.1", port: (server.address() as AddressInfo).port };
}

async function material(name: string): Promise<TlsMaterial> {
  const files = f[name];
  assert.ok(files, name);
  const m = await loadTlsMaterial({ cert: files.cert, key: files.key, ca: files.ca });
  cleanups.push(() => m.close());
  return m;
}

const policy = (...rules: RuleSpec[]) => compilePolicy(rules);

before(async () => {
  pki = await createTestPki("mtls-sni-");
  f.default = await pki.issue("server", "default", { sans: [makeSan("dns", "localhost")] });
  f.vnc = await pki.issue("server", "vnc", { sans: [makeSan("dns", "vnc.acme.test")] });
  f.ftp = await pki.issue("server", "ftp", { sans: [makeSan("dns", "ftp.acme.test")] });
  f.evilServer = await pki.issue("server", "evil-server", {
    sans: [makeSan("dns", "partner.acme.test")],
    other: true,
  });
  f.alice = await pki.issue("client", "alice");
  f.bob = await pki.issue("client", "bob");
  f.eve = await pki.issue("client", "eve", { other: true });
  serviceA = await tagged("A");
  serviceB = await tagged("B");
  serviceC = await tagged("C");
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  for (const s of services) s.close();
  await pki?.close();
});

interface Handle {
  tunnel: TunnelServer;
  port: number;
  events: ConnectionAuditFields[];
}

async function startServer(routes: Route[]): Promise<Handle> {
  const tunnel = new TunnelServer({
    name: "sni",
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    routes,
    material: await material("default"),
    registry: new Registry(),
    handshakeTimeoutMs: 5000,
  });
  const events: ConnectionAuditFields[] = [];
  tunnel.on("connection", (e: ConnectionAuditFields) => events.push(e));
  const bound = await tunnel.start();
  assert.equal(bound.kind, "tcp");
  cleanups.push(() => tunnel.stop(100));
  return { tunnel, port: bound.port, events };
}

/**
 * Node's own TLS client: verifies the server's certificate for `servername` against `caOf`'s root
 * (rejectUnauthorized), presents `who`'s certificate, sends "hello" and resolves with the first
 * answer, or with "" when the server closes without one.
 */
async function ask(
  port: number,
  servername: string | undefined,
  who: string,
  opts: { caOf?: string; anyName?: boolean } = {},
): Promise<{ answer: string; serverCn: string | undefined; socket: TLSSocket }> {
  const client = f[who];
  assert.ok(client);
  const s = tlsConnect({
    host: "127.0.0.1",
    port,
    ...(servername ? { servername } : {}),
    // Names with no certificate of their own are answered with the default one.
    ...(!servername || opts.anyName ? { checkServerIdentity: () => undefined } : {}),
    ca: readFileSync((f[opts.caOf ?? "default"] as IssuedFiles).ca),
    cert: readFileSync(client.cert),
    key: readFileSync(client.key),
    rejectUnauthorized: true,
  });
  cleanups.push(() => s.destroy());
  await within(once(s, "secureConnect"), 5000, "TLS connect");
  const serverCn = s.getPeerX509Certificate()?.subject.match(/CN=([^\n]+)/)?.[1];
  s.write("hello");
  const answer = await within(
    new Promise<string>((resolve) => {
      s.once("data", (d: Buffer) => resolve(d.toString()));
      s.once("close", () => resolve(""));
      s.once("error", () => resolve(""));
    }),
    5000,
    "answer",
  );
  return { answer, serverCn, socket: s };
}

describe("SNI routing on one port", () => {
  let h: Handle;
  let vnc: TlsMaterial;
  let ftp: TlsMaterial;
  before(async () => {
    vnc = await material("vnc");
    ftp = await material("ftp");
    h = await startServer([
      { serverName: "vnc.acme.test", target: serviceA, policy: policy({ cn: ["alice"] }), material: vnc },
      { serverName: "FTP.acme.test", target: serviceB, policy: policy({ cn: ["bob"] }), material: ftp },
    ]);
  });

  it("each name gets its own certificate, target and rules", async () => {
    const a = await ask(h.port, "vnc.acme.test", "alice");
    assert.equal(a.serverCn, "vnc");
    assert.equal(a.answer, "A:hello");
    const b = await ask(h.port, "ftp.acme.test", "bob");
    assert.equal(b.serverCn, "ftp");
    assert.equal(b.answer, "B:hello");
    a.socket.destroy();
    b.socket.destroy();
  });

  it("the rules of one name do not open another", async () => {
    const before = h.events.length;
    assert.equal((await ask(h.port, "ftp.acme.test", "alice")).answer, "");
    assert.equal((await ask(h.port, "vnc.acme.test", "bob")).answer, "");
    await until(() => h.events.filter((e) => !e.allowed).length >= 2, 2000, "refusals");
    const refused = h.events.slice(before).filter((e) => !e.allowed);
    assert.deepEqual(
      refused.map((e) => [e.serverName, e.reason]),
      [
        ["ftp.acme.test", "not_allowed"],
        ["vnc.acme.test", "not_allowed"],
      ],
    );
  });

  it("an unknown server name, or none, without a default route is refused (not_allowed)", async () => {
    const before = h.events.length;
    const other = await ask(h.port, "other.acme.test", "alice", { anyName: true });
    assert.equal(other.serverCn, "default", "the default certificate answers unknown names");
    assert.equal(other.answer, "");
    assert.equal((await ask(h.port, undefined, "alice")).answer, "");
    await until(() => h.events.length >= before + 2, 2000, "refusals");
    const [e1, e2] = h.events.slice(before);
    assert.equal(e1?.reason, "not_allowed");
    assert.equal(e1?.detail, "no route for server name other.acme.test");
    assert.equal(e2?.reason, "not_allowed");
    assert.match(e2?.detail ?? "", /no route for a connection without a server name/);
  });

  it("updateRoutes: new rules and a default route for new connections; an open one keeps going", async () => {
    const open = await ask(h.port, "vnc.acme.test", "alice");
    assert.equal(open.answer, "A:hello");
    h.tunnel.updateRoutes([
      { serverName: "vnc.acme.test", target: serviceA, policy: policy({ cn: ["bob"] }), material: vnc },
      { serverName: "ftp.acme.test", target: serviceB, policy: policy({ cn: ["bob"] }), material: ftp },
      { target: serviceC, policy: policy({ all: true }) },
    ]);
    assert.equal((await ask(h.port, "vnc.acme.test", "alice")).answer, "", "alice no longer allowed");
    assert.equal((await ask(h.port, "vnc.acme.test", "bob")).answer, "A:hello");
    const d = await ask(h.port, "default.acme.test", "alice", { anyName: true });
    assert.equal(d.serverCn, "default");
    assert.equal(d.answer, "C:hello");
    // The connection allowed before the change still carries bytes.
    open.socket.write("again");
    const again = await within(
      new Promise<string>((resolve) => open.socket.once("data", (b: Buffer) => resolve(b.toString()))),
      5000,
      "open connection",
    );
    assert.equal(again, "A:again");
    assert.throws(
      () =>
        h.tunnel.updateRoutes([
          { target: serviceA, policy: policy({ all: true }) },
          { target: serviceB, policy: policy({ all: true }) },
        ]),
      /two default routes/,
    );
    open.socket.destroy();
  });
});

describe("SNI routes with their own trust anchors", () => {
  it("a route whose material trusts another CA admits that CA's clients, only there", async () => {
    const h = await startServer([
      {
        serverName: "vnc.acme.test",
        target: serviceA,
        policy: policy({ all: true }),
        material: await material("vnc"),
      },
      {
        serverName: "partner.acme.test",
        target: serviceB,
        policy: policy({ cn: ["eve"] }),
        material: await material("evilServer"),
      },
    ]);
    const partner = await ask(h.port, "partner.acme.test", "eve", { caOf: "evilServer" });
    assert.equal(partner.serverCn, "evil-server");
    assert.equal(partner.answer, "B:hello");
    assert.equal((await ask(h.port, "vnc.acme.test", "eve")).answer, "");
    await until(() => h.events.some((e) => !e.allowed), 2000, "refusal");
    assert.equal(h.events.find((e) => !e.allowed)?.reason, "unknown_ca");
  });
});

describe("a tunnel client through an SNI route", () => {
  it("verifies the name's certificate and resumes its TLS session", async () => {
    const h = await startServer([
      {
        serverName: "vnc.acme.test",
        target: serviceA,
        policy: policy({ cn: ["alice"] }),
        material: await material("vnc"),
      },
    ]);
    const client = new TunnelClient({
      name: "cli",
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      target: { kind: "tcp", host: "127.0.0.1", port: h.port },
      serverName: "vnc.acme.test",
      material: await material("alice"),
      registry: new Registry(),
    });
    const events: ConnectionAuditFields[] = [];
    client.on("connection", (e: ConnectionAuditFields) => events.push(e));
    const bound = await client.start();
    cleanups.push(() => client.stop(100));
    assert.equal(bound.kind, "tcp");
    for (const word of ["one", "two"]) {
      const s: Socket = connect({ host: "127.0.0.1", port: bound.port });
      cleanups.push(() => s.destroy());
      await within(once(s, "connect"), 5000, "connect");
      s.write(word);
      const [d] = (await within(once(s, "data"), 5000, "answer")) as [Buffer];
      assert.equal(d.toString(), `A:${word}`);
      s.destroy();
      await until(() => events.length >= (word === "one" ? 1 : 2), 2000, "client audit");
    }
    assert.deepEqual(
      events.map((e) => [e.allowed, e.resumed]),
      [
        [true, false],
        [true, true],
      ],
    );
    assert.ok(h.events.every((e) => e.allowed));
  });
});
