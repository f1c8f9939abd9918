import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { command, type FakeFtp, FtpReplyReader, startFakeFtp } from "../../test/fixtures/ftp.js";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { until, within } from "../../test/fixtures/wait.js";
import { type ConnectionAuditFields, Registry } from "../observe/index.js";
import { makeSan } from "../pki/names.js";
import { compilePolicy, rulesFromFlags } from "../policy/index.js";
import { loadTlsMaterial, type TlsMaterial } from "../tls/index.js";
import type { Address } from "./address.js";
import { TunnelClient, type TunnelClientOptions } from "./client.js";
import {
  ACTIVE_MODE_REPLY,
  commandVerb,
  DataGrants,
  FTP_MAX_LINE,
  format227,
  format229,
  type GrantOwner,
  LineSplitter,
  parse227,
  parse229,
  parsePreamble,
  parsePrivateReply,
  privateReply,
  ReplyTracker,
  readLine,
} from "./ftp.js";
import { FtpServerControl, type ServerControlHooks } from "./ftp-control.js";
import { TunnelServer, type TunnelServerOptions } from "./server.js";

const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

// ---------------------------------------------------------------------------------------------

describe("FTP parsing", () => {
  it("reads 227 addresses with or without parentheses and rejects nonsense", () => {
    assert.deepEqual(parse227("227 Entering Passive Mode (127,0,0,1,156,64)."), {
      host: "127.0.0.1",
      port: 156 * 256 + 64,
    });
    assert.deepEqual(parse227("227 =192,168,1,2,4,1"), { host: "192.168.1.2", port: 1025 });
    assert.equal(parse227("227 Entering Passive Mode (127,0,0,1,256,1)."), undefined);
    assert.equal(parse227("227 Entering Passive Mode (127,0,0,1,0,0)."), undefined);
    assert.equal(parse227("227 MTLS-FTP-DATA abc"), undefined);
  });

  it("reads 229 ports with any delimiter", () => {
    assert.deepEqual(parse229("229 Entering Extended Passive Mode (|||6446|)"), { port: 6446 });
    assert.deepEqual(parse229("229 ok (!!!1025!)"), { port: 1025 });
    assert.equal(parse229("229 Entering Extended Passive Mode (|||70000|)"), undefined);
    assert.equal(parse229("229 Entering Extended Passive Mode (||6446|)"), undefined);
  });

  it("formats passive replies and round-trips the private form", () => {
    assert.equal(format227("127.0.0.1", 40000), "227 Entering Passive Mode (127,0,0,1,156,64).\r\n");
    assert.equal(format229(40000), "229 Entering Extended Passive Mode (|||40000|)\r\n");
    assert.throws(() => format227("::1", 40000));
    const token = `${"A".repeat(21)}_`;
    const line = privateReply(229, token);
    assert.deepEqual(parsePrivateReply(line), { code: 229, token });
    // An FTP client that got the private form by mistake finds no address in it.
    assert.equal(parse229(line), undefined);
    assert.equal(parse227(privateReply(227, token)), undefined);
  });

  it("finds the command verb through Telnet sequences and case", () => {
    assert.equal(commandVerb(Buffer.from("port 127,0,0,1,4,1\r\n")), "PORT");
    assert.equal(commandVerb(Buffer.from([0xff, 0xf4, 0xff, 0xf2, ...Buffer.from("ABOR\r\n")])), "ABOR");
    assert.equal(commandVerb(Buffer.from([0x50, 0x4f, 0xff, 0xf1, 0x52, 0x54, 0x20, 0x31])), "PORT");
    assert.equal(commandVerb(Buffer.from("  EPRT |1|127.0.0.1|4000|\r\n")), "EPRT");
    assert.equal(commandVerb(Buffer.from("\r\n")), "");
  });

  it("follows multi-line replies", () => {
    const t = new ReplyTracker();
    const next = (s: string) => t.next(Buffer.from(s));
    assert.deepEqual(next("220 hi\r\n"), { code: 220, first: true, last: true });
    assert.deepEqual(next("211-Features:\r\n"), { code: 211, first: true, last: false });
    assert.deepEqual(next(" EPSV\r\n"), { code: 211, first: false, last: false });
    assert.deepEqual(next("227 not the end\r\n"), { code: 211, first: false, last: false });
    assert.deepEqual(next("211-still not\r\n"), { code: 211, first: false, last: false });
    assert.deepEqual(next("211 End\r\n"), { code: 211, first: false, last: true });
    assert.deepEqual(next("garbage\r\n"), { code: undefined, first: true, last: true });
    assert.deepEqual(next("200\r\n"), { code: 200, first: true, last: true });
  });

  it("splits lines across chunks and stops at 8 KiB", () => {
    const s = new LineSplitter();
    assert.deepEqual(s.push(Buffer.from("22")).lines, []);
    const r = s.push(Buffer.from("0 hi\r\n230 "));
    assert.deepEqual(
      r.lines.map((l) => l.toString()),
      ["220 hi\r\n"],
    );
    assert.deepEqual(
      s.push(Buffer.from("ok\r\n")).lines.map((l) => l.toString()),
      ["230 ok\r\n"],
    );
    assert.equal(s.push(Buffer.alloc(FTP_MAX_LINE, 0x41)).overflow, false);
    assert.equal(s.push(Buffer.from("A")).overflow, true);
    const t = new LineSplitter();
    assert.equal(t.push(Buffer.concat([Buffer.alloc(FTP_MAX_LINE, 0x41), Buffer.from("\n")])).overflow, true);
  });

  it("recognizes only well-formed preambles", () => {
    assert.deepEqual(parsePreamble("MTLS-FTP/1 CONTROL"), { kind: "control" });
    const token = "abcdefghijklmnopqrstuv";
    assert.deepEqual(parsePreamble(`MTLS-FTP/1 DATA ${token}`), { kind: "data", token });
    assert.equal(parsePreamble("MTLS-FTP/1 DATA short"), undefined);
    assert.equal(parsePreamble("USER anonymous"), undefined);
  });

  it("readLine leaves what follows the line in the socket", async () => {
    const srv = createServer((s) => s.end("MTLS-FTP/1 OK\r\n220 hello\r\n"));
    srv.listen(0, "127.0.0.1");
    await once(srv, "listening");
    cleanups.push(() => srv.close());
    const s = connect((srv.address() as AddressInfo).port, "127.0.0.1");
    assert.equal(await readLine(s, 256, 2000), "MTLS-FTP/1 OK");
    const rest: Buffer[] = [];
    s.on("data", (d: Buffer) => rest.push(d));
    s.resume();
    await within(once(s, "end"), 2000, "the rest");
    assert.equal(Buffer.concat(rest).toString(), "220 hello\r\n");
  });
});

