import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { before, describe, test } from "node:test";
import { isMtlsError } from "../errors.js";
import { buildCertificate, randomSerial } from "./certificate.js";
import { type CertInfo, parseCertificate } from "./certinfo.js";
import { buildCrl, type CrlEntry, type CrlInfo, parseCrls } from "./crl.js";
import * as ext from "./extensions.js";
import { buildName } from "./names.js";
import { keyObjectSigner, type Signer } from "./signer.js";
import { type VerifyInput, verifyChain } from "./verify.js";

const DAY = 86_400_000;
const T0 = new Date("2030-01-01T00:00:00Z");
const AT = new Date(T0.getTime() + 30 * DAY);
const plus = (d: number) => new Date(T0.getTime() + d * DAY);

interface Ca {
  info: CertInfo;
  signer: Signer;
}

const newSigner = () => keyObjectSigner(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey);

async function makeCa(
  cn: string,
  issuer: Ca | null,
  opts: { pathLen?: number; notAfter?: Date } = {},
): Promise<Ca> {
  const signer = newSigner();
  const subject = buildName({ organization: "Acme", commonName: cn });
  const der = await buildCertificate(
    {
      serial: randomSerial(),
      issuer: issuer ? issuer.info.subjectDer : subject,
      subject,
      notBefore: plus(-1),
      notAfter: opts.notAfter ?? plus(3650),
      spki: signer.spki,
      extensions: [
        ext.basicConstraints(true, opts.pathLen),
        ext.keyUsage(ext.KEY_USAGE.keyCertSign | ext.KEY_USAGE.cRLSign),
        ext.subjectKeyIdentifier(signer.spki),
        ...(issuer ? [ext.authorityKeyIdentifier(issuer.signer.spki)] : []),
      ],
    },
    issuer ? issuer.signer : signer,
  );
  return { info: parseCertificate(der), signer };
}

async function makeLeaf(
  cn: string,
  issuer: Ca,
  opts: { eku?: string[]; ku?: number; notBefore?: Date; notAfter?: Date; ca?: boolean } = {},
): Promise<Ca> {
  const signer = newSigner();
  const der = await buildCertificate(
    {
      serial: randomSerial(),
      issuer: issuer.info.subjectDer,
      subject: buildName({ organization: "Acme", commonName: cn }),
      notBefore: opts.notBefore ?? plus(0),
      notAfter: opts.notAfter ?? plus(90),
      spki: signer.spki,
      extensions: [
        ext.basicConstraints(opts.ca ?? false),
        ext.keyUsage(opts.ku ?? ext.KEY_USAGE.digitalSignature),
        ...(opts.eku?.length === 0 ? [] : [ext.extendedKeyUsage(opts.eku ?? [ext.EKU.serverAuth])]),
        ext.subjectKeyIdentifier(signer.spki),
        ext.authorityKeyIdentifier(issuer.signer.spki),
        ext.subjectAltName([{ type: "dns", value: `${cn}.acme.test` }]),
      ],
    },
    issuer.signer,
  );
  return { info: parseCertificate(der), signer };
}

async function makeCrl(
  issuer: Ca,
  entries: CertInfo[],
  opts: { signer?: Signer; crlNumber?: number; thisUpdate?: Date; nextUpdate?: Date } = {},
): Promise<CrlInfo> {
  const list: CrlEntry[] = entries.map((c) => ({
    serial: c.serial,
    revokedAt: plus(10),
    reason: "keyCompromise",
  }));
  const der = await buildCrl(
    {
      issuer: issuer.info.subjectDer,
      issuerSpki: issuer.info.spki,
      thisUpdate: opts.thisUpdate ?? plus(20),
      nextUpdate: opts.nextUpdate ?? plus(40),
      crlNumber: opts.crlNumber ?? 3,
      entries: list,
    },
    opts.signer ?? issuer.signer,
  );
  return parseCrls(der)[0] as CrlInfo;
}

const expectCode = async (code: string, input: VerifyInput, message?: RegExp) =>
  assert.rejects(verifyChain(input), (err) => {
    assert.ok(isMtlsError(err), String(err));
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });

let root: Ca;
let int: Ca;
let server: Ca;
let client: Ca;
let peer: Ca;
let other: Ca;
let rootCrl: CrlInfo;
let intCrl: CrlInfo;

const input = (leaf: CertInfo, over: Partial<VerifyInput> = {}): VerifyInput => ({
  leaf,
  intermediates: [int.info],
  anchors: [root.info],
  at: AT,
  purpose: "server",
  ...over,
});

