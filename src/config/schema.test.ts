import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { isMtlsError } from "../errors.js";
import { loadConfig, type MtlsConfig, parseConfig } from "./load.js";

const DIR = "/etc/mtls";
const parse = (text: string, env: NodeJS.ProcessEnv = {}): MtlsConfig =>
  parseConfig(text, { source: "mtls.yaml", dir: DIR, env });

/** The error line parseConfig throws for `text` (asserting it is one E_BAD_INPUT line). */
function errorOf(text: string): string {
  try {
    parse(text);
  } catch (err) {
    assert.ok(isMtlsError(err, "E_BAD_INPUT"), String(err));
    assert.ok(!err.message.includes("\n"), `one line: ${err.message}`);
    return err.message;
  }
  assert.fail("the config was accepted");
}

const SERVER = `tunnels:
  - name: vnc
    mode: server
    listen: 0.0.0.0:5901
    target: 127.0.0.1:5900
    cert: vnc.crt
    key: vnc.key
    ca: ca.crt
    allow:
      - uri: spiffe://acme.test/user/*
        ou: ops
      - cn: alice
`;
const CLIENT = `  - name: office
    mode: client
    listen: 127.0.0.1:5900
    target: vnc.acme.test:5901
    cert: alice.crt
    key: alice.key
    ca: ca.crt
`;

