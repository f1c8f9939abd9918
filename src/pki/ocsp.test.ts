import "reflect-metadata";
import assert from "node:assert/strict";
import { createHash, type KeyObject, sign } from "node:crypto";
import { before, describe, test } from "node:test";
import {
  BasicOCSPResponse,
  type CertID,
  CertStatus,
  id_pkix_ocsp_basic,
  id_pkix_ocsp_nonce,
  KeyHash,
  OCSPResponse,
  OCSPResponseStatus,
  ResponderID,
  ResponseBytes,
  ResponseData,
  RevokedInfo,
  SingleResponse,
} from "@peculiar/asn1-ocsp";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier, Certificate, CRLReason, Extension, Name } from "@peculiar/asn1-x509";
import { isMtlsError } from "../errors.js";
import { buildCertificate, randomSerial } from "./certificate.js";
import { type CertInfo, parseCertificate } from "./certinfo.js";
import { derOctetString } from "./der.js";
import * as ext from "./extensions.js";
import { generateKeyPair } from "./keys.js";
import { buildName } from "./names.js";
import {
  buildOcspRequest,
  certIdFor,
  certIdMatches,
  certIdMatchesIssuer,
  normalizeSerial,
  parseOcspRequest,
  parseOcspResponse,
  responderKeyHash,
  serialFromInteger,
} from "./ocsp.js";
import { keyObjectSigner } from "./signer.js";

const NOW = new Date("2030-06-01T12:00:00Z");
const DAY = 86_400_000;

interface Party {
  cert: CertInfo;
  key: KeyObject;
}

async function makeCert(opts: {
  cn: string;
  issuer?: Party;
  ca?: boolean;
  eku?: string[];
  notBefore?: Date;
  notAfter?: Date;
  serial?: string;
}): Promise<Party> {
  const key = generateKeyPair("ec-p256").privateKey;
  const signer = keyObjectSigner(opts.issuer?.key ?? key);
  const subject = buildName({ organization: "Test", commonName: opts.cn });
  const exts = opts.ca
    ? [
        ext.basicConstraints(true),
        ext.keyUsage(ext.KEY_USAGE.keyCertSign | ext.KEY_USAGE.cRLSign | ext.KEY_USAGE.digitalSignature),
      ]
    : [ext.basicConstraints(false), ext.keyUsage(ext.KEY_USAGE.digitalSignature)];
  if (opts.eku) exts.push(ext.extendedKeyUsage(opts.eku));
  const der = await buildCertificate(
    {
      serial: opts.serial ?? randomSerial(),
      issuer: opts.issuer?.cert.subjectDer ?? subject,
      subject,
      notBefore: opts.notBefore ?? new Date(NOW.getTime() - DAY),
      notAfter: opts.notAfter ?? new Date(NOW.getTime() + 30 * DAY),
      spki: keyObjectSigner(key).spki,
      extensions: exts,
    },
    signer,
  );
  return { cert: parseCertificate(der), key };
}

type Status = { good: true } | { revoked: Date; reason?: number } | { unknown: true };

interface ResponseSpec {
  signerKey: KeyObject;
  responderId: { byKey: Uint8Array } | { byName: Uint8Array };
  certs?: Uint8Array[];
  singles: { id: CertID; status: Status; thisUpdate?: Date; nextUpdate?: Date | null }[];
  nonceExtnValue?: Uint8Array;
  sigAlg?: string;
  digest?: string;
}