before(async () => {
  root = await makeCa("Acme Root CA", null);
  int = await makeCa("Acme Intermediate CA", root, { pathLen: 0 });
  server = await makeLeaf("web", int, { eku: [ext.EKU.serverAuth] });
  client = await makeLeaf("alice", int, { eku: [ext.EKU.clientAuth] });
  peer = await makeLeaf("node1", int, { eku: [ext.EKU.serverAuth, ext.EKU.clientAuth] });
  other = await makeCa("Other Root CA", null);
  rootCrl = await makeCrl(root, [], { crlNumber: 1 });
  intCrl = await makeCrl(int, [], { crlNumber: 3 });
});

describe("verifyChain: good chains", () => {
  test("server leaf for server: chain leaf → intermediate → root, revocation not checked without CRLs", async () => {
    const res = await verifyChain(input(server.info));
    assert.deepEqual(
      res.chain.map((c) => c.subject),
      ["O=Acme, CN=web", "O=Acme, CN=Acme Intermediate CA", "O=Acme, CN=Acme Root CA"],
    );
    assert.equal(res.revocation.length, 2);
    for (const r of res.revocation) assert.match(r, /^not checked/);
  });

  test("with a CRL from each issuer: both levels good, with the CRL numbers", async () => {
    const res = await verifyChain(input(server.info, { crls: [intCrl, rootCrl] }));
    assert.deepEqual(res.revocation, ["good (CRL #3)", "good (CRL #1)"]);
  });

  test("client leaf for client; peer leaf for both; any purpose for all", async () => {
    await verifyChain(input(client.info, { purpose: "client" }));
    await verifyChain(input(peer.info, { purpose: "client" }));
    await verifyChain(input(peer.info, { purpose: "server" }));
    for (const leaf of [server, client, peer]) await verifyChain(input(leaf.info, { purpose: "any" }));
  });

  test("intermediates may come in any order, with unrelated certificates among them", async () => {
    const res = await verifyChain(input(server.info, { intermediates: [other.info, client.info, int.info] }));
    assert.equal(res.chain.length, 3);
  });

  test("a leaf issued directly by the anchor", async () => {
    const direct = await makeLeaf("direct", root);
    const res = await verifyChain(input(direct.info, { intermediates: [] }));
    assert.equal(res.chain.length, 2);
  });

  test("trusting the intermediate itself as anchor ends the chain there", async () => {
    const res = await verifyChain(input(server.info, { intermediates: [], anchors: [int.info] }));
    assert.deepEqual(
      res.chain.map((c) => c.fingerprint),
      [server.info.fingerprint, int.info.fingerprint],
    );
  });

  test("validity bounds are inclusive", async () => {
    await verifyChain(input(server.info, { at: server.info.notBefore }));
    await verifyChain(input(server.info, { at: server.info.notAfter }));
  });
});

