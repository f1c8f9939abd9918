import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  createHash,
  createPublicKey,
  generateKeyPair as generateAsync,
  type KeyObject,
  X509Certificate,
} from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { buildCertificate, type CertificateTemplate, randomSerial } from "./certificate.js";
import { type CertInfo, certToPem, parseCertificate } from "./certinfo.js";
import * as ext from "./extensions.js";
import { KEY_TYPES, type KeyType } from "./keys.js";
import { buildName, type San } from "./names.js";
import { keyObjectSigner, type Signer, signatureAlgorithmFor } from "./signer.js";

const generate = promisify(generateAsync);
const dir = mkdtempSync(join(tmpdir(), "mtls-cert-"));
after(() => rmSync(dir, { recursive: true, force: true }));

// RSA-4096 key generation takes seconds; run it with MTLS_SLOW_TESTS=1.
const SLOW = process.env.MTLS_SLOW_TESTS === "1";

async function keyOfType(type: KeyType): Promise<KeyObject> {
  if (type === "ec-p256") return (await generate("ec", { namedCurve: "P-256" })).privateKey;
  if (type === "ec-p384") return (await generate("ec", { namedCurve: "P-384" })).privateKey;
  if (type === "ed25519") return (await generate("ed25519", {})).privateKey;
  return (await generate("rsa", { modulusLength: Number(type.slice(4)) })).privateKey;
}

/** A minimal DER reader, independent of the code under test: tag, header and content of each TLV. */
interface Tlv {
  tag: number;
  /** The whole TLV, header included. */
  raw: Uint8Array;
  content: Uint8Array;
}
function readTlv(der: Uint8Array, offset = 0): Tlv {
  const tag = der[offset] as number;
  let len = der[offset + 1] as number;
  let head = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (der[offset + 2 + i] as number);
    head += n;
  }
  return {
    tag,
    raw: der.subarray(offset, offset + head + len),
    content: der.subarray(offset + head, offset + head + len),
  };
}
function children(der: Uint8Array): Tlv[] {
  const out: Tlv[] = [];
  for (let off = 0; off < der.length; ) {
    const t = readTlv(der, off);
    out.push(t);
    off += t.raw.length;
  }
  return out;
}
/** TBSCertificate fields by name. */
function tbsFields(cert: Uint8Array) {
  const [tbs, sigAlg, sig] = children(readTlv(cert).content) as [Tlv, Tlv, Tlv];
  const [version, serial, signature, issuer, validity, subject, spki, extensions] = children(
    tbs.content,
  ) as Tlv[];
  return { tbs, sigAlg, sig, version, serial, signature, issuer, validity, subject, spki, extensions };
}

/** SHA-1 of the subjectPublicKey bits, computed from the key itself (not through our SPKI parser). */
function expectedKeyId(key: KeyObject): string {
  const type = key.asymmetricKeyType;
  let bits: Buffer;
  if (type === "rsa") {
    bits = createPublicKey(key).export({ type: "pkcs1", format: "der" }); // RSAPublicKey
  } else {
    const jwk = key.export({ format: "jwk" });
    bits =
      type === "ec"
        ? Buffer.concat([
            Buffer.from([4]),
            Buffer.from(jwk.x as string, "base64url"),
            Buffer.from(jwk.y as string, "base64url"),
          ])
        : Buffer.from(jwk.x as string, "base64url");
  }
  return createHash("sha1").update(bits).digest("hex");
}

function openssl(args: string[], input?: string | Uint8Array): string {
  return execFileSync("openssl", args, { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] });
}

const NOT_BEFORE = new Date("2030-01-01T00:00:00.789Z");
const LEAF_NOT_AFTER = new Date("2031-01-01T12:34:56.999Z");
const CA_NOT_AFTER = new Date("2050-06-30T12:00:00.500Z"); // GeneralizedTime territory
const SANS: San[] = [
  { type: "dns", value: "web.acme.test" },
  { type: "ip", value: "10.0.0.1" },
  { type: "ip", value: "2001:db8::1" },
  { type: "email", value: "ops@acme.test" },
  { type: "uri", value: "spiffe://acme.test/web" },
];