describe("mtls.yaml: valid files", () => {
  test("the complete example of docs/config.md parses", () => {
    const here = dirname(fileURLToPath(import.meta.url));
    const doc = readFileSync(resolve(here, "../../docs/config.md"), "utf8");
    const yaml = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
    assert.ok(yaml, "a yaml block in docs/config.md");
    const c = parse(yaml);
    assert.deepEqual(
      c.tunnels.map((t) => [t.name, t.mode]),
      [
        ["vnc", "server"],
        ["apps", "server"],
        ["office-vnc", "client"],
      ],
    );
    assert.equal(c.status, "127.0.0.1:9090");
    const apps = c.tunnels[1];
    assert.deepEqual(apps?.tls, { state: "/etc/mtls/.mtls", identity: "apps.acme.test" });
    assert.deepEqual(
      apps?.sni.map((r) => [r.serverName, r.target, r.allow]),
      [
        ["wiki.acme.test", "127.0.0.1:8080", [{ ou: ["staff"] }]],
        ["ftp.acme.test", "127.0.0.1:2121", [{ all: true }]],
      ],
    );
    // A route's own certificate, trusting the root of the tunnel's CA.
    assert.deepEqual(apps?.sni[0]?.tls, {
      cert: "/etc/mtls/wiki.crt",
      key: "/etc/mtls/wiki.key",
      ca: "/etc/mtls/.mtls/ca/root.crt",
    });
    assert.equal(apps?.sni[1]?.tls, undefined);
    assert.equal(apps?.proxyProtocol, true);
  });

  test("a server tunnel: paths relative to the file's folder, rules as lists, defaults", () => {
    const c = parse(SERVER);
    assert.equal(c.source, "mtls.yaml");
    assert.equal(c.logLevel, "info");
    assert.equal(c.status, undefined);
    const t = c.tunnels[0];
    assert.ok(t);
    assert.equal(t.path, "tunnels[0]");
    assert.deepEqual(t.tls, { cert: "/etc/mtls/vnc.crt", key: "/etc/mtls/vnc.key", ca: "/etc/mtls/ca.crt" });
    assert.deepEqual(t.allow, [{ uri: ["spiffe://acme.test/user/*"], ou: ["ops"] }, { cn: ["alice"] }]);
    assert.deepEqual(t.settings, {
      handshakeTimeoutMs: 10_000,
      connectTimeoutMs: 10_000,
      idleTimeoutMs: 12 * 3_600_000,
      maxConnections: 0,
      maxConnLifetimeMs: 0,
      shutdownTimeoutMs: 30_000,
    });
    assert.deepEqual([t.crl, t.ocsp, t.sni, t.proxyProtocol, t.unsafeTarget], [[], false, [], false, false]);
  });

  test("defaults: apply to every tunnel; a tunnel's own setting wins; off is 0", () => {
    const c = parse(
      `defaults:
  idle_timeout: off
  handshake_timeout: 3s
  max_connections: 100
  reload_interval: 1h
${SERVER}    handshake_timeout: 1m
    max_conn_lifetime: 8h
${CLIENT}    reload_interval: off
`,
    );
    assert.deepEqual(c.tunnels[0]?.settings, {
      handshakeTimeoutMs: 60_000,
      connectTimeoutMs: 10_000,
      idleTimeoutMs: 0,
      maxConnections: 100,
      maxConnLifetimeMs: 8 * 3_600_000,
      shutdownTimeoutMs: 30_000,
      reloadIntervalMs: 3_600_000,
    });
    assert.equal(c.tunnels[1]?.settings.handshakeTimeoutMs, 3_000);
    assert.equal(c.tunnels[1]?.settings.reloadIntervalMs, undefined);
  });

  test("a client tunnel, CRL files and URLs, absolute paths kept", () => {
    const c = parse(
      `${SERVER}    crl: [/var/lib/ca.crl, http://ca.acme.test/ca.crl, crls/more.crl]
    ocsp: true
${CLIENT}    server_name: vnc.acme.test
    verify_uri: spiffe://acme.test/host/vnc
    proxy: http://proxy:3128
`,
    );
    assert.deepEqual(c.tunnels[0]?.crl, [
      "/var/lib/ca.crl",
      "http://ca.acme.test/ca.crl",
      "/etc/mtls/crls/more.crl",
    ]);
    assert.equal(c.tunnels[0]?.ocsp, true);
    const t = c.tunnels[1];
    assert.equal(t?.mode, "client");
    assert.equal(t?.target, "vnc.acme.test:5901");
    assert.equal(t?.serverName, "vnc.acme.test");
    assert.deepEqual(t?.verifyUri, ["spiffe://acme.test/host/vnc"]);
    assert.equal(t?.proxy, "http://proxy:3128");
    assert.equal(t?.unsafeListen, false);
  });

  test("identity: the state directory of the tunnel, the file, $MTLS_STATE, else .mtls beside the file", () => {
    const yaml = (top: string, own: string) => `${top}tunnels:
  - name: a
    mode: client
    listen: 127.0.0.1:1
    target: localhost:2
    identity: alice
${own}`;
    assert.deepEqual(parse(yaml("", "")).tunnels[0]?.tls, { state: "/etc/mtls/.mtls", identity: "alice" });
    assert.deepEqual(parse(yaml("", ""), { MTLS_STATE: "/srv/state" }).tunnels[0]?.tls, {
      state: "/srv/state",
      identity: "alice",
    });
    assert.deepEqual(parse(yaml("state: ca-state\n", ""), { MTLS_STATE: "/srv/state" }).tunnels[0]?.tls, {
      state: "/etc/mtls/ca-state",
      identity: "alice",
    });
    assert.deepEqual(parse(yaml("state: ca-state\n", "    state: /other\n")).tunnels[0]?.tls, {
      state: "/other",
      identity: "alice",
    });
  });

  test("protocol ftp: on a tunnel, inherited by its SNI routes unless they say otherwise", () => {
    const c = parse(`defaults: { ftp_data_timeout: 1m }
tunnels:
  - name: ftp
    mode: server
    protocol: ftp
    listen: :2121
    target: 127.0.0.1:21
    cert: d.crt
    key: d.key
    ca: ca.crt
    allow: [{ cn: alice }]
    sni:
      - { server_name: ftp.acme.test, target: 127.0.0.1:2021 }
      - { server_name: web.acme.test, target: 127.0.0.1:8080, protocol: tcp }
  - name: ftp-client
    mode: client
    protocol: ftp
    listen: 127.0.0.1:2121
    target: ftp.acme.test:2121
    identity: alice
    ftp_data_timeout: 10s
`);
    const [server, client] = c.tunnels;
    assert.equal(server?.protocol, "ftp");
    assert.deepEqual(
      server?.sni.map((r) => r.protocol),
      ["ftp", "tcp"],
    );
    assert.equal(server?.settings.ftpDataTimeoutMs, 60_000);
    assert.equal(client?.protocol, "ftp");
    assert.equal(client?.settings.ftpDataTimeoutMs, 10_000);
    assert.equal(parse(SERVER).tunnels[0]?.protocol, "tcp");
  });

  test("SNI routes: inherit the tunnel's rules, or bring their own; no default route without target", () => {
    const c = parse(`tunnels:
  - name: apps
    mode: server
    listen: :8443
    cert: d.crt
    key: d.key
    ca: ca.crt
    allow: [{ cn: alice }]
    sni:
      - server_name: a.acme.test
        target: 127.0.0.1:1
      - server_name: "*.b.acme.test"
        target: unix:/run/b.sock
        cert: b.crt
        key: b.key
        ca: b-ca.crt
        allow: [{ all: true }]
`);
    const t = c.tunnels[0];
    assert.equal(t?.target, undefined);
    assert.deepEqual(
      t?.sni.map((r) => [r.path, r.serverName, r.allow, r.tls]),
      [
        ["tunnels[0].sni[0]", "a.acme.test", [{ cn: ["alice"] }], undefined],
        [
          "tunnels[0].sni[1]",
          "*.b.acme.test",
          [{ all: true }],
          { cert: "/etc/mtls/b.crt", key: "/etc/mtls/b.key", ca: "/etc/mtls/b-ca.crt" },
        ],
      ],
    );
  });
});

