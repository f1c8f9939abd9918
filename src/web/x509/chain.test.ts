/**
 * verifyServerChain against chains made by the openssl CLI (every variation needs its own
 * extensions) and by the project's own CA (test/fixtures/pki.ts). Expiry is tested by moving `now`,
 * which is what the verifier is given: certificates are valid from their creation for 1 or 30 days.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createTestPki, type TestPki } from "../../../test/fixtures/pki.js";
import { makeSan } from "../../pki/names.js";
import { pemDecodeAll } from "../../pki/pem.js";
import { CertificateError, certificatesFromPem, verifyServerChain } from "./index.js";

const DAY = 86_400_000;
let dir = "";
let serial = 1;
const der = new Map<string, Uint8Array>();

function openssl(...args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"], timeout: 20_000 });
}

function newKey(name: string, type: "p256" | "p384" | "rsa"): void {
  const { privateKey } =
    type === "rsa"
      ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : generateKeyPairSync("ec", { namedCurve: type === "p256" ? "P-256" : "P-384" });
  writeFileSync(join(dir, `${name}.key`), privateKey.export({ type: "pkcs8", format: "pem" }));
}

const CA_EXT =
  "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n";
const LEAF_EXT = (san: string, extra = "") =>
  `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n${extra}`;

function load(name: string): void {
  der.set(name, certificatesFromPem(readFileSync(join(dir, `${name}.pem`), "utf8"))[0] as Uint8Array);
}

/** A self-signed root. */
function root(name: string, type: "p256" | "p384" | "rsa", cn = name): void {
  newKey(name, type);
  writeFileSync(
    join(dir, `${name}.cnf`),
    `[req]\ndistinguished_name=dn\nprompt=no\n[dn]\nCN=${cn}\n[ext]\n${CA_EXT}`,
  );
  openssl(
    "req",
    "-x509",
    "-new",
    "-key",
    `${name}.key`,
    "-config",
    `${name}.cnf`,
    "-extensions",
    "ext",
    "-days",
    "3650",
    "-set_serial",
    String(serial++),
    "-out",
    `${name}.pem`,
  );
  load(name);
}

/**
 * A certificate for `name` signed by `issuer`, with the given extensions (one `openssl req -x509 -CA`).
 * CAs get their own key; leaves share one per key type.
 */
function issue(
  name: string,
  issuer: string,
  opts: { type?: "p256" | "p384" | "rsa"; ext: string; days?: number; cn?: string; sigopts?: string[] },
): void {
  const type = opts.type ?? "p256";
  const isCa = !opts.ext.includes("subjectAltName"); // CA extensions carry no SAN
  const key = isCa ? name : `leafkey-${type}`;
  if (isCa || !der.has(key)) {
    newKey(key, type);
    der.set(key, new Uint8Array(0));
  }
  writeFileSync(join(dir, `${name}.cnf`), `[req]\ndistinguished_name=dn\n[dn]\n[ext]\n${opts.ext}`);
  openssl(
    "req",
    "-x509",
    "-new",
    "-key",
    `${key}.key`,
    "-CA",
    `${issuer}.pem`,
    "-CAkey",
    `${issuer}.key`,
    "-subj",
    `/CN=${opts.cn ?? name}`,
    "-config",
    `${name}.cnf`,
    "-extensions",
    "ext",
    "-set_serial",
    String(serial++),
    "-days",
    String(opts.days ?? 30),
    ...(opts.sigopts ?? ["-sha256"]),
    "-out",
    `${name}.pem`,
  );
  load(name);
}

const c = (name: string): Uint8Array => {
  const d = der.get(name);
  if (!d) throw new Error(`no fixture ${name}`);
  return d;
};

const soon = () => new Date(Date.now() + 60_000);

async function verify(chain: string[], anchors: string[], serverName: string, now = soon()) {
  return verifyServerChain({ certificates: chain.map(c), trustAnchors: anchors.map(c), serverName, now });
}