interface Pki {
  type: KeyType;
  keys: { root: KeyObject; intermediate: KeyObject; leaf: KeyObject };
  signers: { root: Signer; intermediate: Signer };
  der: { root: Uint8Array; intermediate: Uint8Array; leaf: Uint8Array };
  info: { root: CertInfo; intermediate: CertInfo; leaf: CertInfo };
  serials: { root: string; intermediate: string; leaf: string };
}

// Every key is generated up front, in the thread pool, so RSA prime searches overlap with the other tests.
const KEYS = new Map(
  KEY_TYPES.filter((t) => t !== "rsa-4096" || SLOW).map((t) => [
    t,
    Promise.all([keyOfType(t), keyOfType(t), keyOfType(t)]),
  ]),
);

async function buildPki(type: KeyType): Promise<Pki> {
  const [rootKey, intKey, leafKey] = (await (KEYS.get(type) as Promise<KeyObject[]>)) as [
    KeyObject,
    KeyObject,
    KeyObject,
  ];
  const root = keyObjectSigner(rootKey);
  const int = keyObjectSigner(intKey);
  const leafSpki = keyObjectSigner(leafKey).spki;
  const serials = { root: randomSerial(), intermediate: randomSerial(), leaf: randomSerial() };
  const rootName = buildName({ country: "DE", organization: "Acme", commonName: "Acme Root CA" });
  const rootDer = await buildCertificate(
    {
      serial: serials.root,
      issuer: rootName,
      subject: rootName,
      notBefore: NOT_BEFORE,
      notAfter: CA_NOT_AFTER,
      spki: root.spki,
      extensions: [
        ext.basicConstraints(true),
        ext.keyUsage(ext.KEY_USAGE.keyCertSign | ext.KEY_USAGE.cRLSign),
        ext.subjectKeyIdentifier(root.spki),
      ],
    },
    root,
  );
  const rootInfo = parseCertificate(rootDer);
  const intDer = await buildCertificate(
    {
      serial: serials.intermediate,
      issuer: rootInfo.subjectDer,
      subject: buildName({ country: "DE", organization: "Acme", commonName: "Acme Intermediate CA" }),
      notBefore: NOT_BEFORE,
      notAfter: CA_NOT_AFTER,
      spki: int.spki,
      extensions: [
        ext.basicConstraints(true, 0),
        ext.keyUsage(ext.KEY_USAGE.keyCertSign | ext.KEY_USAGE.cRLSign),
        ext.subjectKeyIdentifier(int.spki),
        ext.authorityKeyIdentifier(root.spki),
      ],
    },
    root,
  );
  const intInfo = parseCertificate(intDer);
  const leafDer = await buildCertificate(
    {
      serial: serials.leaf,
      issuer: intInfo.subjectDer,
      subject: buildName({ organization: "Acme", commonName: "web" }),
      notBefore: NOT_BEFORE,
      notAfter: LEAF_NOT_AFTER,
      spki: leafSpki,
      extensions: [
        ext.basicConstraints(false),
        ext.keyUsage(ext.KEY_USAGE.digitalSignature),
        ext.extendedKeyUsage([ext.EKU.serverAuth, ext.EKU.clientAuth]),
        ext.subjectKeyIdentifier(leafSpki),
        ext.authorityKeyIdentifier(int.spki),
        ext.subjectAltName(SANS),
        ext.crlDistributionPoints(["http://ca.acme.test/crl"]),
        ext.authorityInfoAccess(["http://ca.acme.test/ocsp"], ["http://ca.acme.test/ca/intermediate.crt"]),
      ],
    },
    int,
  );
  return {
    type,
    keys: { root: rootKey, intermediate: intKey, leaf: leafKey },
    signers: { root, intermediate: int },
    der: { root: rootDer, intermediate: intDer, leaf: leafDer },
    info: { root: rootInfo, intermediate: intInfo, leaf: parseCertificate(leafDer) },
    serials,
  };
}