describe("mtls.yaml: keys in a PKCS#11 token", () => {
  test("a key named by a pkcs11: URI stays a URI; a key file is resolved against the file's folder", () => {
    const uri = "pkcs11:token=mtls;object=vnc";
    const c = parse(SERVER.replace("key: vnc.key", `key: "${uri}"`));
    assert.deepEqual(c.tunnels[0]?.tls, { cert: "/etc/mtls/vnc.crt", key: uri, ca: "/etc/mtls/ca.crt" });
    assert.deepEqual(parse(SERVER).tunnels[0]?.tls, {
      cert: "/etc/mtls/vnc.crt",
      key: "/etc/mtls/vnc.key",
      ca: "/etc/mtls/ca.crt",
    });
  });
});

describe("mtls.yaml: every kind of mistake is one line naming its place", () => {
  const cases: [string, string, string][] = [
    [
      "an unknown key in a rule",
      SERVER.replace("- cn: alice", "- urii: [x]"),
      'mtls.yaml: tunnels[0].allow[1]: unknown key "urii"',
    ],
    ["an unknown top-level key", `${SERVER}logg: {}\n`, 'mtls.yaml: unknown key "logg"'],
    ["a misspelt required key", "tunnel:\n  - name: x\n", 'mtls.yaml: unknown key "tunnel"'],
    [
      "a missing key",
      SERVER.replace("    listen: 0.0.0.0:5901\n", ""),
      'mtls.yaml: tunnels[0]: missing key "listen"',
    ],
    ["no tunnels key", "log: { level: info }\n", 'mtls.yaml: missing key "tunnels"'],
    ["an empty file", "# nothing yet\n", 'mtls.yaml: the file is empty: it needs at least "tunnels:"'],
    ["a list at the top", "- a\n", "mtls.yaml: expected a mapping (key: value), got a list"],
    ["no tunnels", "tunnels: []\n", "mtls.yaml: tunnels: the list is empty: give at least one tunnel"],
    [
      "a YAML syntax error",
      "tunnels:\n  - name: x\n   mode: server\n",
      "mtls.yaml: line 3, column 1: invalid YAML: Sequence item without - indicator",
    ],
    [
      "a duplicate key",
      "tunnels: []\ntunnels: []\n",
      "mtls.yaml: line 2, column 1: invalid YAML: Map keys must be unique",
    ],
    [
      "a number for a string",
      SERVER.replace("0.0.0.0:5901", "5901"),
      "mtls.yaml: tunnels[0].listen: expected a string, got the number 5901",
    ],
    [
      "nothing for a string",
      SERVER.replace(" 0.0.0.0:5901", ""),
      "mtls.yaml: tunnels[0].listen: expected a string, got nothing",
    ],
    [
      "a string for a boolean",
      `${SERVER}    ocsp: yes\n`,
      'mtls.yaml: tunnels[0].ocsp: expected true or false, got "yes"',
    ],
    [
      "an unknown mode",
      SERVER.replace("mode: server", "mode: srv"),
      'mtls.yaml: tunnels[0].mode: must be server or client, not "srv"',
    ],
    [
      "an unknown protocol",
      `${SERVER}    protocol: sftp\n`,
      'mtls.yaml: tunnels[0].protocol: must be tcp or ftp, not "sftp"',
    ],
    [
      "an unknown log level",
      `log: { level: loud }\n${SERVER}`,
      'mtls.yaml: log.level: must be one of fatal, error, warn, info, debug, trace, silent, not "loud"',
    ],
    [
      "a bad duration",
      `${SERVER}    idle_timeout: 12 hours\n`,
      'mtls.yaml: tunnels[0].idle_timeout: invalid duration "12 hours" (examples: 10s, 12h, 1h30m; "off" for none)',
    ],
    [
      "a duration without unit",
      `defaults:\n  handshake_timeout: 10\n${SERVER}`,
      "mtls.yaml: defaults.handshake_timeout: expected a duration (examples: 10s, 12h, 1h30m), got the number 10",
    ],
    [
      "off where a duration is needed",
      `${SERVER}    shutdown_timeout: off\n`,
      'mtls.yaml: tunnels[0].shutdown_timeout: invalid duration "off" (examples: 10s, 12h, 1h30m)',
    ],
    [
      "a negative count",
      `${SERVER}    max_connections: -1\n`,
      "mtls.yaml: tunnels[0].max_connections: expected a whole number, 0 for no limit, got the number -1",
    ],
    [
      "a number for a rule value",
      SERVER.replace("cn: alice", "cn: 5"),
      "mtls.yaml: tunnels[0].allow[1].cn: expected a string or a list of strings, got the number 5",
    ],
    [
      "an empty value list",
      SERVER.replace("cn: alice", "cn: []"),
      "mtls.yaml: tunnels[0].allow[1].cn: the list is empty",
    ],
    [
      "an empty rule",
      SERVER.replace("- cn: alice", "- {}"),
      "mtls.yaml: tunnels[0].allow[1]: an empty rule: give at least one condition (all: true, cn, ou, dns, uri, email, fingerprint, spki)",
    ],
    [
      "an empty allow list",
      SERVER.replace(/ {4}allow:[\s\S]*$/, "    allow: []\n"),
      "mtls.yaml: tunnels[0].allow: the list is empty (deny by default: give at least one rule)",
    ],
    [
      "a server without rules",
      SERVER.replace(/ {4}allow:[\s\S]*$/, ""),
      'mtls.yaml: tunnels[0]: missing key "allow" (deny by default: a server tunnel needs at least one rule)',
    ],
    [
      "a server without target or sni",
      SERVER.replace("    target: 127.0.0.1:5900\n", ""),
      'mtls.yaml: tunnels[0]: missing key "target" (or "sni": routes by server name)',
    ],
    [
      "half a certificate",
      SERVER.replace("    key: vnc.key\n", ""),
      "mtls.yaml: tunnels[0]: give cert, key and ca together (missing: key)",
    ],
    [
      "files and an identity",
      `${SERVER}    identity: vnc\n`,
      "mtls.yaml: tunnels[0]: give either cert, key and ca or identity, not both (cert, key, ca given)",
    ],
    [
      "no certificate",
      SERVER.replace("    cert: vnc.crt\n    key: vnc.key\n    ca: ca.crt\n", ""),
      "mtls.yaml: tunnels[0]: no certificate: give cert, key and ca (or identity, from the local CA)",
    ],
    [
      "a state without identity",
      `${SERVER}    state: .mtls\n`,
      'mtls.yaml: tunnels[0].state: goes with "identity" (the name the certificate was issued under)',
    ],
    [
      "a client key on a server",
      `${SERVER}    server_name: x\n`,
      "mtls.yaml: tunnels[0].server_name: only for client tunnels",
    ],
    [
      "a server key on a client",
      `tunnels:\n${CLIENT}    allow: [{ all: true }]\n`,
      "mtls.yaml: tunnels[0].allow: only for server tunnels",
    ],
    [
      "a client without target",
      `tunnels:\n${CLIENT.replace("    target: vnc.acme.test:5901\n", "")}`,
      'mtls.yaml: tunnels[0]: missing key "target" (the tunnel server: host:port)',
    ],
    [
      "two tunnels of one name",
      `${SERVER}${CLIENT.replace("name: office", "name: vnc")}`,
      'mtls.yaml: tunnels[1].name: "vnc" is already the name of tunnels[0]',
    ],
    [
      "a bad tunnel name",
      SERVER.replace("name: vnc", "name: my vnc"),
      'mtls.yaml: tunnels[0].name: "my vnc" is not a tunnel name (letters, digits, ".", "_", "-")',
    ],
    [
      "an SNI route without rules anywhere",
      SERVER.replace(/ {4}target:.*\n/, "").replace(
        / {4}allow:[\s\S]*$/,
        "    sni:\n      - server_name: a.test\n        target: 127.0.0.1:1\n",
      ),
      'mtls.yaml: tunnels[0].sni[0]: missing key "allow" (no rules for this name, and none on the tunnel)',
    ],
    [
      "an SNI route without a target",
      `${SERVER}    sni:\n      - server_name: a.test\n`,
      'mtls.yaml: tunnels[0].sni[0]: missing key "target"',
    ],
    [
      "two SNI routes of one name",
      `${SERVER}    sni:\n      - { server_name: a.test, target: 127.0.0.1:1 }\n      - { server_name: A.test, target: 127.0.0.1:2 }\n`,
      'mtls.yaml: tunnels[0].sni[1].server_name: "A.test" is already routed by tunnels[0].sni[0]',
    ],
    [
      "a route certificate without key",
      `${SERVER}    sni:\n      - { server_name: a.test, target: 127.0.0.1:1, cert: a.crt }\n`,
      "mtls.yaml: tunnels[0].sni[0]: give cert and key together (missing: key)",
    ],
  ];
  for (const [what, text, line] of cases) {
    test(what, () => assert.equal(errorOf(text), line));
  }
});

describe("loadConfig", () => {
  const dir = mkdtempSync(join(tmpdir(), "mtls-config-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("reads the file; relative paths are relative to its folder; the name in errors is as given", async () => {
    const file = join(dir, "mtls.yaml");
    writeFileSync(file, SERVER);
    const c = await loadConfig(file);
    assert.equal(c.file, file);
    assert.equal(c.dir, dir);
    assert.match(c.digest ?? "", /^[0-9a-f]{64}$/);
    assert.deepEqual(c.tunnels[0]?.tls, {
      cert: join(dir, "vnc.crt"),
      key: join(dir, "vnc.key"),
      ca: join(dir, "ca.crt"),
    });
    writeFileSync(file, SERVER.replace("cn: alice", "cn: []"));
    await assert.rejects(loadConfig(file, { source: "conf/mtls.yaml" }), {
      code: "E_BAD_INPUT",
      message: "conf/mtls.yaml: tunnels[0].allow[1].cn: the list is empty",
    });
  });

  test("a missing file is E_NOT_FOUND", async () => {
    await assert.rejects(loadConfig(join(dir, "nope.yaml"), { source: "nope.yaml" }), {
      code: "E_NOT_FOUND",
      message: "nope.yaml: no such file",
    });
  });
});