// ---------------------------------------------------------------------------------------------

interface ControlHarness {
  ctl: FtpServerControl;
  /** The FTP server's side of the control connection. */
  far: Socket;
  /** What reached the FTP server. */
  received: () => string;
  reader: FtpReplyReader;
  grants: { host: string; port: number; token: string }[];
  passive: string[];
  refused: string[];
}

/** An FtpServerControl in front of a socket whose far end the test plays as the FTP server. */
async function controlHarness(over: Partial<ServerControlHooks> = {}): Promise<ControlHarness> {
  const srv = createServer({ allowHalfOpen: true });
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const accepted = once(srv, "connection");
  const backend = connect({
    port: (srv.address() as AddressInfo).port,
    host: "127.0.0.1",
    allowHalfOpen: true,
  });
  await once(backend, "connect");
  const [far] = (await accepted) as [Socket];
  srv.close();
  let got = "";
  far.on("data", (d: Buffer) => {
    got += d.toString("latin1");
  });
  far.on("error", () => undefined);
  const h: ControlHarness = {
    ctl: undefined as unknown as FtpServerControl,
    far,
    received: () => got,
    reader: undefined as unknown as FtpReplyReader,
    grants: [],
    passive: [],
    refused: [],
  };
  let n = 0;
  h.ctl = new FtpServerControl(backend, {
    backendHost: "127.0.0.1",
    grant: (host, port) => {
      const token = `tok${String(n++).padStart(19, "0")}`;
      h.grants.push({ host, port, token });
      return token;
    },
    onRefusedCommand: (verb) => h.refused.push(verb),
    onPassive: (result) => h.passive.push(result),
    ...over,
  });
  h.ctl.on("error", () => undefined);
  h.reader = new FtpReplyReader(h.ctl);
  cleanups.push(() => {
    h.ctl.destroy();
    far.destroy();
  });
  far.write("220 ready\r\n");
  assert.equal((await h.reader.next()).text, "220 ready\r\n");
  return h;
}

