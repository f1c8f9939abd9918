/**
 * TLS to the target (`--target-tls`): a Node TLS backend that requires client certificates sits
 * behind a server tunnel. The tunnel presents a fixed certificate, or one minted per caller by the
 * local CA (`--target-identity mint`); a backend whose certificate the tunnel cannot verify is
 * refused with reason target_tls. Real sockets on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { readFileSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createServer, type Server, type TLSSocket, connect as tlsConnect } from "node:tls";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { within } from "../../test/fixtures/wait.js";
import { parseConfig } from "../config/load.js";
import { type ConnectionAuditFields, Registry, silentLogger } from "../observe/index.js";
import { type CertInfo, parseCertificate } from "../pki/certinfo.js";
import { makeSan } from "../pki/names.js";
import { openSqliteStore } from "../store/index.js";
import { identityFromCert } from "../tls/index.js";
import type { Address } from "./address.js";
import { type BuiltTunnel, buildTunnel, restartReason, type ServerTunnelSpec } from "./build.js";
import { tunnelSpecsFromConfig } from "./from-config.js";
import { IdentityMinter, mintName } from "./mint.js";

let pki: TestPki;
const f: Record<string, IssuedFiles> = {};
let passphraseFile: string;
const cleanups: (() => unknown)[] = [];

before(async () => {
  pki = await createTestPki("mtls-target-tls-");
  passphraseFile = join(pki.dir, "passphrase.txt");
  writeFileSync(passphraseFile, "t\n");
  f.srv = await pki.issue("server", "srv", {
    sans: [makeSan("dns", "localhost"), makeSan("ip", "127.0.0.1")],
  });
  f.backend = await pki.issue("server", "backend", {
    sans: [makeSan("dns", "backend.acme.test"), makeSan("ip", "127.0.0.1")],
  });
  f.evil = await pki.issue("server", "evil-backend", {
    other: true,
    sans: [makeSan("dns", "backend.acme.test"), makeSan("ip", "127.0.0.1")],
  });
  f.fixed = await pki.issue("client", "tunnel-to-backend");
  f.alice = await pki.issue("client", "alice", {
    organizationalUnit: ["eng"],
    sans: [makeSan("uri", "spiffe://acme.test/user/alice"), makeSan("email", "alice@acme.test")],
  });
  f.bob = await pki.issue("client", "bob", { sans: [makeSan("uri", "spiffe://acme.test/user/bob")] });
  f.carol = await pki.issue("client", "carol", { sans: [makeSan("uri", "spiffe://acme.test/user/carol")] });
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  await pki?.close();
});

interface Backend {
  address: Address;
  /** The client certificate of every connection the backend accepted, leaf first. */
  seen: CertInfo[][];
  server: Server;
}

/** An mTLS backend: requires a client certificate of the test CA, answers "hello CN" and echoes. */
async function startBackend(files: IssuedFiles): Promise<Backend> {
  const seen: CertInfo[][] = [];
  const server = createServer(
    {
      cert: readFileSync(files.cert),
      key: readFileSync(files.key),
      ca: readFileSync(f.srv?.ca as string),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.2",
    },
    (s: TLSSocket) => {
      s.on("error", () => undefined);
      const chain: CertInfo[] = [];
      let c = s.getPeerCertificate(true);
      for (let i = 0; i < 4 && c?.raw; i++) {
        chain.push(parseCertificate(new Uint8Array(c.raw)));
        if (c.issuerCertificate === c) break;
        c = c.issuerCertificate;
      }
      seen.push(chain);
      const cn = chain[0] ? identityFromCert(chain[0]).commonName : "nobody";
      s.write(`hello ${cn}\n`);
      s.pipe(s);
    },
  );
  server.on("tlsClientError", () => undefined);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanups.push(() => new Promise((r) => server.close(() => r(undefined))));
  return {
    server,
    seen,
    address: { kind: "tcp", host: "127.0.0.1", port: (server.address() as AddressInfo).port },
  };
}

interface Started {
  built: BuiltTunnel;
  address: Address;
  registry: Registry;
  events: ConnectionAuditFields[];
}