describe("verifyChain: refusals", () => {
  test("wrong purpose → E_PURPOSE", async () => {
    await expectCode("E_PURPOSE", input(client.info, { purpose: "server" }), /server/);
    await expectCode("E_PURPOSE", input(server.info, { purpose: "client" }), /client/);
  });

  test("key usage without digitalSignature → E_PURPOSE", async () => {
    const leaf = await makeLeaf("kex", int, { ku: ext.KEY_USAGE.keyEncipherment });
    await expectCode("E_PURPOSE", input(leaf.info), /digitalSignature/);
  });

  test("expired leaf → E_EXPIRED", async () => {
    await expectCode("E_EXPIRED", input(server.info, { at: plus(91) }), /expired/);
    await expectCode(
      "E_EXPIRED",
      input(server.info, { at: new Date(server.info.notAfter.getTime() + 1000) }),
    );
  });

  test("not yet valid → E_EXPIRED", async () => {
    const future = await makeLeaf("future", int, { notBefore: plus(60), notAfter: plus(120) });
    await expectCode("E_EXPIRED", input(future.info), /not valid before/);
  });

  test("expired intermediate → E_EXPIRED", async () => {
    const shortInt = await makeCa("Short Intermediate", root, { pathLen: 0, notAfter: plus(20) });
    // a leaf that (wrongly) outlives its issuer: still refused once the issuer has expired
    const leaf = await makeLeaf("web2", shortInt, { notAfter: plus(30) });
    await verifyChain(input(leaf.info, { intermediates: [shortInt.info], at: plus(19) }));
    await expectCode(
      "E_EXPIRED",
      input(leaf.info, { intermediates: [shortInt.info], at: plus(21) }),
      /CA certificate .*Short Intermediate.* expired/,
    );
  });

  test("another CA → E_UNTRUSTED", async () => {
    await expectCode("E_UNTRUSTED", input(server.info, { anchors: [other.info] }), /not from this CA/);
    const foreign = await makeLeaf("evil", other);
    await expectCode("E_UNTRUSTED", input(foreign.info));
  });

  test("missing intermediate → E_UNTRUSTED", async () => {
    await expectCode("E_UNTRUSTED", input(server.info, { intermediates: [] }));
  });

  test("a look-alike CA (same name, other key) → E_UNTRUSTED", async () => {
    const fakeRoot = await makeCa("Acme Root CA", null);
    const fakeInt = await makeCa("Acme Intermediate CA", fakeRoot, { pathLen: 0 });
    const leaf = await makeLeaf("web", fakeInt);
    await expectCode("E_UNTRUSTED", input(leaf.info, { intermediates: [fakeInt.info] }));
    await expectCode("E_UNTRUSTED", input(server.info, { intermediates: [fakeInt.info] }));
  });

  test("intermediate with pathLen 0 issuing a sub-CA that issues a leaf → E_UNTRUSTED", async () => {
    const sub = await makeCa("Acme Sub CA", int);
    const leaf = await makeLeaf("deep", sub);
    await expectCode(
      "E_UNTRUSTED",
      input(leaf.info, { intermediates: [sub.info, int.info] }),
      /path length of 0/,
    );
    // ...while the same depth under a root without a limit is fine
    const freeInt = await makeCa("Free Intermediate", root);
    const freeSub = await makeCa("Free Sub CA", freeInt);
    const ok = await makeLeaf("deep2", freeSub);
    const res = await verifyChain(input(ok.info, { intermediates: [freeSub.info, freeInt.info] }));
    assert.equal(res.chain.length, 4);
  });

  test("a leaf (CA:FALSE) issuing a certificate → E_UNTRUSTED", async () => {
    const notCa = await makeLeaf("notca", int, {
      ku: ext.KEY_USAGE.digitalSignature | ext.KEY_USAGE.keyCertSign,
    });
    const below = await makeLeaf("below", notCa);
    await expectCode("E_UNTRUSTED", input(below.info, { intermediates: [notCa.info, int.info] }));
  });
});

describe("verifyChain: revocation", () => {
  test("leaf revoked in a CRL signed by its issuer → E_REVOKED", async () => {
    const crl = await makeCrl(int, [server.info], { crlNumber: 4 });
    await expectCode(
      "E_REVOKED",
      input(server.info, { crls: [crl, rootCrl] }),
      new RegExp(`${server.info.serial}.*keyCompromise`),
    );
    // another leaf of the same CA is still good under that CRL
    const res = await verifyChain(input(peer.info, { crls: [crl, rootCrl] }));
    assert.deepEqual(res.revocation, ["good (CRL #4)", "good (CRL #1)"]);
  });

  test("intermediate revoked in the root's CRL → E_REVOKED", async () => {
    const crl = await makeCrl(root, [int.info], { crlNumber: 2 });
    await expectCode("E_REVOKED", input(server.info, { crls: [intCrl, crl] }), /Intermediate/);
  });

  test("a CRL signed by the wrong key is ignored (not checked)", async () => {
    const forged = await makeCrl(int, [server.info], { signer: newSigner(), crlNumber: 99 });
    assert.equal(forged.issuer, int.info.subject); // it names the right issuer
    const res = await verifyChain(input(server.info, { crls: [forged] }));
    assert.match(res.revocation[0] ?? "", /^not checked/);
  });

  test("a forged CRL does not hide the genuine one after it", async () => {
    const forged = await makeCrl(int, [], { signer: newSigner(), crlNumber: 99 });
    const genuine = await makeCrl(int, [server.info], { crlNumber: 5 });
    await expectCode("E_REVOKED", input(server.info, { crls: [forged, genuine] }));
  });

  test("a CRL of another CA does not count for this one", async () => {
    const crl = await makeCrl(other, [server.info]);
    const res = await verifyChain(input(server.info, { crls: [crl] }));
    assert.match(res.revocation[0] ?? "", /^not checked/);
  });

  test("stale CRL (at > nextUpdate) → E_EXPIRED", async () => {
    const stale = await makeCrl(int, [], { thisUpdate: plus(1), nextUpdate: plus(8) });
    await expectCode("E_EXPIRED", input(server.info, { crls: [stale] }), /CRL .* out of date/);
  });

  test("a revoked entry wins over staleness", async () => {
    const stale = await makeCrl(int, [server.info], { thisUpdate: plus(1), nextUpdate: plus(8) });
    await expectCode("E_REVOKED", input(server.info, { crls: [stale] }));
  });
});