/** Writes `text` a byte at a time, letting the event loop turn between bytes. */
async function dribble(s: Socket, text: string): Promise<void> {
  for (const ch of Buffer.from(text, "latin1")) {
    s.write(Buffer.from([ch]));
    await new Promise((r) => setImmediate(r));
  }
}

describe("FTP control, server end", () => {
  it("answers PORT and EPRT with 502 and never forwards them", async () => {
    const h = await controlHarness();
    for (const cmd of [
      "PORT 127,0,0,1,4,1",
      "EPRT |1|127.0.0.1|1025|",
      "port 1,2,3,4,5,6",
      "LPRT 4,4,1,2,3,4,2,4,1",
    ]) {
      h.ctl.write(`${cmd}\r\n`);
      assert.equal((await h.reader.next()).text, ACTIVE_MODE_REPLY);
    }
    h.ctl.write("NOOP\r\n");
    await until(() => h.received().length > 0, 2000, "NOOP forwarded");
    assert.equal(h.received(), "NOOP\r\n");
    assert.deepEqual(h.refused, ["PORT", "EPRT", "PORT", "LPRT"]);
    assert.ok(
      ACTIVE_MODE_REPLY.startsWith("502 Active mode is not supported through mtls; use passive mode"),
    );
  });

  it("keeps its 502 in order behind replies still due for earlier commands", async () => {
    const h = await controlHarness();
    h.ctl.write("NOOP\r\nPORT 127,0,0,1,4,1\r\nTYPE I\r\n");
    await until(() => h.received() === "NOOP\r\nTYPE I\r\n", 2000, "commands forwarded");
    assert.equal(h.reader.pending, "");
    h.far.write("200 noop\r\n");
    assert.equal((await h.reader.next()).code, 200);
    assert.equal((await h.reader.next()).code, 502);
    h.far.write("200-type\r\n set\r\n200 I\r\n");
    assert.equal((await h.reader.next()).text, "200-type\r\n set\r\n200 I\r\n");
  });

  it("turns a 227 split across segments into the private form and records the address", async () => {
    const h = await controlHarness();
    h.ctl.write("PASV\r\n");
    await dribble(h.far, "227 Entering Passive Mode (127,0,0,1,156,64).\r\n");
    const r = await h.reader.next();
    assert.deepEqual(parsePrivateReply(r.text), { code: 227, token: h.grants[0]?.token });
    assert.deepEqual(h.grants, [{ host: "127.0.0.1", port: 40000, token: h.grants[0]?.token }]);
    assert.deepEqual(h.passive, ["rewritten"]);
  });

  it("rewrites a multi-line 227 into one line, and an EPSV's 229 with the backend's address", async () => {
    const h = await controlHarness();
    h.ctl.write("PASV\r\n");
    h.far.write("227-Entering Passive Mode (127,0,0,1,156,65).\r\n227 Over to you\r\n");
    const r = await h.reader.next();
    assert.match(r.text, /^227 MTLS-FTP-DATA \S{22} [^\r\n]*\r\n$/);
    h.ctl.write("EPSV\r\n");
    h.far.write("229 Entering Extended Passive Mode (|||40002|)\r\n");
    const e = await h.reader.next();
    assert.deepEqual(parsePrivateReply(e.text)?.code, 229);
    assert.deepEqual(
      h.grants.map((g) => [g.host, g.port]),
      [
        ["127.0.0.1", 40001],
        ["127.0.0.1", 40002],
      ],
    );
  });

  it("refuses a 227 naming another host, a privileged port, and an unsolicited 227", async () => {
    const h = await controlHarness();
    h.ctl.write("PASV\r\n");
    h.far.write("227 Entering Passive Mode (10,9,8,7,156,64).\r\n");
    const r = await h.reader.next();
    assert.equal(r.code, 425);
    assert.match(r.text, /10\.9\.8\.7, not on its own address 127\.0\.0\.1/);
    h.ctl.write("EPSV\r\n");
    h.far.write("229 Entering Extended Passive Mode (|||22|)\r\n");
    assert.match((await h.reader.next()).text, /^425 .*privileged port 22/);
    // A 227 nobody asked for (here: after NOOP's reply) opens nothing either.
    h.ctl.write("NOOP\r\n");
    h.far.write("200 ok\r\n227 Entering Passive Mode (127,0,0,1,156,64).\r\n");
    assert.equal((await h.reader.next()).code, 200);
    assert.match((await h.reader.next()).text, /^425 mtls refused a 227 reply that answers no PASV command/);
    // Nor does a 229 answering a PASV.
    h.ctl.write("PASV\r\n");
    h.far.write("229 Entering Extended Passive Mode (|||40000|)\r\n");
    assert.equal((await h.reader.next()).code, 425);
    assert.deepEqual(h.grants, []);
    assert.deepEqual(h.passive, ["foreign_host", "privileged_port", "unsolicited", "unsolicited"]);
  });

  it("carries everything else byte for byte", async () => {
    const h = await controlHarness();
    const replies = "211-Features:\r\n EPSV\r\n 227 inside\r\n211 End\r\n200 \xe9t\xe9 ok\n";
    h.ctl.write("FEAT\r\nOPTS UTF8 ON\r\n");
    await until(() => h.received() === "FEAT\r\nOPTS UTF8 ON\r\n", 2000, "commands forwarded as they are");
    h.far.write(Buffer.from(replies, "latin1"));
    assert.equal((await h.reader.next()).text + (await h.reader.next()).text, replies);
  });

  it("answers a command line over 8 KiB with 500 and closes", async () => {
    const h = await controlHarness();
    const ended = once(h.ctl, "end");
    h.ctl.write(`STOR ${"x".repeat(FTP_MAX_LINE)}`);
    const r = await h.reader.next();
    assert.equal(r.code, 500);
    assert.match(r.text, /too long/);
    await within(ended, 2000, "control stream ends");
    assert.equal(h.received(), "");
    assert.equal(h.ctl.problem?.reason, "command_too_long");
  });
});

