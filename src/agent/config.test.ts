/** The `agent:` section of mtls.yaml (config/schema.ts agentSchema, config/load.ts agentOf). */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseConfig } from "../config/load.js";

const parse = (text: string, require: "agent" | "tunnels" = "agent") =>
  parseConfig(text, { source: "mtls.yaml", dir: "/etc/mtls", env: {}, require });

const AGENT = `agent:
  status: 127.0.0.1:9100
  ca_url: https://ca.acme.test:8443
  ca_cert: ca.crt
  certificates:
    - name: web
      cert: web.crt
      key: /secret/web.key
      reload: { signal: HUP, pid_file: /run/nginx.pid }
    - name: api
      cert: api.crt
      key: api.key
      ca_url: https://other.acme.test
      ca_cert: /etc/other/ca.crt
      rekey: true
      reload: { command: [systemctl, reload, api] }
    - name: db
      cert: db.crt
      key: db.key
      reload: { command: "systemctl reload postgresql && logger renewed", timeout: 10s }
    - name: tunnel
      cert: t.crt
      key: t.key
`;

describe("agent section", () => {
  test("certificates with defaults from the section, absolute paths and reload actions", () => {
    const c = parse(AGENT);
    assert.deepEqual(c.tunnels, []);
    assert.equal(c.agent?.status, "127.0.0.1:9100");
    assert.deepEqual(c.agent?.certificates, [
      {
        path: "agent.certificates[0]",
        name: "web",
        cert: "/etc/mtls/web.crt",
        key: "/secret/web.key",
        caUrl: "https://ca.acme.test:8443",
        caCert: "/etc/mtls/ca.crt",
        rekey: false,
        reload: { kind: "signal", signal: "SIGHUP", pidFile: "/run/nginx.pid" },
      },
      {
        path: "agent.certificates[1]",
        name: "api",
        cert: "/etc/mtls/api.crt",
        key: "/etc/mtls/api.key",
        caUrl: "https://other.acme.test",
        caCert: "/etc/other/ca.crt",
        rekey: true,
        reload: { kind: "command", argv: ["systemctl", "reload", "api"], shell: false, timeoutMs: 60_000 },
      },
      {
        path: "agent.certificates[2]",
        name: "db",
        cert: "/etc/mtls/db.crt",
        key: "/etc/mtls/db.key",
        caUrl: "https://ca.acme.test:8443",
        caCert: "/etc/mtls/ca.crt",
        rekey: false,
        reload: {
          kind: "command",
          argv: ["systemctl reload postgresql && logger renewed"],
          shell: true,
          timeoutMs: 10_000,
        },
      },
      {
        path: "agent.certificates[3]",
        name: "tunnel",
        cert: "/etc/mtls/t.crt",
        key: "/etc/mtls/t.key",
        caUrl: "https://ca.acme.test:8443",
        caCert: "/etc/mtls/ca.crt",
        rekey: false,
      },
    ]);
  });

  test("one file for tunnels and the agent: each command finds its section", () => {
    const both = `${AGENT}tunnels:
  - name: vnc
    mode: server
    listen: 0.0.0.0:5901
    target: 127.0.0.1:5900
    cert: t.crt
    key: t.key
    ca: ca.crt
    allow: [{ cn: alice }]
`;
    assert.equal(parse(both, "tunnels").tunnels.length, 1);
    assert.equal(parse(both, "agent").agent?.certificates.length, 4);
  });

  for (const [what, text, message, require] of [
    ["no agent section", "log: { level: info }\n", 'mtls.yaml: missing key "agent"', "agent"],
    ["an empty file", "\n", 'mtls.yaml: the file is empty: it needs at least "agent:"', "agent"],
    ["tunnels still required by mtls up", AGENT, 'mtls.yaml: missing key "tunnels"', "tunnels"],
    [
      "no certificates",
      "agent:\n  certificates: []\n",
      "mtls.yaml: agent.certificates: the list is empty: give at least one certificate",
      "agent",
    ],
    [
      "a missing ca_url",
      "agent:\n  certificates:\n    - { name: a, cert: a.crt, key: a.key, ca_cert: ca.crt }\n",
      'mtls.yaml: agent.certificates[0]: missing key "ca_url" (here or in the agent section)',
      "agent",
    ],
    [
      "an http URL",
      "agent:\n  ca_url: http://ca\n  ca_cert: ca.crt\n  certificates:\n    - { name: a, cert: a.crt, key: a.key }\n",
      'mtls.yaml: agent.certificates[0].ca_url: "http://ca" is not an https:// URL (e.g. https://ca.acme.test:8443)',
      "agent",
    ],
    [
      "a duplicate name",
      "agent:\n  ca_url: https://ca\n  ca_cert: ca.crt\n  certificates:\n    - { name: a, cert: a.crt, key: a.key }\n    - { name: a, cert: b.crt, key: b.key }\n",
      'mtls.yaml: agent.certificates[1].name: "a" is already the name of agent.certificates[0]',
      "agent",
    ],
    [
      "an unknown key",
      "agent:\n  ca_url: https://ca\n  ca_cert: ca.crt\n  certificates:\n    - { name: a, cert: a.crt, key: a.key, ca-url: x }\n",
      'mtls.yaml: agent.certificates[0]: unknown key "ca-url"',
      "agent",
    ],
    [
      "signal without pid file",
      "agent:\n  ca_url: https://ca\n  ca_cert: ca.crt\n  certificates:\n    - { name: a, cert: a.crt, key: a.key, reload: { signal: HUP } }\n",
      'mtls.yaml: agent.certificates[0].reload: missing key "pid_file" (the process to signal)',
      "agent",
    ],
    [
      "an unknown signal",
      "agent:\n  ca_url: https://ca\n  ca_cert: ca.crt\n  certificates:\n    - { name: a, cert: a.crt, key: a.key, reload: { signal: KILL, pid_file: x } }\n",
      'mtls.yaml: agent.certificates[0].reload.signal: must be one of HUP, USR1, USR2, INT, TERM, not "KILL"',
      "agent",
    ],
    [
      "command and signal",
      "agent:\n  ca_url: https://ca\n  ca_cert: ca.crt\n  certificates:\n    - { name: a, cert: a.crt, key: a.key, reload: { signal: HUP, pid_file: x, command: y } }\n",
      "mtls.yaml: agent.certificates[0].reload: give either command or signal and pid_file, not both",
      "agent",
    ],
    [
      "an empty command",
      "agent:\n  ca_url: https://ca\n  ca_cert: ca.crt\n  certificates:\n    - { name: a, cert: a.crt, key: a.key, reload: { command: [] } }\n",
      "mtls.yaml: agent.certificates[0].reload.command: expected a command: a list (argv, run without a shell) or a string (run by sh -c), got a list",
      "agent",
    ],
    [
      "the key in the certificate's file",
      "agent:\n  ca_url: https://ca\n  ca_cert: ca.crt\n  certificates:\n    - { name: a, cert: a.pem, key: a.pem }\n",
      "mtls.yaml: agent.certificates[0].key: the key needs a file of its own, not the certificate's",
      "agent",
    ],
  ] as const) {
    test(`refused: ${what}`, () => {
      assert.throws(
        () => parse(text, require),
        (e) => (e as Error).message === message || assert.fail((e as Error).message),
      );
    });
  }
});