/** A test-only responder: builds and signs a BasicOCSPResponse the way RFC 6960 lays it out. */
function buildResponse(spec: ResponseSpec): Uint8Array {
  const responderID =
    "byKey" in spec.responderId
      ? new ResponderID({ byKey: new KeyHash(spec.responderId.byKey) })
      : new ResponderID({ byName: AsnConvert.parse(spec.responderId.byName, Name) });
  const data = new ResponseData({
    responderID,
    producedAt: NOW,
    responses: spec.singles.map((s) => {
      const st = s.status;
      const certStatus =
        "good" in st
          ? new CertStatus({ good: null })
          : "revoked" in st
            ? new CertStatus({
                revoked: new RevokedInfo({
                  revocationTime: st.revoked,
                  ...(st.reason !== undefined ? { revocationReason: new CRLReason(st.reason) } : {}),
                }),
              })
            : new CertStatus({ unknown: null });
      const next = s.nextUpdate === undefined ? new Date(NOW.getTime() + 3_600_000) : s.nextUpdate;
      return new SingleResponse({
        certID: s.id,
        certStatus,
        thisUpdate: s.thisUpdate ?? new Date(NOW.getTime() - 60_000),
        ...(next ? { nextUpdate: next } : {}),
      });
    }),
  });
  if (spec.nonceExtnValue) {
    data.responseExtensions = [
      new Extension({ extnID: id_pkix_ocsp_nonce, extnValue: new OctetString(spec.nonceExtnValue) }),
    ];
  }
  const tbs = new Uint8Array(AsnConvert.serialize(data));
  const basic = new BasicOCSPResponse({
    tbsResponseData: data,
    signatureAlgorithm: new AlgorithmIdentifier({ algorithm: spec.sigAlg ?? "1.2.840.10045.4.3.2" }),
    signature: new Uint8Array(sign(spec.digest ?? "sha256", tbs, spec.signerKey)).buffer,
    ...(spec.certs ? { certs: spec.certs.map((d) => AsnConvert.parse(d, Certificate)) } : {}),
  });
  return new Uint8Array(
    AsnConvert.serialize(
      new OCSPResponse({
        responseStatus: OCSPResponseStatus.successful,
        responseBytes: new ResponseBytes({
          responseType: id_pkix_ocsp_basic,
          response: new OctetString(AsnConvert.serialize(basic)),
        }),
      }),
    ),
  );
}

const rejects = (fn: () => unknown, re: RegExp) =>
  assert.throws(fn, (err: unknown) => isMtlsError(err, "E_BAD_INPUT") && re.test((err as Error).message));