// ---------------------------------------------------------------------------------------------

describe("FTP data grants", () => {
  const owner = (id: number, fingerprint = "aa"): GrantOwner & { open: boolean } => ({
    id,
    fingerprint,
    route: "r",
    open: true,
  });

  it("are used once, with the announcing session's certificate and route", () => {
    const g = new DataGrants();
    const o = owner(1);
    const t = g.issue(o, "127.0.0.1", 40000);
    assert.match(t, /^[A-Za-z0-9_-]{22}$/);
    assert.deepEqual(g.redeem(t, "bb", "r"), {
      ok: false,
      reason: "wrong_certificate",
      detail: "certificate bb is not the one of control session 1 (aa)",
    });
    assert.equal((g.redeem(t, "aa", "other") as { reason: string }).reason, "wrong_route");
    const ok = g.redeem(t, "AA", "r");
    assert.ok(ok.ok && ok.grant.port === 40000 && ok.grant.host === "127.0.0.1");
    assert.equal((g.redeem(t, "aa", "r") as { reason: string }).reason, "token_used");
    assert.equal((g.redeem("x".repeat(22), "aa", "r") as { reason: string }).reason, "unknown_token");
  });

  it("expire after the data timeout and go with their session", () => {
    let now = 1_000_000;
    const g = new DataGrants(() => new Date(now), 30_000);
    const o = owner(1);
    const t1 = g.issue(o, "127.0.0.1", 40000);
    const t2 = g.issue(o, "127.0.0.1", 40001);
    now += 30_000;
    assert.equal((g.redeem(t1, "aa", "r") as { reason: string }).reason, "token_expired");
    o.open = false;
    assert.equal((g.redeem(t2, "aa", "r") as { reason: string }).reason, "control_closed");
    const o2 = owner(2);
    const t3 = g.issue(o2, "127.0.0.1", 40002);
    g.drop(o2);
    assert.equal((g.redeem(t3, "aa", "r") as { reason: string }).reason, "unknown_token");
    assert.equal(g.size, 0);
  });

  it("keep at most 8 outstanding per session", () => {
    const g = new DataGrants();
    const o = owner(1);
    const tokens = Array.from({ length: 10 }, (_, i) => g.issue(o, "127.0.0.1", 40000 + i));
    assert.equal((g.redeem(tokens[0] as string, "aa", "r") as { reason: string }).reason, "unknown_token");
    assert.equal((g.redeem(tokens[1] as string, "aa", "r") as { reason: string }).reason, "unknown_token");
    assert.ok(g.redeem(tokens[2] as string, "aa", "r").ok);
    assert.ok(g.redeem(tokens[9] as string, "aa", "r").ok);
  });
});

// ---------------------------------------------------------------------------------------------
// Through a tunnel client and a tunnel server, to a small FTP server in Node.

let pki: TestPki;
const issued: Record<string, IssuedFiles> = {};
let fake: FakeFtp;

