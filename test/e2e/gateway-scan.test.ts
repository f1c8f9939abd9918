/**
 * The gateway's TLS listener as a scanner sees it (issue 5): `sslscan --xml=-` (Debian's sslscan)
 * against the built `mtls gateway`. What we promise (src/tls/material.ts: minVersion TLSv1.2 and
 * DEFAULT_CIPHERS): TLS 1.2 and 1.3 only; TLS 1.3's three AEAD suites; for TLS 1.2 only ECDHE
 * with AES-GCM or ChaCha20-Poly1305, so no NULL, EXPORT, RC4, DES/3DES, anonymous, static-RSA, CBC
 * (SHA-1 or SHA-2 MAC), CCM-8 or ARIA suite; no insecure renegotiation, no Heartbleed.
 * 127.0.0.1 only. Debian packages: sslscan.
 */
import assert from "node:assert/strict";
import { after, before, describe, it, type TestContext } from "node:test";
import { CLI, run, startBackground, tempDir } from "./helpers.js";
import { stopChild, TestCa, type Tunnel } from "./peers.js";

let dir: string;
let cleanup: () => void;
let ca: TestCa;
let gw: Tunnel;
const running: { stop(): Promise<void> }[] = [];
let noSslscan: string | undefined;

interface ScanCipher {
  status: string;
  sslversion: string;
  bits: number;
  cipher: string;
  strength: string;
}

interface Scan {
  protocols: Map<string, boolean>;
  ciphers: ScanCipher[];
  renegotiation: { supported: boolean; secure: boolean } | undefined;
  heartbleed: { version: string; vulnerable: boolean }[];
  xml: string;
}

/** The attributes of every `<NAME …/>` element in sslscan's XML (its output is flat, one per line). */
function elements(xml: string, name: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (const m of xml.matchAll(new RegExp(`<${name}\\s([^>]*?)/?>`, "g"))) {
    const attrs: Record<string, string> = {};
    for (const a of (m[1] as string).matchAll(/([\w-]+)="([^"]*)"/g)) attrs[a[1] as string] = a[2] as string;
    out.push(attrs);
  }
  return out;
}

function parseScan(xml: string): Scan {
  const protocols = new Map<string, boolean>();
  for (const p of elements(xml, "protocol")) {
    const name = `${p.type === "ssl" ? "SSLv" : "TLSv"}${p.version}`;
    protocols.set(name, p.enabled === "1");
  }
  const ciphers = elements(xml, "cipher").map((c) => ({
    status: c.status ?? "",
    sslversion: c.sslversion ?? "",
    bits: Number(c.bits),
    cipher: c.cipher ?? "",
    strength: c.strength ?? "",
  }));
  const reneg = elements(xml, "renegotiation")[0];
  return {
    protocols,
    ciphers,
    renegotiation: reneg ? { supported: reneg.supported === "1", secure: reneg.secure === "1" } : undefined,
    heartbleed: elements(xml, "heartbleed").map((h) => ({
      version: h.sslversion ?? "",
      vulnerable: h.vulnerable === "1",
    })),
    xml,
  };
}

let scan: Scan;

before(async () => {
  try {
    await run("sslscan", ["--version"], { timeoutMs: 10_000 });
  } catch (err) {
    noSslscan = `sslscan is absent (${(err as Error).message}): the TLS scan of the gateway did not run (CI installs Debian's sslscan)`;
    console.warn(`WARNING: ${noSslscan}`);
    return;
  }
  ({ dir, cleanup } = tempDir("mtls-e2e-gateway-scan-"));
  ca = await TestCa.init(dir);
  await ca.issue("server", "gateway", ["--dns", "localhost", "--ip", "127.0.0.1"]);
  const f = ca.files("gateway");
  const bg = await startBackground(
    process.execPath,
    [
      CLI,
      "gateway",
      "--listen",
      "127.0.0.1:0",
      "--cert",
      f.cert,
      "--key",
      f.key,
      "--ca",
      f.ca,
      "--allow-all",
      // Never reached: the scanner only handshakes.
      "--route",
      "/=http://127.0.0.1:9",
    ],
    { cwd: dir, ready: /mtls: gateway listening on .*\n/, timeoutMs: 15_000 },
  );
  running.push({ stop: () => stopChild(bg.child, 0, "SIGKILL") });
  const m = /listening on 127\.0\.0\.1:(\d+):/.exec(bg.output());
  assert.ok(m, bg.output());
  gw = { bg, port: Number(m[1]) };
  // --no-colour: plain XML on stdout. No client certificate: the handshake asks for one, never requires it.
  const res = await run("sslscan", ["--no-colour", "--xml=-", `127.0.0.1:${gw.port}`], {
    timeoutMs: 120_000,
  });
  assert.equal(res.code, 0, `sslscan failed: ${res.stderr}\n${res.stdout}`);
  scan = parseScan(res.stdout);
  assert.ok(scan.protocols.size >= 6, `sslscan's XML lists the protocols it tried:\n${res.stdout}`);
});