const SIG_NAME: Record<KeyType, { oid: string; openssl: string }> = {
  "ec-p256": { oid: "1.2.840.10045.4.3.2", openssl: "ecdsa-with-SHA256" },
  "ec-p384": { oid: "1.2.840.10045.4.3.3", openssl: "ecdsa-with-SHA384" },
  "rsa-2048": { oid: "1.2.840.113549.1.1.11", openssl: "sha256WithRSAEncryption" },
  "rsa-3072": { oid: "1.2.840.113549.1.1.11", openssl: "sha256WithRSAEncryption" },
  "rsa-4096": { oid: "1.2.840.113549.1.1.11", openssl: "sha256WithRSAEncryption" },
  ed25519: { oid: "1.3.101.112", openssl: "ED25519" },
};

for (const type of KEY_TYPES) {
  const skip = type === "rsa-4096" && !SLOW ? "RSA-4096 is slow: set MTLS_SLOW_TESTS=1" : false;
  describe(`root → intermediate → leaf, ${type}`, { skip }, () => {
    let pki: Pki;
    const node = {
      root: null as unknown as X509Certificate,
      intermediate: null as unknown as X509Certificate,
      leaf: null as unknown as X509Certificate,
    };
    before(async () => {
      pki = await buildPki(type);
      node.root = new X509Certificate(pki.der.root);
      node.intermediate = new X509Certificate(pki.der.intermediate);
      node.leaf = new X509Certificate(pki.der.leaf);
    });

    test("Node's X509Certificate accepts the chain (checkIssued + verify)", () => {
      assert.ok(node.root.checkIssued(node.root));
      assert.ok(node.root.verify(node.root.publicKey));
      assert.ok(node.intermediate.checkIssued(node.root));
      assert.ok(node.intermediate.verify(node.root.publicKey));
      assert.ok(node.leaf.checkIssued(node.intermediate));
      assert.ok(node.leaf.verify(node.intermediate.publicKey));
      // and the negative direction
      assert.ok(!node.leaf.verify(node.root.publicKey));
      assert.ok(!node.leaf.checkIssued(node.root));
      assert.ok(node.root.ca && node.intermediate.ca && !node.leaf.ca);
    });

    test("openssl verify -x509_strict accepts the chain", () => {
      const files = {
        root: join(dir, `${type}-root.pem`),
        int: join(dir, `${type}-int.pem`),
        leaf: join(dir, `${type}-leaf.pem`),
      };
      writeFileSync(files.root, certToPem(pki.der.root));
      writeFileSync(files.int, certToPem(pki.der.intermediate));
      writeFileSync(files.leaf, certToPem(pki.der.leaf));
      const at = String(Math.floor(Date.parse("2030-06-01T00:00:00Z") / 1000));
      const out = openssl([
        "verify",
        "-x509_strict",
        "-attime",
        at,
        "-purpose",
        "sslserver",
        "-CAfile",
        files.root,
        "-untrusted",
        files.int,
        files.leaf,
      ]);
      assert.match(out, /: OK/);
    });

    test("parseCertificate reads back what was built", () => {
      const { root, intermediate, leaf } = pki.info;
      assert.equal(root.keyType, type);
      assert.equal(leaf.keyType, type);
      assert.equal(leaf.subject, "O=Acme, CN=web");
      assert.equal(leaf.issuer, "C=DE, O=Acme, CN=Acme Intermediate CA");
      assert.deepEqual([...leaf.sans], SANS);
      assert.equal(leaf.isCa, false);
      assert.deepEqual([...leaf.keyUsage], ["digitalSignature"]);
      assert.deepEqual([...leaf.extKeyUsage], ["serverAuth", "clientAuth"]);
      assert.deepEqual([...leaf.crlUrls], ["http://ca.acme.test/crl"]);
      assert.deepEqual([...leaf.ocspUrls], ["http://ca.acme.test/ocsp"]);
      assert.equal(leaf.selfSigned, false);
      assert.equal(root.selfSigned, true);
      assert.equal(root.isCa, true);
      assert.equal(root.pathLen, undefined);
      assert.equal(intermediate.isCa, true);
      assert.equal(intermediate.pathLen, 0);
      assert.deepEqual([...intermediate.keyUsage], ["keyCertSign", "cRLSign"]);
      assert.equal(leaf.fingerprint, node.leaf.fingerprint256.replace(/:/g, "").toLowerCase());
      assert.deepEqual(Buffer.from(leaf.spki), node.leaf.publicKey.export({ type: "spki", format: "der" }));
    });

    test("serials: 32 hex digits, top bit clear, 16-byte INTEGER without a pad", () => {
      for (const which of ["root", "intermediate", "leaf"] as const) {
        const info = pki.info[which];
        assert.equal(info.serial, pki.serials[which]);
        assert.match(info.serial, /^[0-7][0-9a-f]{31}$/);
        assert.equal(node[which].serialNumber.toLowerCase(), info.serial);
        const serialTlv = tbsFields(pki.der[which]).serial as Tlv;
        assert.equal(serialTlv.tag, 0x02);
        assert.equal(serialTlv.content.length, 16);
      }
    });

    test("version is v3", () => {
      assert.equal(Buffer.from((tbsFields(pki.der.leaf).version as Tlv).raw).toString("hex"), "a003020102");
    });

    test("notBefore/notAfter round-trip to the second (UTCTime and GeneralizedTime)", () => {
      const second = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);
      assert.deepEqual(pki.info.leaf.notBefore, second(NOT_BEFORE));
      assert.deepEqual(pki.info.leaf.notAfter, second(LEAF_NOT_AFTER));
      assert.deepEqual(pki.info.root.notAfter, second(CA_NOT_AFTER));
      assert.equal(node.root.validTo, "Jun 30 12:00:00 2050 GMT");
      assert.equal(node.leaf.validFrom, "Jan  1 00:00:00 2030 GMT");
      const [nb, na] = children((tbsFields(pki.der.root).validity as Tlv).content) as [Tlv, Tlv];
      assert.equal(nb.tag, 0x17);
      assert.equal(na.tag, 0x18);
    });

    test("SKI is the SHA-1 of the key bits; AKI is the issuer's SKI", () => {
      const { root, intermediate, leaf } = pki.info;
      assert.equal(root.subjectKeyId, expectedKeyId(pki.keys.root));
      assert.equal(intermediate.subjectKeyId, expectedKeyId(pki.keys.intermediate));
      assert.equal(leaf.subjectKeyId, expectedKeyId(pki.keys.leaf));
      assert.equal(intermediate.authorityKeyId, root.subjectKeyId);
      assert.equal(leaf.authorityKeyId, intermediate.subjectKeyId);
      assert.equal(root.authorityKeyId, undefined);
    });

    test("issuer name is byte for byte the issuer's subject", () => {
      const f = (der: Uint8Array) => tbsFields(der);
      assert.deepEqual(f(pki.der.intermediate).issuer?.raw, f(pki.der.root).subject?.raw);
      assert.deepEqual(f(pki.der.leaf).issuer?.raw, f(pki.der.intermediate).subject?.raw);
      assert.deepEqual(f(pki.der.root).issuer?.raw, f(pki.der.root).subject?.raw);
      assert.deepEqual(f(pki.der.leaf).issuer?.raw, pki.info.intermediate.subjectDer);
    });

    test(`signature algorithm is ${SIG_NAME[type].openssl}, the same inside and outside the TBS`, () => {
      const f = tbsFields(pki.der.leaf);
      assert.deepEqual(f.signature?.raw, f.sigAlg.raw);
      assert.deepEqual(f.sigAlg.raw, signatureAlgorithmFor(type).der);
      assert.equal(signatureAlgorithmFor(type).oid, SIG_NAME[type].oid);
      const params = children(f.sigAlg.content).slice(1);
      // RSA: explicit NULL parameters; ECDSA and EdDSA: absent (RFC 5758, RFC 8410)
      if (type.startsWith("rsa"))
        assert.deepEqual(
          params.map((p) => Buffer.from(p.raw).toString("hex")),
          ["0500"],
        );
      else assert.equal(params.length, 0);
      const text = openssl(["x509", "-noout", "-text"], certToPem(pki.der.leaf));
      assert.match(text, new RegExp(`Signature Algorithm: ${SIG_NAME[type].openssl}`));
    });

    test("openssl shows the CA profile: critical basic constraints and key usage, pathlen 0 on the intermediate", () => {
      const root = openssl(["x509", "-noout", "-text"], certToPem(pki.der.root));
      assert.match(root, /Version: 3 \(0x2\)/);
      assert.match(root, /X509v3 Basic Constraints: critical\n\s+CA:TRUE\n/);
      assert.match(root, /X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
      assert.doesNotMatch(root, /Authority Key Identifier/);
      const int = openssl(["x509", "-noout", "-text"], certToPem(pki.der.intermediate));
      assert.match(int, /X509v3 Basic Constraints: critical\n\s+CA:TRUE, pathlen:0\n/);
      assert.match(int, /X509v3 Authority Key Identifier/);
      const leaf = openssl(["x509", "-noout", "-text"], certToPem(pki.der.leaf));
      assert.match(leaf, /X509v3 Basic Constraints: critical\n\s+CA:FALSE\n/);
      assert.match(leaf, /X509v3 Key Usage: critical\n\s+Digital Signature\n/);
      assert.match(
        leaf,
        /X509v3 Extended Key Usage: \n\s+TLS Web Server Authentication, TLS Web Client Authentication\n/,
      );
      assert.match(
        leaf,
        /DNS:web.acme.test, IP Address:10.0.0.1, IP Address:2001:DB8:0:0:0:0:0:1, email:ops@acme.test, URI:spiffe:\/\/acme.test\/web/,
      );
      assert.match(leaf, /OCSP - URI:http:\/\/ca.acme.test\/ocsp/);
      assert.match(leaf, /CA Issuers - URI:http:\/\/ca.acme.test\/ca\/intermediate.crt/);
    });
  });
}