async function material(name: string): Promise<TlsMaterial> {
  const f = issued[name] as IssuedFiles;
  const m = await loadTlsMaterial({ cert: f.cert, key: f.key, ca: f.ca });
  cleanups.push(() => m.close());
  return m;
}

interface ServerHandle {
  tunnel: TunnelServer;
  address: Address & { kind: "tcp" };
  registry: Registry;
  events: ConnectionAuditFields[];
}

async function startServer(
  ftpPort: number,
  over: Partial<TunnelServerOptions> & { protocol?: "tcp" | "ftp" } = {},
): Promise<ServerHandle> {
  const registry = new Registry();
  const { protocol, ...rest } = over;
  const tunnel = new TunnelServer({
    name: "ftp-srv",
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    routes: [
      {
        target: { kind: "tcp", host: "127.0.0.1", port: ftpPort },
        policy: compilePolicy(rulesFromFlags({ allowCn: ["alice", "bob"] })),
        protocol: protocol ?? "ftp",
      },
    ],
    material: await material("server"),
    registry,
    handshakeTimeoutMs: 5000,
    ...rest,
  });
  const events: ConnectionAuditFields[] = [];
  tunnel.on("connection", (e: ConnectionAuditFields) => events.push(e));
  const address = (await tunnel.start()) as Address & { kind: "tcp" };
  cleanups.push(() => tunnel.stop(100));
  return { tunnel, address, registry, events };
}

async function startClient(
  server: Address & { kind: "tcp" },
  who: string,
  over: Partial<TunnelClientOptions> = {},
): Promise<{ tunnel: TunnelClient; port: number; registry: Registry; events: ConnectionAuditFields[] }> {
  const registry = new Registry();
  const tunnel = new TunnelClient({
    name: `ftp-cli-${who}`,
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    target: { kind: "tcp", host: "localhost", port: server.port },
    material: await material(who),
    registry,
    protocol: "ftp",
    ...over,
  });
  const events: ConnectionAuditFields[] = [];
  tunnel.on("connection", (e: ConnectionAuditFields) => events.push(e));
  const address = await tunnel.start();
  cleanups.push(() => tunnel.stop(100));
  assert.equal(address.kind, "tcp");
  return { tunnel, port: address.kind === "tcp" ? address.port : 0, registry, events };
}

/** A logged-in FTP control connection to 127.0.0.1:port. */
async function login(port: number): Promise<{ s: Socket; r: FtpReplyReader }> {
  const s = connect({ port, host: "127.0.0.1" });
  s.on("error", () => undefined);
  cleanups.push(() => s.destroy());
  const r = new FtpReplyReader(s);
  assert.equal((await r.next()).code, 220);
  assert.equal((await command(s, r, "USER anonymous")).code, 331);
  assert.equal((await command(s, r, "PASS x@y")).code, 230);
  return { s, r };
}

/** PASV or EPSV, then a connection to the port the reply names (on the control's peer for EPSV). */
async function openData(s: Socket, r: FtpReplyReader, mode: "PASV" | "EPSV"): Promise<Socket> {
  const reply = await command(s, r, mode);
  const addr = mode === "PASV" ? parse227(reply.text) : parse229(reply.text);
  assert.ok(addr, `${mode}: ${reply.text}`);
  const d = connect({ port: addr.port, host: addr.host ?? "127.0.0.1", allowHalfOpen: true });
  d.on("error", () => undefined);
  cleanups.push(() => d.destroy());
  await within(once(d, "connect"), 5000, "data connect");
  return d;
}

/** Reads to the end, then closes its side too (as FTP clients do). */
function readAll(s: Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on("data", (d: Buffer) => parts.push(d));
  return within(
    new Promise((resolve) =>
      s.once("end", () => {
        s.end();
        resolve(Buffer.concat(parts));
      }),
    ),
    10_000,
    "data to its end",
  );
}

async function metric(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) return 0;
  const { values } = await m.get();
  return values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))?.value ?? 0;
}

/** A TLS connection straight to the tunnel server with `who`'s certificate (a hand-made client end). */
async function tlsDial(server: Address & { kind: "tcp" }, who: string): Promise<TLSSocket> {
  const f = issued[who] as IssuedFiles;
  const s = tlsConnect({
    host: "127.0.0.1",
    port: server.port,
    servername: "localhost",
    ca: readFileSync(f.ca),
    cert: readFileSync(f.cert),
    key: readFileSync(f.key),
  });
  s.on("error", () => undefined);
  cleanups.push(() => s.destroy());
  await within(once(s, "secureConnect"), 5000, "TLS connect");
  return s;
}

