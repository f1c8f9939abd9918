/**
 * The TS TLS 1.3 client against `openssl s_server -tls1_3 -Verify 1` (mutual auth required, client chain
 * checked against the test root): each group x suite with ECDSA and RSA server certificates,
 * HelloRetryRequest, KeyUpdate answered by OpenSSL, close_notify, and certificate_required without an
 * identity. s_server runs with -rev (echoes each line reversed) and -naccept 1.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { after, before, describe, it } from "node:test";
import { connectByteStream } from "../../../test/fixtures/byte-stream.js";
import { createWebTlsPki, type ServerFiles, type WebTlsPki } from "../../../test/fixtures/web-tls-pki.js";
import { connectTls, TlsAlertError, type TlsClientOptions, type TlsConnection } from "./index.js";

let pki: WebTlsPki;

/** A port that was free a moment ago (s_server cannot listen on port 0 and report it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

interface SServer {
  port: number;
  output(): string;
  exited: Promise<number | null>;
  proc: ChildProcess;
}

async function startSServer(
  files: ServerFiles,
  groups: string,
  suites: string,
  rev = true,
  extra: string[] = [],
): Promise<SServer> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const proc = spawn(
      "openssl",
      [
        "s_server",
        "-accept",
        `127.0.0.1:${port}`,
        "-tls1_3",
        "-cert",
        files.leafPath,
        "-key",
        files.keyPath,
        "-cert_chain",
        files.chainPath,
        "-Verify",
        "1",
        "-verify_return_error",
        "-CAfile",
        pki.caPath,
        "-groups",
        groups,
        "-ciphersuites",
        suites,
        ...(rev ? ["-rev"] : []),
        ...extra,
        "-naccept",
        "1",
      ],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    let out = "";
    proc.stdout?.on("data", (d) => {
      out += d;
    });
    proc.stderr?.on("data", (d) => {
      out += d;
    });
    const exited = new Promise<number | null>((r) => proc.on("exit", (code) => r(code)));
    const deadline = Date.now() + 5000;
    let gone = false;
    void exited.then(() => {
      gone = true;
    });
    while (!out.includes("ACCEPT") && !gone && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    if (out.includes("ACCEPT")) return { port, output: () => out, exited, proc };
    proc.kill();
    if (attempt >= 2) throw new Error(`s_server did not start: ${out}`);
  }
}

async function stop(s: SServer): Promise<string> {
  const timer = setTimeout(() => s.proc.kill(), 5000);
  await s.exited;
  clearTimeout(timer);
  return s.output();
}

async function client(port: number, extra: Partial<TlsClientOptions> = {}): Promise<TlsConnection> {
  return connectTls(await connectByteStream(port), {
    serverName: "localhost",
    trustAnchors: [pki.caDer],
    identity: pki.client.identity,
    handshakeTimeoutMs: 5000,
    ...extra,
  });
}

async function line(conn: TlsConnection): Promise<string> {
  let s = "";
  while (!s.endsWith("\n")) {
    const c = await conn.read();
    if (c === null) throw new Error(`EOF after ${JSON.stringify(s)}`);
    s += new TextDecoder().decode(c);
  }
  return s;
}

const text = (s: string) => new TextEncoder().encode(s);

before(async () => {
  pki = await createWebTlsPki();
});

after(() => pki.close());

describe("TS TLS client vs openssl s_server", { timeout: 60_000 }, () => {
  const GROUPS = [
    { group: "x25519", openssl: "X25519" },
    { group: "secp256r1", openssl: "P-256" },
  ] as const;
  const SUITES = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
  ] as const;
  for (const { group, openssl } of GROUPS) {
    for (const suite of SUITES) {
      for (const kind of ["ecdsa", "rsa"] as const) {
        it(`${group} + ${suite} with an ${kind} server certificate`, async () => {
          const srv = await startSServer(kind === "ecdsa" ? pki.ecServer : pki.rsaServer, openssl, suite);
          try {
            const other = group === "x25519" ? "secp256r1" : "x25519";
            const conn = await client(srv.port, { groups: [group, other] });
            assert.equal(conn.cipherSuite, suite);
            assert.equal(conn.group, group);
            assert.equal(conn.helloRetried, false);
            await conn.write(text("abc def\n"));
            assert.equal(await line(conn), "fed cba\n");
            await conn.close();
            const out = await stop(srv);
            assert.match(out, new RegExp(`Ciphersuite: ${suite}`));
            assert.match(out, /Peer certificate: CN = alice/);
            assert.match(out, /Verification: OK/);
            assert.match(out, /CONNECTION CLOSED/);
            assert.doesNotMatch(out, /ERROR|error:/);
          } finally {
            srv.proc.kill();
          }
        });
      }
    }
  }

  it("HelloRetryRequest (server P-256 only, client sends X25519 first), then KeyUpdate both ways", async () => {
    const srv = await startSServer(pki.ecServer, "P-256", "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384");
    try {
      const conn = await client(srv.port);
      assert.equal(conn.helloRetried, true);
      assert.equal(conn.group, "secp256r1");
      await conn.write(text("before update\n"));
      assert.equal(await line(conn), "etadpu erofeb\n");
      await conn.keyUpdate(true);
      await conn.write(text("after update\n"));
      assert.equal(await line(conn), "etadpu retfa\n");
      await conn.keyUpdate(false);
      await conn.write(text("again\n"));
      assert.equal(await line(conn), "niaga\n");
      await conn.close();
      const out = await stop(srv);
      assert.match(out, /Verification: OK/);
      assert.match(out, /CONNECTION CLOSED/);
    } finally {
      srv.proc.kill();
    }
  });

  it("receives certificate_required when it has no identity", async () => {
    const srv = await startSServer(pki.ecServer, "X25519", "TLS_AES_128_GCM_SHA256");
    try {
      await assert.rejects(
        client(srv.port, { identity: undefined }).then((conn) => conn.read()),
        (err: unknown) => {
          assert.ok(err instanceof TlsAlertError, String(err));
          assert.equal(err.alert, 116);
          assert.equal(err.direction, "received");
          return true;
        },
      );
    } finally {
      srv.proc.kill();
    }
  });

  it("TLS_CHACHA20_POLY1305_SHA256 (our TypeScript ChaCha20-Poly1305) against OpenSSL's", async () => {
    const srv = await startSServer(pki.ecServer, "X25519", "TLS_CHACHA20_POLY1305_SHA256");
    try {
      const conn = await client(srv.port, {
        cipherSuites: ["TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"],
      });
      assert.equal(conn.cipherSuite, "TLS_CHACHA20_POLY1305_SHA256");
      await conn.write(text("chacha\n"));
      assert.equal(await line(conn), "ahcahc\n");
      await conn.close();
      assert.match(await stop(srv), /Ciphersuite: TLS_CHACHA20_POLY1305_SHA256/);
    } finally {
      srv.proc.kill();
    }
  });

  it("follows a KeyUpdate the server starts (s_server's K command: update_requested)", async () => {
    const srv = await startSServer(pki.ecServer, "X25519", "TLS_AES_256_GCM_SHA384", false);
    const until = async (what: string) => {
      for (let i = 0; i < 500 && !srv.output().includes(what); i++)
        await new Promise((r) => setTimeout(r, 10));
      assert.ok(srv.output().includes(what), `s_server never printed ${what}`);
    };
    try {
      const conn = await client(srv.port);
      await conn.write(text("before\n"));
      await until("before");
      srv.proc.stdin?.write("K\n");
      // s_server takes "K" as a command only if it arrives alone on stdin; its printf of the result is
      // block-buffered and shows up at exit.
      await new Promise((r) => setTimeout(r, 300));
      srv.proc.stdin?.write("from server\n");
      assert.equal(await line(conn), "from server\n");
      await conn.write(text("after update\n"));
      await until("after update");
      await conn.close();
      const out = await stop(srv);
      assert.match(out, /SSL_do_handshake -> 1/);
      assert.match(out, /CONNECTION CLOSED/);
    } finally {
      srv.proc.kill();
    }
  });

  it("reads padded records split at 512 bytes (-record_padding 512 -max_send_frag 512)", async () => {
    const srv = await startSServer(pki.rsaServer, "X25519", "TLS_AES_128_GCM_SHA256", true, [
      "-record_padding",
      "512",
      "-max_send_frag",
      "512",
    ]);
    try {
      const conn = await client(srv.port);
      const long = `${"abcdefghij".repeat(300)}\n`;
      await conn.write(text(long));
      assert.equal(await line(conn), `${[...long.slice(0, -1)].reverse().join("")}\n`);
      await conn.close();
      assert.match(await stop(srv), /CONNECTION CLOSED/);
    } finally {
      srv.proc.kill();
    }
  });
});