async function rejects(
  reason: string,
  chain: string[] | Uint8Array[],
  anchors: string[],
  serverName: string,
  now = soon(),
) {
  const certificates = chain.map((x) => (typeof x === "string" ? c(x) : x));
  await assert.rejects(
    verifyServerChain({ certificates, trustAnchors: anchors.map(c), serverName, now }),
    (err: unknown) => {
      assert.ok(err instanceof CertificateError, String(err));
      assert.equal(err.code, "E_TLS_CERT");
      assert.equal(err.reason, reason, err.message);
      return true;
    },
  );
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), "mtls-x509-"));
  root("root", "p256", "Test Root");
  issue("int", "root", { ext: CA_EXT, cn: "Test Intermediate" });
  issue("leaf", "int", { ext: LEAF_EXT("DNS:api.example.com,IP:127.0.0.1,IP:::1") });
  issue("wild", "int", { ext: LEAF_EXT("DNS:*.example.com") });
  issue("partial", "int", { ext: LEAF_EXT("DNS:f*.example.com,DNS:*.*.example.com,DNS:*.com") });
  issue("short", "int", { ext: LEAF_EXT("DNS:api.example.com"), days: 1 });
  issue("client", "int", { ext: LEAF_EXT("DNS:api.example.com").replace("serverAuth", "clientAuth") });
  issue("anyeku", "int", {
    ext: LEAF_EXT("DNS:api.example.com").replace("serverAuth", "anyExtendedKeyUsage"),
  });
  issue("nodigsig", "int", {
    ext: LEAF_EXT("DNS:api.example.com").replace("digitalSignature", "keyEncipherment"),
  });
  issue("critical", "int", { ext: LEAF_EXT("DNS:api.example.com", "1.2.3.4=critical,ASN1:NULL\n") });
  issue("cnonly", "int", { ext: LEAF_EXT("DNS:other.example.com"), cn: "api.example.com" });
  // expired intermediate (1 day) with a 30-day leaf under it
  issue("intshort", "root", { ext: CA_EXT, cn: "Short Intermediate", days: 1 });
  issue("leafundershort", "intshort", { ext: LEAF_EXT("DNS:api.example.com") });
  // "intermediate" without cA, and one with keyUsage lacking keyCertSign
  issue("notca", "root", { ext: CA_EXT.replace("CA:TRUE", "CA:FALSE"), cn: "Not A CA" });
  issue("leafundernotca", "notca", { ext: LEAF_EXT("DNS:api.example.com") });
  issue("nocertsign", "root", {
    ext: CA_EXT.replace("keyCertSign,", "digitalSignature,"),
    cn: "No CertSign",
  });
  issue("leafundernocertsign", "nocertsign", { ext: LEAF_EXT("DNS:api.example.com") });
  // pathLen 0 on the intermediate, and a second intermediate below it
  issue("pl0", "root", { ext: CA_EXT.replace("CA:TRUE", "CA:TRUE,pathlen:0"), cn: "PathLen0" });
  issue("underpl0", "pl0", { ext: CA_EXT, cn: "Under PathLen0" });
  issue("leafunderpl0", "underpl0", { ext: LEAF_EXT("DNS:api.example.com") });
  issue("leafdirectpl0", "pl0", { ext: LEAF_EXT("DNS:api.example.com") });
  // a long chain: root -> deep1 -> ... -> deep10 -> deepleaf
  for (let i = 1; i <= 10; i++)
    issue(`deep${i}`, i === 1 ? "root" : `deep${i - 1}`, { ext: CA_EXT, cn: `Deep ${i}` });
  issue("deepleaf", "deep10", { ext: LEAF_EXT("DNS:api.example.com") });
  // name constraints
  issue("nc", "root", {
    ext: `${CA_EXT}nameConstraints=critical,permitted;DNS:example.com,excluded;DNS:bad.example.com,permitted;IP:10.0.0.0/255.0.0.0\n`,
    cn: "Constrained",
  });
  issue("ncok", "nc", { ext: LEAF_EXT("DNS:api.example.com,IP:10.1.2.3") });
  issue("ncout", "nc", { ext: LEAF_EXT("DNS:api.example.com,DNS:api.example.org") });
  issue("ncexcluded", "nc", { ext: LEAF_EXT("DNS:bad.example.com") });
  issue("ncip", "nc", { ext: LEAF_EXT("IP:192.168.1.1") });
  issue("ncdir", "root", {
    ext: `${CA_EXT}nameConstraints=critical,permitted;dirName:dirsec\n[dirsec]\nO=Acme\n`,
    cn: "DirConstrained",
  });
  issue("leafunderncdir", "ncdir", { ext: LEAF_EXT("DNS:api.example.com") });
  // a second CA with the same name as "root" (different key): the key identifiers tell them apart
  root("impostor", "p256", "Test Root");
  issue("impint", "impostor", { ext: CA_EXT, cn: "Test Intermediate" });
  issue("impleaf", "impint", { ext: LEAF_EXT("DNS:api.example.com") });
  // RSA: PKCS#1 v1.5 SHA-256 chain, and an RSA-PSS-signed leaf; a P-384 root signing with SHA-384
  root("rroot", "rsa", "RSA Root");
  issue("rint", "rroot", { type: "rsa", ext: CA_EXT, cn: "RSA Intermediate" });
  issue("rleaf", "rint", { type: "rsa", ext: LEAF_EXT("DNS:rsa.example.com") });
  issue("pssleaf", "rint", {
    type: "p256",
    ext: LEAF_EXT("DNS:pss.example.com"),
    sigopts: ["-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"],
  });
  root("root384", "p384", "P-384 Root");
  issue("leaf384", "root384", { type: "p384", ext: LEAF_EXT("DNS:p384.example.com"), sigopts: ["-sha384"] });
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("verifyServerChain (openssl chains)", () => {
  test("good ECDSA chain: leaf SPKI returned; DNS name case-insensitive, trailing dot; IPv4 and IPv6 SANs", async () => {
    const { leafSpki } = await verify(["leaf", "int"], ["root"], "api.example.com");
    const pubkey = execFileSync("openssl", [
      "x509",
      "-in",
      join(dir, "leaf.pem"),
      "-pubkey",
      "-noout",
    ]).toString();
    assert.deepEqual(leafSpki, pemDecodeAll(pubkey)[0]?.der);
    await verify(["leaf", "int"], ["root"], "API.Example.COM.");
    await verify(["leaf", "int"], ["root"], "127.0.0.1");
    await verify(["leaf", "int"], ["root"], "::1");
    await verify(["leaf", "int"], ["root"], "[0:0::0:1]");
    await verify(["leaf", "int", "root"], ["root"], "api.example.com"); // the anchor also sent
    await verify(["leaf"], ["int"], "api.example.com"); // an intermediate as the anchor
  });

  test("good RSA chains: PKCS#1 v1.5 SHA-256, RSA-PSS with parameters; P-384 with SHA-384", async () => {
    await verify(["rleaf", "rint"], ["rroot"], "rsa.example.com");
    const alg = execFileSync("openssl", [
      "x509",
      "-in",
      join(dir, "pssleaf.pem"),
      "-noout",
      "-text",
    ]).toString();
    assert.match(alg, /Signature Algorithm: rsassaPss/);
    await verify(["pssleaf", "rint"], ["rroot"], "pss.example.com");
    await verify(["leaf384"], ["root384"], "p384.example.com");
  });

  test("intermediates in any order, unrelated extras ignored, several anchors", async () => {
    await verify(["leaf", "rint", "wild", "int", "impint"], ["rroot", "impostor", "root"], "api.example.com");
    await verify(["leaf", "leafunderpl0", "underpl0", "pl0", "int"], ["root"], "api.example.com");
  });

  test("another CA -> untrusted, also when it has the same names (key identifiers differ)", async () => {
    await rejects("untrusted", ["leaf", "int"], ["rroot"], "api.example.com");
    await rejects("untrusted", ["impleaf", "impint"], ["root"], "api.example.com");
    await rejects("untrusted", ["leaf"], ["root"], "api.example.com"); // intermediate missing
    await rejects("untrusted", ["leaf", "int"], [], "api.example.com");
  });

  test("expired leaf, expired intermediate, not yet valid -> expired", async () => {
    const later = new Date(Date.now() + 2 * DAY);
    await verify(["leafundershort", "intshort"], ["root"], "api.example.com");
    await rejects("expired", ["short", "int"], ["root"], "api.example.com", later);
    await rejects("expired", ["leafundershort", "intshort"], ["root"], "api.example.com", later);
    await verify(["leaf", "int"], ["root"], "api.example.com", later);
    await rejects("expired", ["leaf", "int"], ["root"], "api.example.com", new Date(Date.now() - DAY));
    await rejects("expired", ["leaf", "int"], ["root"], "api.example.com", new Date(Date.now() + 40 * DAY));
  });

  test("wrong name; the subject CN is ignored", async () => {
    await rejects("name", ["leaf", "int"], ["root"], "www.example.com");
    await rejects("name", ["leaf", "int"], ["root"], "example.com");
    await rejects("name", ["cnonly", "int"], ["root"], "api.example.com");
    await verify(["cnonly", "int"], ["root"], "other.example.com");
  });

  test("wildcards: only the whole left-most label, exactly one label, never partial", async () => {
    await verify(["wild", "int"], ["root"], "a.example.com");
    await verify(["wild", "int"], ["root"], "API.EXAMPLE.COM");
    await rejects("name", ["wild", "int"], ["root"], "a.b.example.com");
    await rejects("name", ["wild", "int"], ["root"], "example.com");
    await rejects("name", ["wild", "int"], ["root"], ".example.com");
    await rejects("name", ["partial", "int"], ["root"], "foo.example.com");
    await rejects("name", ["partial", "int"], ["root"], "a.b.example.com");
    await rejects("name", ["partial", "int"], ["root"], "example.com");
  });

  test("IP literals match only iPAddress SANs; DNS names never match an IP SAN", async () => {
    await rejects("name", ["wild", "int"], ["root"], "10.0.0.1");
    await rejects("name", ["leaf", "int"], ["root"], "127.0.0.2");
    await rejects("name", ["leaf", "int"], ["root"], "::2");
    await rejects("name", ["leaf", "int"], ["root"], "127.1"); // not a host name, not a dotted quad
    await rejects("name", ["leaf", "int"], ["root"], "::ffff:127.0.0.1"); // v4-mapped v6 is not the v4 SAN
    await rejects("name", ["leaf", "int"], ["root"], "localhost");
  });

  test("leaf purpose: clientAuth-only EKU, keyUsage without digitalSignature, unknown critical extension", async () => {
    await rejects("purpose", ["client", "int"], ["root"], "api.example.com");
    await verify(["anyeku", "int"], ["root"], "api.example.com");
    await rejects("purpose", ["nodigsig", "int"], ["root"], "api.example.com");
    await rejects("purpose", ["critical", "int"], ["root"], "api.example.com");
  });

  test("CA constraints: issuer without cA, without keyCertSign, pathLen exceeded", async () => {
    await rejects("untrusted", ["leafundernotca", "notca"], ["root"], "api.example.com");
    await rejects("purpose", ["leafundernocertsign", "nocertsign"], ["root"], "api.example.com");
    await verify(["leafdirectpl0", "pl0"], ["root"], "api.example.com");
    await rejects("untrusted", ["leafunderpl0", "underpl0", "pl0"], ["root"], "api.example.com");
  });

  test("at most 10 certificates in a path", async () => {
    const deep = ["deepleaf", ...Array.from({ length: 10 }, (_, i) => `deep${10 - i}`)];
    await verify(deep, ["deep2"], "api.example.com"); // leaf + deep10..deep3 + anchor deep2 = 10
    await rejects("untrusted", deep, ["deep1"], "api.example.com"); // 11
    await rejects("untrusted", deep, ["root"], "api.example.com"); // 12
  });

  test("name constraints: DNS and IP subtrees; unsupported forms refused", async () => {
    await verify(["ncok", "nc"], ["root"], "api.example.com");
    await verify(["ncok", "nc"], ["root"], "10.1.2.3");
    await rejects("purpose", ["ncout", "nc"], ["root"], "api.example.com");
    await rejects("purpose", ["ncexcluded", "nc"], ["root"], "bad.example.com");
    await rejects("purpose", ["ncip", "nc"], ["root"], "192.168.1.1");
    await rejects("purpose", ["leafunderncdir", "ncdir"], ["root"], "api.example.com");
  });

  test("tampered signature byte -> bad-signature; garbage and trailing bytes -> malformed", async () => {
    for (const back of [1, 5, 20]) {
      const tampered = c("leaf").slice();
      const i = tampered.length - back;
      tampered[i] = (tampered[i] as number) ^ 0x01;
      await rejects("bad-signature", [tampered, c("int")], ["root"], "api.example.com");
    }
    const rsaTampered = c("rleaf").slice();
    rsaTampered[rsaTampered.length - 10] = (rsaTampered[rsaTampered.length - 10] as number) ^ 0x40;
    await rejects("bad-signature", [rsaTampered, c("rint")], ["rroot"], "rsa.example.com");
    // a byte inside the signed part (the leaf's SAN) changed: no longer matches its signature
    const body = c("leaf").slice();
    const at = Buffer.from(body).indexOf("api.example.com");
    body[at] = "b".charCodeAt(0);
    await rejects("bad-signature", [body, c("int")], ["root"], "bpi.example.com");

    await rejects("malformed", [new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])], ["root"], "api.example.com");
    await rejects("malformed", [new Uint8Array(64).fill(0xab)], ["root"], "api.example.com");
    await rejects("malformed", [new Uint8Array(0)], ["root"], "api.example.com");
    await rejects("malformed", [c("leaf").subarray(0, 100), c("int")], ["root"], "api.example.com");
    await rejects("malformed", [new Uint8Array([...c("leaf"), 0]), c("int")], ["root"], "api.example.com");
    await rejects("malformed", [c("leaf"), new Uint8Array([1, 2, 3])], ["root"], "api.example.com");
    await rejects("malformed", [], ["root"], "api.example.com");
    await rejects("malformed", new Array(33).fill(c("int")), ["root"], "api.example.com");
  });
});