before(async () => {
  pki = await createTestPki("mtls-ftp-");
  cleanups.push(() => pki.close());
  issued.server = await pki.issue("server", "server", {
    sans: [makeSan("dns", "localhost"), makeSan("ip", "127.0.0.1")],
  });
  issued.alice = await pki.issue("client", "alice");
  issued.bob = await pki.issue("client", "bob");
  fake = await startFakeFtp();
  cleanups.push(() => fake.close());
});

describe("FTP through a tunnel client and server", () => {
  it("lists, downloads and uploads with EPSV and PASV, byte for byte, over mTLS data connections", async () => {
    const srv = await startServer(fake.port);
    const cli = await startClient(srv.address, "alice");
    const content = randomBytes(1024 * 1024 + 17);
    fake.files.set("blob.bin", content);
    const { s, r } = await login(cli.port);
    for (const mode of ["EPSV", "PASV"] as const) {
      let d = await openData(s, r, mode);
      let data = readAll(d);
      assert.equal((await command(s, r, "LIST")).code, 150);
      assert.match((await data).toString(), /blob\.bin/);
      assert.equal((await r.next()).code, 226);

      d = await openData(s, r, mode);
      data = readAll(d);
      assert.equal((await command(s, r, "RETR blob.bin")).code, 150);
      assert.equal(sha256(await data), sha256(content));
      assert.equal((await r.next()).code, 226);

      d = await openData(s, r, mode);
      assert.equal((await command(s, r, `STOR up-${mode}.bin`)).code, 150);
      d.end(content);
      assert.equal((await r.next()).code, 226);
      assert.equal(sha256(fake.files.get(`up-${mode}.bin`) as Buffer), sha256(content));
    }
    assert.equal((await command(s, r, "QUIT")).code, 221);
    await until(() => srv.events.filter((e) => e.ftp?.channel === "data").length === 6, 3000, "data audits");
    const data = srv.events.filter((e) => e.ftp?.channel === "data");
    assert.ok(data.every((e) => e.allowed && e.identity?.subject.includes("alice")));
    await until(() => srv.events.some((e) => e.ftp?.channel === "control"), 3000, "control audit");
    const control = srv.events.find((e) => e.ftp?.channel === "control") as ConnectionAuditFields;
    assert.ok(data.every((e) => e.ftp?.session === control.ftp?.session));
    assert.equal(
      await metric(srv.registry, "mtls_tunnel_ftp_data_connections_total", { result: "allowed" }),
      6,
    );
    assert.equal(
      await metric(cli.registry, "mtls_tunnel_ftp_data_connections_total", { result: "allowed" }),
      6,
    );
    assert.equal(
      await metric(srv.registry, "mtls_tunnel_ftp_passive_replies_total", { result: "rewritten" }),
      6,
    );
  });

  it("answers PORT and EPRT with 502 without the FTP server ever seeing them", async () => {
    const srv = await startServer(fake.port);
    const cli = await startClient(srv.address, "alice");
    const { s, r } = await login(cli.port);
    const before = fake.commands.length;
    assert.equal((await command(s, r, "PORT 127,0,0,1,200,1")).text, ACTIVE_MODE_REPLY);
    assert.equal((await command(s, r, "EPRT |1|127.0.0.1|51201|")).text, ACTIVE_MODE_REPLY);
    assert.equal((await command(s, r, "NOOP")).code, 200);
    assert.deepEqual(fake.commands.slice(before), ["NOOP"]);
    assert.equal(
      await metric(srv.registry, "mtls_tunnel_ftp_commands_refused_total", { command: "EPRT" }),
      1,
    );
  });

  it("works when the FTP server writes its replies a byte at a time, multi-line 227 included", async () => {
    const slow = await startFakeFtp({
      dribble: true,
      multiLine227: true,
      files: new Map([["a", Buffer.from("hi")]]),
    });
    cleanups.push(() => slow.close());
    const srv = await startServer(slow.port);
    const cli = await startClient(srv.address, "alice");
    const { s, r } = await login(cli.port);
    const d = await openData(s, r, "PASV");
    const data = readAll(d);
    assert.equal((await command(s, r, "RETR a")).code, 150);
    assert.equal((await data).toString(), "hi");
    assert.equal((await r.next()).code, 226);
  });

  it("refuses a 227 that names another host than the FTP server's", async () => {
    const liar = await startFakeFtp({ pasvHost: "10.9.8.7" });
    cleanups.push(() => liar.close());
    const srv = await startServer(liar.port);
    const cli = await startClient(srv.address, "alice");
    const { s, r } = await login(cli.port);
    const reply = await command(s, r, "PASV");
    assert.equal(reply.code, 425);
    assert.match(reply.text, /10\.9\.8\.7/);
    assert.equal(
      await metric(srv.registry, "mtls_tunnel_ftp_passive_replies_total", { result: "foreign_host" }),
      1,
    );
    // The session goes on.
    assert.equal((await command(s, r, "NOOP")).code, 200);
  });

  it("refuses a data connection with another certificate; the token stays good for its owner, once", async () => {
    const srv = await startServer(fake.port);
    fake.files.set("secret.txt", Buffer.from("for alice only"));
    // A hand-made client end for alice: the control connection straight over TLS.
    const control = await tlsDial(srv.address, "alice");
    control.write("MTLS-FTP/1 CONTROL\r\n");
    assert.equal(await readLine(control, 256, 5000), "MTLS-FTP/1 OK");
    const r = new FtpReplyReader(control);
    control.resume();
    const greeting = await r.next();
    assert.equal(greeting.code, 220);
    await command(control, r, "USER anonymous");
    await command(control, r, "PASS x");
    const announced = parsePrivateReply((await command(control, r, "EPSV")).text);
    assert.ok(announced);

    const dataLine = (s: TLSSocket) => within(readLine(s, 256, 5000), 6000, "preamble answer");
    const bob = await tlsDial(srv.address, "bob");
    bob.write(`MTLS-FTP/1 DATA ${announced.token}\r\n`);
    const refusal = await dataLine(bob);
    assert.match(refusal, /^MTLS-FTP\/1 NO wrong_certificate /);
    // The thief learns nothing about the session it tried to join.
    assert.ok(!refusal.includes(issued.alice?.certificate.fingerprint as string));
    assert.doesNotMatch(refusal, /session|[0-9a-f]{64}/i);

    const alice = await tlsDial(srv.address, "alice");
    alice.write(`MTLS-FTP/1 DATA ${announced.token}\r\n`);
    assert.equal(await dataLine(alice), "MTLS-FTP/1 OK");
    const data = readAll(alice as unknown as Socket);
    alice.resume();
    assert.equal((await command(control, r, "RETR secret.txt")).code, 150);
    assert.equal((await data).toString(), "for alice only");
    assert.equal((await r.next()).code, 226);

    const again = await tlsDial(srv.address, "alice");
    again.write(`MTLS-FTP/1 DATA ${announced.token}\r\n`);
    assert.match(await dataLine(again), /^MTLS-FTP\/1 NO token_used /);

    const refused = srv.events.filter((e) => !e.allowed).map((e) => e.reason);
    assert.deepEqual(refused, ["ftp_wrong_certificate", "ftp_token_used"]);
    const bobEvent = srv.events.find((e) => e.reason === "ftp_wrong_certificate");
    assert.match(bobEvent?.identity?.subject ?? "", /bob/);
    assert.equal(
      await metric(srv.registry, "mtls_tunnel_ftp_data_connections_total", { result: "wrong_certificate" }),
      1,
    );

    // Tokens die with their control connection.
    const next = parsePrivateReply((await command(control, r, "PASV")).text);
    assert.ok(next);
    control.destroy();
    await new Promise((res) => setTimeout(res, 100));
    const late = await tlsDial(srv.address, "alice");
    late.write(`MTLS-FTP/1 DATA ${next.token}\r\n`);
    assert.match(await dataLine(late), /^MTLS-FTP\/1 NO (unknown_token|control_closed) /);
  });

  it("keeps a session's data ports through a reload of the routes", async () => {
    const srv = await startServer(fake.port);
    const cli = await startClient(srv.address, "alice");
    fake.files.set("r.txt", Buffer.from("after the reload"));
    const { s, r } = await login(cli.port);
    srv.tunnel.updateRoutes([
      {
        target: { kind: "tcp", host: "127.0.0.1", port: fake.port },
        policy: compilePolicy(rulesFromFlags({ allowCn: ["alice"] })),
        protocol: "ftp",
      },
    ]);
    const d = await openData(s, r, "EPSV");
    const data = readAll(d);
    assert.equal((await command(s, r, "RETR r.txt")).code, 150);
    assert.equal((await data).toString(), "after the reload");
    assert.equal((await r.next()).code, 226);
  });

  it("refuses a data connection after the data timeout", async () => {
    const srv = await startServer(fake.port, { ftpDataTimeoutMs: 200 });
    const cli = await startClient(srv.address, "alice", { ftpDataTimeoutMs: 5000 });
    const { s, r } = await login(cli.port);
    const reply = await command(s, r, "EPSV");
    const port = parse229(reply.text)?.port as number;
    await new Promise((res) => setTimeout(res, 300));
    const d = connect({ port, host: "127.0.0.1" });
    d.on("error", () => undefined);
    cleanups.push(() => d.destroy());
    d.resume();
    await within(once(d, "close"), 5000, "data connection closed");
    await until(() => cli.events.some((e) => e.reason === "ftp_token_expired"), 3000, "client audit");
    assert.ok(srv.events.some((e) => e.reason === "ftp_token_expired" && !e.allowed));
  });

  it("says clearly when only one end runs --protocol ftp", async () => {
    // Server end in tcp mode: the client end sees the FTP server's greeting instead of the acknowledgement.
    const tcpServer = await startServer(fake.port, { protocol: "tcp" });
    const cli = await startClient(tcpServer.address, "alice");
    const s = connect({ port: cli.port, host: "127.0.0.1" });
    s.on("error", () => undefined);
    cleanups.push(() => s.destroy());
    const r = new FtpReplyReader(s);
    const reply = await r.next();
    assert.equal(reply.code, 421);
    assert.match(reply.text, /start it with --protocol ftp/);

    // Client end in tcp mode: the server end waits for a preamble until the handshake timeout.
    const ftpServer = await startServer(fake.port, { handshakeTimeoutMs: 300 });
    const tcpClient = await startClient(ftpServer.address, "alice", { protocol: "tcp" });
    const t = connect({ port: tcpClient.port, host: "127.0.0.1" });
    t.on("error", () => undefined);
    cleanups.push(() => t.destroy());
    t.resume();
    await within(once(t, "close"), 5000, "closed by the server end");
    await until(() => ftpServer.events.length > 0, 2000, "server audit");
    assert.equal(ftpServer.events[0]?.reason, "ftp_no_preamble");
    assert.match(ftpServer.events[0]?.detail ?? "", /--protocol ftp/);
  });

  it("keeps the control connection through a transfer longer than the idle timeout", async () => {
    // A download that trickles for 1.5 s while the control connection says nothing.
    const slowData = createServer({ allowHalfOpen: true });
    cleanups.push(() => slowData.close());
    const trickle: Server = createServer((c) => {
      c.on("error", () => undefined);
      c.write("220 hi\r\n");
      c.on("data", async (d: Buffer) => {
        const line = d.toString();
        if (line.startsWith("EPSV")) {
          slowData.listen(0, "127.0.0.1");
          await once(slowData, "listening");
          c.write(`229 Entering Extended Passive Mode (|||${(slowData.address() as AddressInfo).port}|)\r\n`);
        } else if (line.startsWith("RETR")) {
          const [dc] = (await once(slowData, "connection")) as [Socket];
          c.write("150 here\r\n");
          for (let i = 0; i < 6; i++) {
            dc.write(`chunk ${i}\n`);
            await new Promise((res) => setTimeout(res, 250));
          }
          dc.end();
          c.write("226 done\r\n");
        }
      });
    });
    trickle.listen(0, "127.0.0.1");
    await once(trickle, "listening");
    cleanups.push(() => trickle.close());
    const srv = await startServer((trickle.address() as AddressInfo).port, { idleTimeoutMs: 600 });
    const cli = await startClient(srv.address, "alice", { idleTimeoutMs: 600 });
    const s = connect({ port: cli.port, host: "127.0.0.1" });
    s.on("error", () => undefined);
    cleanups.push(() => s.destroy());
    const r = new FtpReplyReader(s);
    assert.equal((await r.next()).code, 220);
    const reply = await command(s, r, "EPSV");
    const d = connect({ port: parse229(reply.text)?.port as number, host: "127.0.0.1" });
    d.on("error", () => undefined);
    cleanups.push(() => d.destroy());
    const data = readAll(d);
    assert.equal((await command(s, r, "RETR x")).code, 150);
    assert.equal((await data).toString().split("\n").length, 7);
    assert.equal((await r.next()).code, 226);
  });
});