async function startTunnel(
  target: Address,
  targetTls: NonNullable<ServerTunnelSpec["routes"][0]["targetTls"]>,
  more: Partial<ServerTunnelSpec> = {},
): Promise<Started> {
  const registry = new Registry();
  const spec: ServerTunnelSpec = {
    mode: "server",
    name: "to-backend",
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    tls: { cert: f.srv?.cert as string, key: f.srv?.key as string, ca: f.srv?.ca as string },
    routes: [{ target, rules: [{ all: true }], targetTls }],
    ...more,
  };
  const built = await buildTunnel(spec, { logger: silentLogger(), registry });
  const events: ConnectionAuditFields[] = [];
  built.tunnel.on("connection", (e: ConnectionAuditFields) => events.push(e));
  const address = await built.start();
  cleanups.push(() => built.stop(1000));
  return { built, address, registry, events };
}

/** Connects as `who` through the tunnel; resolves with the backend's first line (or "" if cut). */
async function call(tunnel: Address, who: IssuedFiles): Promise<string> {
  assert.equal(tunnel.kind, "tcp");
  const s = tlsConnect({
    host: "127.0.0.1",
    port: tunnel.kind === "tcp" ? tunnel.port : 0,
    servername: "localhost",
    cert: readFileSync(who.cert),
    key: readFileSync(who.key),
    ca: readFileSync(who.ca),
  });
  s.on("error", () => undefined);
  let text = "";
  const line = new Promise<string>((resolve) => {
    s.on("data", (d: Buffer) => {
      text += d.toString();
      if (text.includes("\n")) resolve(text.slice(0, text.indexOf("\n")));
    });
    s.on("close", () => resolve(text));
  });
  try {
    return await within(line, 5000, "an answer through the tunnel");
  } finally {
    s.destroy();
  }
}

async function rejectedCount(registry: Registry, reason: string): Promise<number> {
  const m = await registry.getSingleMetric("mtls_tunnel_connections_rejected_total")?.get();
  return m?.values.find((v) => v.labels.reason === reason && v.labels.tunnel === "to-backend")?.value ?? 0;
}

const mintSpec = () => ({ state: pki.state, passphraseFile });