describe("OCSP messages", () => {
  let ca: Party;
  let other: Party;
  let leaf: Party;
  let delegate: Party;
  const byIssuerKey = () => ({ byKey: responderKeyHash(ca.cert.spki) });

  before(async () => {
    ca = await makeCert({ cn: "Test CA", ca: true });
    other = await makeCert({ cn: "Other CA", ca: true });
    leaf = await makeCert({ cn: "alice", issuer: ca, eku: [ext.EKU.clientAuth] });
    delegate = await makeCert({ cn: "Test OCSP", issuer: ca, eku: [ext.EKU.ocspSigning] });
  });

  test("a request carries the CertID openssl computes, and the nonce wrapped in an OCTET STRING", () => {
    const nonce = new Uint8Array(16).fill(7);
    const req = parseOcspRequest(buildOcspRequest(leaf.cert, ca.cert, { nonce }));
    assert.equal(req.certIds.length, 1);
    const id = req.certIds[0] as CertID;
    assert.ok(certIdMatches(id, leaf.cert, ca.cert));
    assert.equal(id.hashAlgorithm.algorithm, "1.3.14.3.2.26");
    const nameHash = createHash("sha1").update(ca.cert.subjectDer).digest();
    assert.deepEqual(Buffer.from(id.issuerNameHash.buffer), nameHash);
    assert.deepEqual(req.nonce, nonce);
    assert.deepEqual(req.nonceExtnValue, derOctetString(nonce));
    assert.equal(parseOcspRequest(buildOcspRequest(leaf.cert, ca.cert)).nonce, undefined);
    assert.throws(() => buildOcspRequest(leaf.cert, ca.cert, { nonce: new Uint8Array(33) }), /1 to 32/);
  });

  test("serials: a high first bit gets a pad byte in the CertID and still matches", () => {
    const id = certIdFor({ serial: "80ff" }, ca.cert);
    assert.deepEqual([...new Uint8Array(id.serialNumber)], [0x00, 0x80, 0xff]);
    assert.equal(serialFromInteger(id.serialNumber), "80ff");
    assert.ok(certIdMatches(id, { serial: "0080FF" }, ca.cert));
    assert.ok(!certIdMatches(id, { serial: "80fe" }, ca.cert));
    assert.ok(!certIdMatchesIssuer(id, other.cert));
    assert.equal(normalizeSerial("000a"), "a");
    assert.equal(normalizeSerial("00"), "0");
  });

  test("good, signed by the issuer, nonce echoed", () => {
    const nonce = new Uint8Array(16).fill(1);
    const der = buildResponse({
      signerKey: ca.key,
      responderId: byIssuerKey(),
      singles: [{ id: certIdFor(leaf.cert, ca.cert), status: { good: true } }],
      nonceExtnValue: derOctetString(nonce),
    });
    const a = parseOcspResponse(der, leaf.cert, ca.cert, { nonce, at: NOW });
    assert.equal(a.status, "good");
    assert.equal(a.nextUpdate?.getTime(), NOW.getTime() + 3_600_000);
  });

  test("revoked with its time and reason; unknown", () => {
    const revokedAt = new Date(NOW.getTime() - DAY);
    const der = buildResponse({
      signerKey: ca.key,
      responderId: { byName: ca.cert.subjectDer },
      singles: [{ id: certIdFor(leaf.cert, ca.cert), status: { revoked: revokedAt, reason: 1 } }],
    });
    const a = parseOcspResponse(der, leaf.cert, ca.cert, { at: NOW });
    assert.equal(a.status, "revoked");
    assert.equal(a.revokedAt?.getTime(), revokedAt.getTime());
    assert.equal(a.reason, "keyCompromise");
    const unknown = buildResponse({
      signerKey: ca.key,
      responderId: byIssuerKey(),
      singles: [{ id: certIdFor(leaf.cert, ca.cert), status: { unknown: true } }],
    });
    assert.equal(parseOcspResponse(unknown, leaf.cert, ca.cert, { at: NOW }).status, "unknown");
  });

  test("nonce: omitted by the responder is accepted, a different one is refused", () => {
    const nonce = new Uint8Array(16).fill(2);
    const id = certIdFor(leaf.cert, ca.cert);
    const without = buildResponse({
      signerKey: ca.key,
      responderId: byIssuerKey(),
      singles: [{ id, status: { good: true } }],
    });
    assert.equal(parseOcspResponse(without, leaf.cert, ca.cert, { nonce, at: NOW }).status, "good");
    const replayed = buildResponse({
      signerKey: ca.key,
      responderId: byIssuerKey(),
      singles: [{ id, status: { good: true } }],
      nonceExtnValue: derOctetString(new Uint8Array(16).fill(3)),
    });
    rejects(() => parseOcspResponse(replayed, leaf.cert, ca.cert, { nonce, at: NOW }), /nonce/);
  });

  test("a response signed by an unrelated key is refused, even naming the issuer", () => {
    const der = buildResponse({
      signerKey: other.key,
      responderId: byIssuerKey(),
      singles: [{ id: certIdFor(leaf.cert, ca.cert), status: { good: true } }],
    });
    rejects(() => parseOcspResponse(der, leaf.cert, ca.cert, { at: NOW }), /signature does not verify/);
    const anonymous = buildResponse({
      signerKey: other.key,
      responderId: { byKey: responderKeyHash(other.cert.spki) },
      certs: [other.cert.der],
      singles: [{ id: certIdFor(leaf.cert, ca.cert), status: { good: true } }],
    });
    rejects(() => parseOcspResponse(anonymous, leaf.cert, ca.cert, { at: NOW }), /not issued by/);
    const nobody = buildResponse({
      signerKey: other.key,
      responderId: { byKey: responderKeyHash(other.cert.spki) },
      singles: [{ id: certIdFor(leaf.cert, ca.cert), status: { good: true } }],
    });
    rejects(() => parseOcspResponse(nobody, leaf.cert, ca.cert, { at: NOW }), /signed by neither/);
  });

  test("a delegated responder: accepted with EKU OCSPSigning, refused without, expired or from another CA", async () => {
    const id = certIdFor(leaf.cert, ca.cert);
    const via = (p: Party) =>
      buildResponse({
        signerKey: p.key,
        responderId: { byKey: responderKeyHash(p.cert.spki) },
        certs: [p.cert.der],
        singles: [{ id, status: { good: true } }],
      });
    assert.equal(parseOcspResponse(via(delegate), leaf.cert, ca.cert, { at: NOW }).status, "good");
    const byName = buildResponse({
      signerKey: delegate.key,
      responderId: { byName: delegate.cert.subjectDer },
      certs: [delegate.cert.der],
      singles: [{ id, status: { good: true } }],
    });
    assert.equal(parseOcspResponse(byName, leaf.cert, ca.cert, { at: NOW }).status, "good");

    const noEku = await makeCert({ cn: "Not OCSP", issuer: ca, eku: [ext.EKU.clientAuth] });
    rejects(() => parseOcspResponse(via(noEku), leaf.cert, ca.cert, { at: NOW }), /OCSPSigning/);
    const expired = await makeCert({
      cn: "Old OCSP",
      issuer: ca,
      eku: [ext.EKU.ocspSigning],
      notBefore: new Date(NOW.getTime() - 10 * DAY),
      notAfter: new Date(NOW.getTime() - DAY),
    });
    rejects(() => parseOcspResponse(via(expired), leaf.cert, ca.cert, { at: NOW }), /not valid at/);
    const foreign = await makeCert({ cn: "Foreign OCSP", issuer: other, eku: [ext.EKU.ocspSigning] });
    rejects(() => parseOcspResponse(via(foreign), leaf.cert, ca.cert, { at: NOW }), /not issued by/);
  });

  test("times: thisUpdate beyond 5 minutes ahead and a passed nextUpdate are refused", () => {
    const id = certIdFor(leaf.cert, ca.cert);
    const at = (thisUpdate: Date, nextUpdate: Date | null) =>
      buildResponse({
        signerKey: ca.key,
        responderId: byIssuerKey(),
        singles: [{ id, status: { good: true }, thisUpdate, nextUpdate }],
      });
    const ahead = (ms: number) => new Date(NOW.getTime() + ms);
    assert.equal(
      parseOcspResponse(at(ahead(4 * 60_000), ahead(DAY)), leaf.cert, ca.cert, { at: NOW }).status,
      "good",
    );
    rejects(
      () => parseOcspResponse(at(ahead(6 * 60_000), ahead(DAY)), leaf.cert, ca.cert, { at: NOW }),
      /future/,
    );
    rejects(
      () => parseOcspResponse(at(ahead(-DAY), ahead(-1000)), leaf.cert, ca.cert, { at: NOW }),
      /out of date/,
    );
    const open = parseOcspResponse(at(ahead(-DAY), null), leaf.cert, ca.cert, { at: NOW });
    assert.equal(open.status, "good");
    assert.equal(open.nextUpdate, undefined);
  });

  test("only the SingleResponse for our CertID counts (any hash); others are ignored", async () => {
    const bob = await makeCert({ cn: "bob", issuer: ca });
    const der = buildResponse({
      signerKey: ca.key,
      responderId: byIssuerKey(),
      singles: [
        { id: certIdFor(bob.cert, ca.cert), status: { revoked: NOW } },
        { id: certIdFor(leaf.cert, ca.cert, "sha256"), status: { good: true } },
      ],
    });
    assert.equal(parseOcspResponse(der, leaf.cert, ca.cert, { at: NOW }).status, "good");
    assert.equal(parseOcspResponse(der, bob.cert, ca.cert, { at: NOW }).status, "revoked");
    const stranger = await makeCert({ cn: "carol", issuer: ca });
    rejects(() => parseOcspResponse(der, stranger.cert, ca.cert, { at: NOW }), /no answer for serial/);
  });

  test("error statuses, SHA-1 signatures and garbage are refused with E_BAD_INPUT", () => {
    const tryLater = new Uint8Array(
      AsnConvert.serialize(new OCSPResponse({ responseStatus: OCSPResponseStatus.tryLater })),
    );
    rejects(() => parseOcspResponse(tryLater, leaf.cert, ca.cert, { at: NOW }), /tryLater/);
    rejects(() => parseOcspResponse(new Uint8Array([1, 2, 3]), leaf.cert, ca.cert, { at: NOW }), /malformed/);
    const sha1 = buildResponse({
      signerKey: ca.key,
      responderId: byIssuerKey(),
      singles: [{ id: certIdFor(leaf.cert, ca.cert), status: { good: true } }],
      sigAlg: "1.2.840.10045.4.1",
      digest: "sha1",
    });
    rejects(() => parseOcspResponse(sha1, leaf.cert, ca.cert, { at: NOW }), /SHA-1/);
  });
});