after(async () => {
  for (const r of running.reverse()) await r.stop();
  cleanup?.();
});

const skipped = (t: TestContext): boolean => {
  if (noSslscan) t.skip(noSslscan);
  return noSslscan !== undefined;
};

/** TLS 1.2 suites we offer: ECDHE key exchange, AES-GCM or ChaCha20-Poly1305 (OpenSSL's names). */
const TLS12_OURS = /^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/;
const TLS13_OURS = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];

describe("mtls gateway under sslscan", () => {
  it("accepts TLS 1.2 and 1.3 only: no SSLv2, SSLv3, TLS 1.0 or 1.1", (t) => {
    if (skipped(t)) return;
    const p = scan.protocols;
    for (const old of ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"])
      assert.equal(p.get(old), false, `${old} refused`);
    assert.equal(p.get("TLSv1.2"), true, "TLS 1.2 accepted");
    assert.equal(p.get("TLSv1.3"), true, "TLS 1.3 accepted");
    const versions = new Set(scan.ciphers.map((c) => c.sslversion));
    assert.deepEqual([...versions].sort(), ["TLSv1.2", "TLSv1.3"]);
  });

  it("offers no weak cipher: only ECDHE with an AEAD on TLS 1.2, the AEAD suites on TLS 1.3", (t) => {
    if (skipped(t)) return;
    const accepted = scan.ciphers.filter((c) => c.status === "accepted" || c.status === "preferred");
    assert.ok(accepted.length > 0, scan.xml);
    for (const c of accepted) {
      const what = `${c.sslversion} ${c.cipher} (${c.strength}, ${c.bits} bits)`;
      assert.doesNotMatch(
        c.cipher,
        /NULL|EXP|RC4|DES|MD5|ADH|AECDH|anon|PSK|SRP|CBC|CCM|ARIA|CAMELLIA|SEED|IDEA/i,
        what,
      );
      assert.ok(["strong", "acceptable"].includes(c.strength), `sslscan rates ${what}`);
      assert.ok(c.bits >= 128, what);
      if (c.sslversion === "TLSv1.3") assert.ok(TLS13_OURS.includes(c.cipher), what);
      else
        assert.match(
          c.cipher,
          TLS12_OURS,
          `${what}: only ECDHE + GCM/ChaCha20 on TLS 1.2 (no CBC-SHA1/SHA2)`,
        );
    }
    // Both versions are really offered, each with forward secrecy.
    assert.ok(accepted.some((c) => c.sslversion === "TLSv1.3"));
    assert.ok(accepted.some((c) => c.sslversion === "TLSv1.2"));
    const preferred = scan.ciphers.filter((c) => c.status === "preferred").map((c) => c.cipher);
    assert.ok(
      preferred.every((c) => TLS13_OURS.includes(c) || TLS12_OURS.test(c)),
      `preferred: ${preferred.join(", ")}`,
    );
  });

  it("has no insecure renegotiation and is not vulnerable to Heartbleed", (t) => {
    if (skipped(t)) return;
    const reneg = scan.renegotiation;
    assert.ok(reneg, scan.xml);
    assert.ok(!reneg.supported || reneg.secure, "renegotiation, if any, is the secure kind");
    assert.ok(scan.heartbleed.length > 0, scan.xml);
    for (const h of scan.heartbleed) assert.equal(h.vulnerable, false, h.version);
  });
});