describe("TLS to the target", () => {
  it("presents a fixed client certificate to an mTLS backend (trust: the tunnel's own CA file)", async () => {
    const backend = await startBackend(f.backend as IssuedFiles);
    const t = await startTunnel(backend.address, {
      serverName: "backend.acme.test",
      cert: f.fixed?.cert as string,
      key: f.fixed?.key as string,
    });
    assert.equal(await call(t.address, f.alice as IssuedFiles), "hello tunnel-to-backend");
    assert.equal(backend.seen.length, 1);
    assert.equal(backend.seen[0]?.[0]?.serial, f.fixed?.certificate.serial);
    // An IP target without a server name is checked against the certificate's IP SANs.
    const byIp = await startTunnel(backend.address, {
      cert: f.fixed?.cert as string,
      key: f.fixed?.key as string,
    });
    assert.equal(await call(byIp.address, f.bob as IssuedFiles), "hello tunnel-to-backend");
  });

  it("mints a certificate per caller with the caller's identity, cached and shared", async () => {
    const backend = await startBackend(f.backend as IssuedFiles);
    const t = await startTunnel(
      backend.address,
      { serverName: "backend.acme.test", identity: "mint" },
      {
        mint: mintSpec(),
      },
    );
    assert.equal(await call(t.address, f.alice as IssuedFiles), "hello alice");
    assert.equal(await call(t.address, f.alice as IssuedFiles), "hello alice");
    assert.equal(await call(t.address, f.bob as IssuedFiles), "hello bob");
    assert.equal(backend.seen.length, 3);
    const [a1, a2, b1] = backend.seen.map((chain) => chain[0] as CertInfo);
    const alice = identityFromCert(f.alice?.certificate as CertInfo);
    const minted = identityFromCert(a1 as CertInfo);
    assert.equal(minted.commonName, "alice");
    assert.deepEqual(minted.organizationalUnits, ["eng"]);
    assert.deepEqual(minted.uris, ["spiffe://acme.test/user/alice"]);
    assert.deepEqual(minted.emails, alice.emails);
    assert.notEqual(minted.fingerprint, alice.fingerprint, "a new certificate, not the caller's");
    assert.equal(a1?.issuer, pki.ca.intermediate.subject, "issued by our intermediate");
    assert.equal(a2?.serial, a1?.serial, "alice's second connection reuses the cached certificate");
    assert.notEqual(b1?.serial, a1?.serial);
    assert.equal(identityFromCert(b1 as CertInfo).commonName, "bob");
    assert.deepEqual(identityFromCert(b1 as CertInfo).uris, ["spiffe://acme.test/user/bob"]);
    const life = (a1?.notAfter.getTime() ?? 0) - Date.now();
    assert.ok(life > 50 * 60_000 && life <= 60 * 60_000, `about an hour left, not ${life} ms`);

    // Concurrent first connections of one caller share one issuance.
    const answers = await Promise.all([1, 2, 3, 4].map(() => call(t.address, f.carol as IssuedFiles)));
    assert.deepEqual(answers, ["hello carol", "hello carol", "hello carol", "hello carol"]);
    const carolSerials = new Set(backend.seen.slice(3).map((c) => c[0]?.serial));
    assert.equal(carolSerials.size, 1);

    // (4) The minted certificates are in the inventory and the audit log, as the tunnel's doing.
    const store = await openSqliteStore(join(pki.state, "mtls.db"));
    try {
      const name = mintName(f.alice?.certificate.fingerprint as string);
      const records = await store.findCertificates({ name });
      assert.equal(records.length, 1);
      assert.equal(records[0]?.serial, a1?.serial);
      assert.equal(records[0]?.profile, "client");
      assert.equal(records[0]?.status, "valid");
      assert.equal(records[0]?.keyPath, null, "the key was never written");
      const carolRecords = await store.findCertificates({
        name: mintName(f.carol?.certificate.fingerprint as string),
      });
      assert.equal(carolRecords.length, 1, "one issuance for four concurrent connections");
      const audit = await store.listAudit({ limit: 1000 });
      const issued = audit.filter((e) => e.action === "cert.issue" && e.actor === "tunnel:to-backend");
      assert.equal(issued.length, 3, "alice, bob, carol");
    } finally {
      await store.close();
    }
  });

  it("refuses a target whose certificate is from another CA (reason target_tls)", async () => {
    const evil = await startBackend(f.evil as IssuedFiles);
    const t = await startTunnel(evil.address, { serverName: "backend.acme.test" });
    assert.equal(await call(t.address, f.alice as IssuedFiles), "", "the caller's connection is cut");
    assert.equal(evil.seen.length, 0);
    assert.equal(await rejectedCount(t.registry, "target_tls"), 1);
    const e = t.events.find((x) => x.reason === "target_tls");
    assert.ok(e, "an audit event with reason target_tls");
    assert.match(e.detail ?? "", /does not chain to the target CA/);
    assert.equal(e.bytesIn, 0);
  });

  it("refuses a target whose certificate lacks the expected name", async () => {
    const backend = await startBackend(f.backend as IssuedFiles);
    const t = await startTunnel(backend.address, { serverName: "wrong.acme.test" });
    assert.equal(await call(t.address, f.alice as IssuedFiles), "");
    assert.equal(await rejectedCount(t.registry, "target_tls"), 1);
    assert.match(t.events.find((x) => x.reason === "target_tls")?.detail ?? "", /expected name/);
  });

  it("refuses to build: mint without the local CA, cert without key, TLS with ftp", async () => {
    const target: Address = { kind: "tcp", host: "127.0.0.1", port: 9 };
    await assert.rejects(startTunnel(target, { identity: "mint" }), /needs the local CA/);
    await assert.rejects(startTunnel(target, { cert: f.fixed?.cert as string }), /needs both/);
    await assert.rejects(
      buildTunnel(
        {
          mode: "server",
          listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
          tls: { cert: f.srv?.cert as string, key: f.srv?.key as string, ca: f.srv?.ca as string },
          routes: [{ target, rules: [{ all: true }], protocol: "ftp", targetTls: {} }],
        },
        { logger: silentLogger(), registry: new Registry() },
      ),
      /not --protocol ftp/,
    );
    await assert.rejects(
      startTunnel(
        target,
        { identity: "mint" },
        { mint: { state: pki.state, passphraseFile: join(pki.dir, "nope") } },
      ),
      /passphrase file/,
    );
  });

  it("caches a minted certificate until 2/3 of its lifetime", async () => {
    let now = Date.now();
    const minter = new IdentityMinter({
      ca: pki.ca,
      tunnel: "clock",
      ttlMs: 30 * 60_000,
      clock: () => new Date(now),
    });
    const alice = identityFromCert(f.alice?.certificate as CertInfo);
    const first = await minter.forCaller(alice);
    now += 19 * 60_000;
    assert.equal((await minter.forCaller(alice)).serial, first.serial);
    now += 2 * 60_000;
    const second = await minter.forCaller(alice);
    assert.notEqual(second.serial, first.serial, "renewed after 20 of 30 minutes");
    assert.equal(minter.minted, 2);
    await minter.close();
  });
});

