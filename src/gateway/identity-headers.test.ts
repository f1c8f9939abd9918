import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { CertInfo } from "../pki/certinfo.js";
import type { PeerIdentity } from "../policy/index.js";
import { clientIdentityJson, identityHeaders, STRIPPED_HEADERS, xfccHeader } from "./identity-headers.js";

const leafDer = new Uint8Array([1, 2, 3, 250]);
const interDer = new Uint8Array([4, 5, 6]);
const rootDer = new Uint8Array([7, 8]);

const identity: PeerIdentity = {
  subject: 'CN=Zoë "the admin", OU=ops',
  commonName: 'Zoë "the admin"',
  organizationalUnits: ["ops"],
  organization: undefined,
  dnsNames: ["zoe.acme.test"],
  uris: ["spiffe://acme.test/user/zoe"],
  emails: ["zoe@acme.test"],
  ips: [],
  fingerprint: "ab".repeat(32),
  spkiSha256: "x",
  serial: "0a1b",
  issuer: "CN=Acme Intermediate",
  notBefore: new Date(0),
  notAfter: new Date(1e12),
  der: leafDer,
};

const cert = (der: Uint8Array, selfSigned: boolean) => ({ der, selfSigned }) as unknown as CertInfo;
const chain = [cert(leafDer, false), cert(interDer, false), cert(rootDer, true)];

describe("identity headers", () => {
  it("RFC 9440: the leaf and the chain as sf-binary byte sequences, without the trust anchor", () => {
    const h = identityHeaders(identity, chain, "rfc9440");
    assert.equal(h["Client-Cert"], `:${Buffer.from(leafDer).toString("base64")}:`);
    assert.equal(h["Client-Cert-Chain"], `:${Buffer.from(interDer).toString("base64")}:`);
    assert.equal(h["X-Forwarded-Client-Cert"], undefined);
    const noChain = identityHeaders(identity, [chain[0] as CertInfo], "rfc9440");
    assert.equal(noChain["Client-Cert-Chain"], undefined);
  });

  it("X-Client-Identity is compact ASCII JSON", () => {
    const text = clientIdentityJson(identity);
    assert.ok(/^[\x20-\x7e]+$/.test(text), text);
    assert.deepEqual(JSON.parse(text), {
      subject: identity.subject,
      sans: ["dns:zoe.acme.test", "email:zoe@acme.test", "uri:spiffe://acme.test/user/zoe"],
      serial: "0a1b",
      fingerprint: identity.fingerprint,
    });
  });

  it("XFCC in Envoy's format", () => {
    const x = xfccHeader(identity, chain, "spiffe://acme.test/gateway");
    assert.match(x, /^By=spiffe:\/\/acme\.test\/gateway;Hash=(ab){32};Cert="-----BEGIN%20CERTIFICATE-----/);
    assert.match(x, /;Chain="-----BEGIN%20CERTIFICATE-----/);
    assert.match(
      x,
      /;Subject="CN=Zo%C3%AB \\"the admin\\", OU=ops";URI=spiffe:\/\/acme\.test\/user\/zoe;DNS=zoe\.acme\.test$/,
    );
    assert.ok(/^[\x20-\x7e]+$/.test(x));
    const both = identityHeaders(identity, chain, "both");
    assert.ok(both["Client-Cert"] && both["X-Forwarded-Client-Cert"] && both["X-Client-Identity"]);
    const xfccOnly = identityHeaders(identity, chain, "xfcc");
    assert.equal(xfccOnly["Client-Cert"], undefined);
  });

  it("made once per identity, made again when the chain, format or gateway URI differs", () => {
    const first = identityHeaders(identity, chain, "rfc9440");
    assert.equal(identityHeaders(identity, [...chain], "rfc9440"), first, "the same headers object reused");
    assert.ok(Object.isFrozen(first));
    const leafOnly = identityHeaders(identity, [chain[0] as CertInfo], "rfc9440");
    assert.equal(leafOnly["Client-Cert-Chain"], undefined);
    const xfcc = identityHeaders(identity, chain, "xfcc", "spiffe://acme.test/gw-a");
    assert.match(xfcc["X-Forwarded-Client-Cert"] ?? "", /^By=spiffe:\/\/acme\.test\/gw-a;/);
    const other = identityHeaders(identity, chain, "xfcc", "spiffe://acme.test/gw-b");
    assert.match(other["X-Forwarded-Client-Cert"] ?? "", /^By=spiffe:\/\/acme\.test\/gw-b;/);
    const otherCert = { ...identity, der: interDer, fingerprint: "cd".repeat(32) };
    assert.equal(
      identityHeaders(otherCert, chain, "rfc9440")["Client-Cert"],
      `:${Buffer.from(interDer).toString("base64")}:`,
    );
    assert.deepEqual(identityHeaders(identity, chain, "rfc9440"), first);
  });

  it("strips every identity and forwarding header a client might forge", () => {
    for (const h of [
      "client-cert",
      "client-cert-chain",
      "x-client-identity",
      "x-forwarded-client-cert",
      "x-forwarded-for",
    ]) {
      assert.ok(STRIPPED_HEADERS.has(h), h);
    }
  });
});
