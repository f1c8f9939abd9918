import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { buildCertificate, randomSerial } from "../pki/certificate.js";
import { generateKeyPair } from "../pki/keys.js";
import { buildName } from "../pki/names.js";
import { keyObjectSigner } from "../pki/signer.js";
import {
  buildProxyHeaderV2,
  certificateAlgorithms,
  endpointOf,
  ipv6Bytes,
  ipv6Text,
  PP2_CLIENT,
  PP2_SIGNATURE,
  parseProxyHeaderV2,
} from "./proxy-protocol.js";

describe("PROXY protocol v2", () => {
  it("writes the HAProxy layout for TCP over IPv4", () => {
    const b = buildProxyHeaderV2({
      command: "proxy",
      source: { family: "inet", address: "192.0.2.7", port: 1234 },
      destination: { family: "inet", address: "127.0.0.1", port: 5900 },
    });
    assert.equal(b.toString("hex"), `${PP2_SIGNATURE.toString("hex")}2111000cc00002077f00000104d2170c`);
  });

  it("round-trips addresses of every family", () => {
    const cases = [
      [
        { family: "inet", address: "10.1.2.3", port: 1 },
        { family: "inet", address: "10.3.2.1", port: 65535 },
      ],
      [
        { family: "inet6", address: "2001:db8::1", port: 443 },
        { family: "inet6", address: "::1", port: 5901 },
      ],
      [
        { family: "unix", path: "/run/client.sock" },
        { family: "unix", path: "/run/mtls.sock" },
      ],
    ] as const;
    for (const [source, destination] of cases) {
      const b = buildProxyHeaderV2({ command: "proxy", source, destination });
      const parsed = parseProxyHeaderV2(b);
      assert.ok(parsed);
      assert.equal(parsed.length, b.length);
      assert.deepEqual(parsed.header, { command: "proxy", source, destination });
    }
  });

  it("writes a mixed IPv4/IPv6 pair as IPv6, and LOCAL / UNSPEC without addresses", () => {
    const mixed = parseProxyHeaderV2(
      buildProxyHeaderV2({
        command: "proxy",
        source: { family: "inet", address: "192.0.2.1", port: 1 },
        destination: { family: "inet6", address: "::1", port: 2 },
      }),
    );
    assert.deepEqual(mixed?.header.source, { family: "inet6", address: "::ffff:192.0.2.1", port: 1 });
    const local = buildProxyHeaderV2({ command: "local" });
    assert.equal(local.subarray(12).toString("hex"), "20000000");
    assert.deepEqual(parseProxyHeaderV2(local)?.header, { command: "local" });
    const unspec = buildProxyHeaderV2({
      command: "proxy",
      source: { family: "unix", path: "" },
      destination: { family: "inet", address: "127.0.0.1", port: 1 },
    });
    assert.equal(unspec.subarray(12).toString("hex"), "21000000");
  });

  it("carries ALPN, SNI and the SSL TLV with its sub-TLVs and the client certificate (0x28)", () => {
    const cert = new Uint8Array(1500).fill(0xab);
    const header = {
      command: "proxy" as const,
      source: { family: "inet" as const, address: "127.0.0.1", port: 40000 },
      destination: { family: "inet" as const, address: "127.0.0.1", port: 5901 },
      alpn: "h2",
      authority: "vnc.acme.test",
      ssl: {
        client: PP2_CLIENT.SSL | PP2_CLIENT.CERT_CONN | PP2_CLIENT.CERT_SESS,
        verify: 0,
        version: "TLSv1.3",
        cn: "alice",
        cipher: "TLS_AES_256_GCM_SHA384",
        sigAlg: "ecdsa-with-SHA256",
        keyAlg: "EC256",
        clientCert: cert,
      },
      tlvs: [{ type: 0xe0, value: new Uint8Array([1, 2, 3]) }],
    };
    const b = buildProxyHeaderV2(header);
    const parsed = parseProxyHeaderV2(b);
    assert.deepEqual(parsed?.header, header);
    // The SSL TLV: type 0x20, then client bits 0x07 and verify 0 (4 bytes), then sub-TLV 0x21.
    const at = b.indexOf(Buffer.from([0x20]), 16 + 12 + 5 + 16);
    assert.equal(b.subarray(at + 3, at + 8).toString("hex"), "0700000000");
    assert.equal(b[at + 8], 0x21);
    // The certificate is sub-TLV 0x28 with a 2-byte length.
    assert.ok(b.includes(Buffer.concat([Buffer.from([0x28, 0x05, 0xdc]), Buffer.from(cert.subarray(0, 4))])));
  });

  it("waits for a whole header and refuses what is not one", () => {
    const b = buildProxyHeaderV2({
      command: "proxy",
      source: { family: "inet", address: "127.0.0.1", port: 1 },
      destination: { family: "inet", address: "127.0.0.1", port: 2 },
      authority: "x.test",
    });
    for (let n = 0; n < b.length; n++) assert.equal(parseProxyHeaderV2(b.subarray(0, n)), undefined, `${n}`);
    assert.throws(() => parseProxyHeaderV2(Buffer.from("GET / HTTP/1.1\r\n\r\n")), /bad signature/);
    const v1 = Buffer.from(b);
    v1[12] = 0x11;
    assert.throws(() => parseProxyHeaderV2(v1), /version 1/);
    const overrun = Buffer.from(b);
    overrun.writeUInt16BE(0xff, 16 + 12 + 1); // the authority TLV's length
    assert.throws(() => parseProxyHeaderV2(overrun), /overruns|truncated/);
  });

  it("refuses a header over 64 KiB", () => {
    assert.throws(
      () => buildProxyHeaderV2({ command: "local", tlvs: [{ type: 0xe1, value: new Uint8Array(70_000) }] }),
      /too long/,
    );
  });
});

describe("addresses", () => {
  it("converts IPv6 text and bytes both ways", () => {
    for (const [text, norm] of [
      ["::1", "::1"],
      ["2001:db8:0:0:0:0:0:1", "2001:db8::1"],
      ["fe80::1%eth0", "fe80::1"],
      ["::ffff:192.0.2.1", "::ffff:192.0.2.1"],
      ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
      ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
      ["::", "::"],
    ] as const) {
      assert.equal(ipv6Text(ipv6Bytes(text)), norm, text);
    }
  });

  it("maps socket addresses to endpoints", () => {
    assert.deepEqual(endpointOf("::ffff:127.0.0.1", 5), { family: "inet", address: "127.0.0.1", port: 5 });
    assert.deepEqual(endpointOf("::1", 5), { family: "inet6", address: "::1", port: 5 });
    assert.equal(endpointOf(undefined, undefined), undefined);
  });
});

describe("certificateAlgorithms", () => {
  it("names the signature and key algorithms as HAProxy does", async () => {
    const key = generateKeyPair("ec-p256").privateKey;
    const signer = keyObjectSigner(key);
    const name = buildName({ commonName: "t" });
    const der = await buildCertificate(
      {
        serial: randomSerial(),
        issuer: name,
        subject: name,
        notBefore: new Date(),
        notAfter: new Date(Date.now() + 86_400_000),
        spki: signer.spki,
        extensions: [],
      },
      signer,
    );
    assert.deepEqual(certificateAlgorithms(der), { sigAlg: "ecdsa-with-SHA256", keyAlg: "EC256" });
    assert.deepEqual(certificateAlgorithms(new Uint8Array([1, 2, 3])), {});
  });
});
