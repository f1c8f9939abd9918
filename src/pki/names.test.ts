import "reflect-metadata";
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Name } from "@peculiar/x509";
import { isMtlsError } from "../errors.js";
import {
  buildName,
  formatSan,
  makeSan,
  nameToString,
  parseSan,
  type SanType,
  validateDnsName,
  validateEmail,
  validateIp,
  validateUri,
} from "./names.js";

const badSan = (fn: () => unknown) => assert.throws(fn, (err) => isMtlsError(err, "E_BAD_SAN"));
const badInput = (fn: () => unknown) => assert.throws(fn, (err) => isMtlsError(err, "E_BAD_INPUT"));

describe("validateDnsName", () => {
  for (const [input, expected] of [
    ["localhost", "localhost"],
    ["web.acme.test", "web.acme.test"],
    ["Web.ACME.Test", "web.acme.test"],
    ["*.acme.test", "*.acme.test"],
    ["*.A.test", "*.a.test"],
    ["xn--bcher-kva.test", "xn--bcher-kva.test"],
    ["a-b.c-d.test", "a-b.c-d.test"],
    ["1.2.test", "1.2.test"],
    [`${"a".repeat(63)}.test`, `${"a".repeat(63)}.test`],
  ] as const) {
    test(`accepts ${JSON.stringify(input)}`, () => assert.equal(validateDnsName(input), expected));
  }

  for (const input of [
    "",
    "a b",
    "a b.test",
    "-a.test",
    "a-.test",
    "a..b",
    ".a.test",
    "a.test.",
    `${"a".repeat(64)}.test`,
    "*.test", // wildcard over a single label (a TLD)
    "*",
    "a.*.test",
    "*a.acme.test",
    "a_b.test",
    "a/b.test",
    "web.acme.test:443",
    "bücher.test",
  ]) {
    test(`rejects ${JSON.stringify(input.length > 40 ? `${input.slice(0, 20)}…` : input)}`, () =>
      badSan(() => validateDnsName(input)));
  }

  test("253 characters is the limit", () => {
    const label = "a".repeat(63);
    const name253 = [label, label, label, "a".repeat(61)].join("."); // 63*3+61+3 = 253
    assert.equal(name253.length, 253);
    assert.equal(validateDnsName(name253), name253);
    badSan(() => validateDnsName(`${name253}a`));
  });
});

describe("validateIp", () => {
  for (const ok of [
    "10.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "::1",
    "2001:db8::1",
    "fe80::1",
    "::ffff:10.0.0.1",
  ]) {
    test(`accepts ${ok}`, () => assert.equal(validateIp(ok), ok));
  }
  for (const bad of [
    "",
    "256.0.0.1",
    "10.0.0",
    "10.0.0.1/24",
    "2001:db8::g",
    "1.2.3.4.5",
    "localhost",
    " 10.0.0.1",
  ]) {
    test(`rejects ${JSON.stringify(bad)}`, () => badSan(() => validateIp(bad)));
  }
});

describe("validateEmail", () => {
  test("accepts an address and lowercases only the domain", () => {
    assert.equal(validateEmail("Alice.Smith+mtls@ACME.test"), "Alice.Smith+mtls@acme.test");
  });
  for (const bad of [
    "",
    "alice",
    "@acme.test",
    "alice@",
    "a b@acme.test",
    "alice@acme test",
    "alice@-acme.test",
    "al<ice@acme.test",
    "al,ice@acme.test",
    `${"a".repeat(65)}@acme.test`,
    "alïce@acme.test",
  ]) {
    test(`rejects ${JSON.stringify(bad.length > 40 ? `${bad.slice(0, 20)}…` : bad)}`, () =>
      badSan(() => validateEmail(bad)));
  }
  test("a 64-character local part is the limit", () => {
    assert.equal(validateEmail(`${"a".repeat(64)}@acme.test`), `${"a".repeat(64)}@acme.test`);
  });
});