describe("randomSerial", () => {
  test("10,000 draws: all distinct, 32 hex digits, top bit clear and the next one set", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const s = randomSerial();
      assert.match(s, /^[4-7][0-9a-f]{31}$/);
      seen.add(s);
    }
    assert.equal(seen.size, 10_000);
  });
});

describe("buildCertificate", () => {
  let signer: Signer;
  let tpl: CertificateTemplate;
  before(async () => {
    signer = keyObjectSigner(await keyOfType("ec-p256"));
    const name = buildName({ commonName: "x" });
    tpl = {
      serial: randomSerial(),
      issuer: name,
      subject: name,
      notBefore: NOT_BEFORE,
      notAfter: LEAF_NOT_AFTER,
      spki: signer.spki,
      extensions: [],
    };
  });

  test("refuses notBefore at or after notAfter", async () => {
    await assert.rejects(buildCertificate({ ...tpl, notAfter: tpl.notBefore }, signer), RangeError);
    await assert.rejects(
      buildCertificate({ ...tpl, notBefore: LEAF_NOT_AFTER, notAfter: NOT_BEFORE }, signer),
      RangeError,
    );
  });

  test("no extensions → no [3] field at all (never an empty SEQUENCE)", async () => {
    const der = await buildCertificate(tpl, signer);
    assert.equal(tbsFields(der).extensions, undefined);
    assert.ok(new X509Certificate(der).verify(new X509Certificate(der).publicKey));
  });

  test("a signer's signature is what goes into the BIT STRING", async () => {
    const calls: Uint8Array[] = [];
    const spy: Signer = {
      ...signer,
      sign: async (data) => {
        calls.push(data);
        return signer.sign(data);
      },
    };
    const der = await buildCertificate(tpl, spy);
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0], tbsFields(der).tbs.raw);
    assert.equal(tbsFields(der).sig.content[0], 0); // no unused bits
  });
});