describe("target_tls and ocsp_recheck in mtls.yaml", () => {
  it("maps to the spec: routes, the minting CA, and a non-loopback TLS target needs no unsafe_target", () => {
    const config = parseConfig(
      `
state: ${pki.state}
tunnels:
  - name: api
    mode: server
    listen: 127.0.0.1:0
    target: 192.0.2.10:8443
    cert: srv.crt
    key: srv.key
    ca: ca.crt
    state: ${pki.state}
    ocsp: true
    ocsp_recheck: 5s
    allow: [{ all: true }]
    target_tls: { server_name: api.acme.test, identity: mint, mint_ttl: 20m }
    sni:
      - server_name: fixed.acme.test
        target: 127.0.0.1:9443
        target_tls: { ca: backend-ca.crt, cert: t.crt, key: t.key }
`,
      { dir: "/etc/mtls" },
    );
    const [spec] = tunnelSpecsFromConfig(config);
    assert.ok(spec && spec.mode === "server");
    assert.equal(spec.ocspRecheckMs, 5000);
    assert.deepEqual(spec.mint, { state: pki.state, ttlMs: 20 * 60_000 });
    const byName = new Map(spec.routes.map((r) => [r.serverName ?? "*", r]));
    assert.deepEqual(byName.get("*")?.targetTls, { serverName: "api.acme.test", identity: "mint" });
    assert.deepEqual(byName.get("fixed.acme.test")?.targetTls, {
      ca: "/etc/mtls/backend-ca.crt",
      cert: "/etc/mtls/t.crt",
      key: "/etc/mtls/t.key",
    });
    assert.equal(restartReason(spec, { ...spec, ocspRecheckMs: 1000 }), undefined, "swappable");
  });

  it("refuses wrong combinations with their place in the file", () => {
    const base = (extra: string) => `
tunnels:
  - name: api
    mode: server
    listen: 127.0.0.1:0
    target: 127.0.0.1:8443
    cert: srv.crt
    key: srv.key
    ca: ca.crt
    allow: [{ all: true }]
${extra}`;
    assert.throws(
      () => parseConfig(base("    target_tls: { cert: a.crt }")),
      /tunnels\[0\]\.target_tls: give cert and key together/,
    );
    assert.throws(
      () => parseConfig(base("    target_tls: { identity: fixed }")),
      /tunnels\[0\]\.target_tls\.identity: must be mint/,
    );
    assert.throws(() => parseConfig(base("    ocsp_recheck: 5s")), /ocsp_recheck: goes with "ocsp: true"/);
    assert.throws(
      () => parseConfig(base("    target_tls: { mint_ttl: 5m }")),
      /target_tls\.mint_ttl: goes with "identity: mint"/,
    );
  });
});