describe("validateUri", () => {
  for (const ok of [
    "https://acme.test/users/alice",
    "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
    "spiffe://acme.test/ns/prod/sa/web",
    "spiffe://acme.test",
    "spiffe://acme-corp.example_1/x.y_z-1",
  ]) {
    test(`accepts ${ok}`, () => assert.equal(validateUri(ok), ok));
  }
  for (const bad of [
    "",
    "not a uri",
    "/relative/path",
    "https://acme.test/a b",
    "spiffe://Acme/x", // trust domain must be lowercase
    "spiffe://acme.test/", // trailing slash
    "spiffe://acme.test/web/", // trailing slash
    "spiffe://acme.test/a/../b",
    "spiffe://acme.test/a/./b",
    "spiffe://acme.test/a//b",
    "spiffe://acme.test/web?x=1", // query
    "spiffe://acme.test/web#frag", // fragment
    "spiffe://acme.test:8443/web", // port
    "spiffe://user@acme.test/web", // userinfo
    "spiffe:///web", // no trust domain
    "spiffe://acme.test/wéb",
  ]) {
    test(`rejects ${JSON.stringify(bad)}`, () => badSan(() => validateUri(bad)));
  }
});

describe("makeSan / parseSan / formatSan", () => {
  const samples: [SanType, string][] = [
    ["dns", "web.acme.test"],
    ["dns", "*.acme.test"],
    ["ip", "10.0.0.1"],
    ["ip", "2001:db8::1"],
    ["email", "alice@acme.test"],
    ["uri", "spiffe://acme.test/web"],
    ["uri", "https://acme.test/x:y"],
  ];
  for (const [type, value] of samples) {
    test(`round trip ${type}:${value}`, () => {
      const san = makeSan(type, value);
      assert.deepEqual(san, { type, value });
      const text = formatSan(san);
      assert.equal(text, `${type}:${value}`);
      assert.deepEqual(parseSan(text), san);
    });
  }

  test("parseSan normalises through the validators", () => {
    assert.deepEqual(parseSan("dns:WEB.Acme.test"), { type: "dns", value: "web.acme.test" });
  });

  test("the value may itself contain colons (IPv6, URIs)", () => {
    assert.deepEqual(parseSan("ip:::1"), { type: "ip", value: "::1" });
    assert.deepEqual(parseSan("uri:urn:a:b"), { type: "uri", value: "urn:a:b" });
  });

  for (const bad of [
    "web.acme.test",
    "DNS:web.acme.test",
    "san:x",
    ":x",
    "dns:",
    "ip:300.1.1.1",
    "email:x",
  ]) {
    test(`parseSan rejects ${JSON.stringify(bad)}`, () => badSan(() => parseSan(bad)));
  }
});

describe("buildName", () => {
  const rdnTypes = (der: Uint8Array) => new Name(der as BufferSource).toJSON().map((rdn) => Object.keys(rdn));

  test("orders C, O, OU…, CN (most significant first)", () => {
    const der = buildName({
      commonName: "web",
      organizationalUnit: ["Ops", "Edge"],
      organization: "Acme Corp",
      country: "DE",
    });
    assert.deepEqual(rdnTypes(der), [["C"], ["O"], ["OU"], ["OU"], ["CN"]]);
    assert.equal(nameToString(der), "C=DE, O=Acme Corp, OU=Ops, OU=Edge, CN=web");
  });

  test("omits absent fields; an empty name is an empty SEQUENCE", () => {
    assert.equal(nameToString(buildName({ commonName: "alice" })), "CN=alice");
    assert.equal(Buffer.from(buildName({})).toString("hex"), "3000");
  });

  test("the same fields give the same bytes (issuer/subject matching relies on it)", () => {
    const f = { organization: "Acme", commonName: "Acme Root CA" };
    assert.deepEqual(buildName(f), buildName({ ...f }));
  });

  test("keeps non-ASCII text intact", () => {
    assert.equal(
      nameToString(buildName({ organization: "Müller GmbH", commonName: "日本" })),
      "O=Müller GmbH, CN=日本",
    );
  });

  test("64 characters is the limit for CN, O and OU", () => {
    const ok = "x".repeat(64);
    assert.equal(
      nameToString(buildName({ commonName: ok, organization: ok, organizationalUnit: [ok] })),
      `O=${ok}, OU=${ok}, CN=${ok}`,
    );
    const long = "x".repeat(65);
    badInput(() => buildName({ commonName: long }));
    badInput(() => buildName({ organization: long }));
    badInput(() => buildName({ organizationalUnit: ["ok", long] }));
  });

  test("refuses control characters and empty OUs", () => {
    badInput(() => buildName({ commonName: "a\nb" }));
    badInput(() => buildName({ commonName: "a\u0000b" }));
    badInput(() => buildName({ organization: "a\u007fb" }));
    badInput(() => buildName({ organizationalUnit: [""] }));
  });

  test("country must be two upper-case letters", () => {
    for (const bad of ["de", "DEU", "D", "1A"]) badInput(() => buildName({ country: bad }));
  });
});