describe("verifyServerChain (the project's own CA)", () => {
  let pki: TestPki;
  before(async () => {
    pki = await createTestPki("mtls-x509-pki-");
  });
  after(async () => {
    await pki?.close();
  });

  test("server certificate from the mtls CA: good, another CA, expired, wrong name", async () => {
    const issued = await pki.issue("server", "api.acme.test", {
      sans: [makeSan("dns", "api.acme.test"), makeSan("ip", "127.0.0.1")],
    });
    const chain = certificatesFromPem(readFileSync(issued.cert, "utf8"));
    const anchors = certificatesFromPem(readFileSync(issued.ca, "utf8"));
    assert.equal(chain.length, 2);
    const now = new Date();
    const { leafSpki } = await verifyServerChain({
      certificates: chain,
      trustAnchors: anchors,
      serverName: "api.acme.test",
      now,
    });
    assert.ok(leafSpki.length > 60);
    await verifyServerChain({ certificates: chain, trustAnchors: anchors, serverName: "127.0.0.1", now });
    const reason = (p: Promise<unknown>) =>
      p.then(
        () => "ok",
        (e: CertificateError) => e.reason,
      );
    assert.equal(
      await reason(
        verifyServerChain({ certificates: chain, trustAnchors: anchors, serverName: "www.acme.test", now }),
      ),
      "name",
    );

    const evil = await pki.issue("server", "api.acme.test", {
      other: true,
      sans: [makeSan("dns", "api.acme.test")],
    });
    const evilChain = certificatesFromPem(readFileSync(evil.cert, "utf8"));
    assert.equal(
      await reason(
        verifyServerChain({
          certificates: evilChain,
          trustAnchors: anchors,
          serverName: "api.acme.test",
          now,
        }),
      ),
      "untrusted",
    );

    const old = await pki.issue("server", "old.acme.test", {
      sans: [makeSan("dns", "old.acme.test")],
      at: new Date(Date.now() - 2 * 3_600_000),
      ttlMs: 3_600_000,
    });
    const oldChain = certificatesFromPem(readFileSync(old.cert, "utf8"));
    assert.equal(
      await reason(
        verifyServerChain({
          certificates: oldChain,
          trustAnchors: anchors,
          serverName: "old.acme.test",
          now,
        }),
      ),
      "expired",
    );

    const client = await pki.issue("client", "alice", { sans: [makeSan("dns", "alice.acme.test")] });
    const clientChain = certificatesFromPem(readFileSync(client.cert, "utf8"));
    assert.equal(
      await reason(
        verifyServerChain({
          certificates: clientChain,
          trustAnchors: anchors,
          serverName: "alice.acme.test",
          now,
        }),
      ),
      "purpose",
    );
  });
});
