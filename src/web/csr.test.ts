/**
 * buildCsr with a key held by the key store (non-extractable): OpenSSL verifies the request's
 * signature and the project's own parser (src/pki/csr.ts, used by the CA) accepts it.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import { parseCsr } from "../pki/csr.js";
import { generateKeyPair, spkiOf } from "../pki/keys.js";
import { buildCsr } from "./csr.js";
import { keyStoreOperations } from "./keystore/host.js";
import { memoryStorage } from "./keystore/storage.js";

const dir = mkdtempSync(join(tmpdir(), "mtls-web-csr-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/**
 * `openssl req -verify -noout -text` on the PEM: its text dump when the self-signature verifies.
 * OpenSSL 3.0 exits 0 even on "verify failure", so the verdict is read from what it prints.
 */
function opensslVerify(pem: string, name: string): string {
  const file = join(dir, `${name}.pem`);
  writeFileSync(file, pem);
  const run = spawnSync("openssl", ["req", "-in", file, "-verify", "-noout", "-text"], {
    encoding: "utf8",
    timeout: 10_000,
  });
  const said = `${run.stderr}${run.stdout}`;
  if (run.status !== 0 || !/self-signature verify OK|verify OK/.test(said) || /verify failure/.test(said)) {
    throw new Error(`openssl refused the CSR: ${said.slice(0, 500)}`);
  }
  return said;
}

describe("buildCsr", () => {
  const ops = keyStoreOperations(memoryStorage());

  it("builds a request OpenSSL verifies and parseCsr accepts (CN and SANs of every kind)", async () => {
    const key = await ops.generate("csr");
    const csr = await buildCsr({
      commonName: "alice's laptop ✓",
      sans: {
        dns: ["app.acme.test", "*.api.acme.test"],
        uri: ["spiffe://acme.test/web/alice"],
        email: ["alice@acme.test"],
      },
      spki: key.spki,
      sign: (data) => ops.sign(key.keyId, data),
    });
    assert.match(
      csr.pem,
      /^-----BEGIN CERTIFICATE REQUEST-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE REQUEST-----\n$/,
    );
    const text = opensslVerify(csr.pem, "full");
    assert.match(text, /ecdsa-with-SHA256/);
    assert.match(
      text,
      /DNS:app\.acme\.test, DNS:\*\.api\.acme\.test, email:alice@acme\.test, URI:spiffe:\/\/acme\.test\/web\/alice/,
    );

    const parsed = await parseCsr(csr.der);
    assert.equal(parsed.commonName, "alice's laptop ✓");
    assert.equal(parsed.keyType, "ec-p256");
    assert.deepEqual(parsed.spki, key.spki);
    assert.deepEqual(
      parsed.sans.map((s) => `${s.type}:${s.value}`),
      [
        "dns:app.acme.test",
        "dns:*.api.acme.test",
        "email:alice@acme.test",
        "uri:spiffe://acme.test/web/alice",
      ],
    );
    assert.deepEqual(parsed.ignoredExtensions, []);
    // The PEM form parses to the same request.
    assert.deepEqual((await parseCsr(csr.pem)).der, csr.der);
  });

  it("builds a bare request (no subject, no SANs): what the CA needs for enroll and rekey", async () => {
    const key = await ops.generate("bare");
    const csr = await buildCsr({ spki: key.spki, sign: (data) => ops.sign(key.keyId, data) });
    opensslVerify(csr.pem, "bare");
    const parsed = await parseCsr(csr.pem);
    assert.equal(parsed.commonName, undefined);
    assert.deepEqual(parsed.sans, []);
    assert.deepEqual(parsed.spki, key.spki);
  });

  it("a signature by another key, or over other bytes, is refused by OpenSSL and parseCsr", async () => {
    const key = await ops.generate("a");
    const other = await ops.generate("b");
    const forged = await buildCsr({
      commonName: "x",
      spki: key.spki,
      sign: (data) => ops.sign(other.keyId, data),
    });
    assert.throws(() => opensslVerify(forged.pem, "forged"), /verify failure/);
    await assert.rejects(parseCsr(forged.der), (e) => isMtlsError(e, "E_BAD_CSR"));
    const shifted = await buildCsr({
      commonName: "x",
      spki: key.spki,
      sign: (data) => ops.sign(key.keyId, data.subarray(1)),
    });
    await assert.rejects(parseCsr(shifted.der), (e) => isMtlsError(e, "E_BAD_CSR"));
  });

  it("refuses bad input before signing", async () => {
    const key = await ops.generate("c");
    let signed = 0;
    const sign = async (data: Uint8Array) => {
      signed++;
      return ops.sign(key.keyId, data);
    };
    const refuse = async (options: Partial<Parameters<typeof buildCsr>[0]>, code: string) =>
      assert.rejects(
        buildCsr({ spki: key.spki, sign, ...options }),
        (e) => isMtlsError(e) && e.code === code,
        JSON.stringify(options),
      );
    await refuse({ sans: { dns: ["bad name.test"] } }, "E_BAD_SAN");
    await refuse({ sans: { dns: ["ünicode.test"] } }, "E_BAD_SAN");
    await refuse({ sans: { dns: ["-x.test"] } }, "E_BAD_SAN");
    await refuse({ sans: { email: ["no-at-sign"] } }, "E_BAD_SAN");
    await refuse({ sans: { uri: ["no scheme"] } }, "E_BAD_SAN");
    await refuse({ sans: { dns: Array(101).fill("a.test") } }, "E_BAD_SAN");
    await refuse({ commonName: "" }, "E_BAD_INPUT");
    await refuse({ commonName: "x".repeat(65) }, "E_BAD_INPUT");
    await refuse({ spki: new Uint8Array([1, 2, 3]) }, "E_BAD_INPUT");
    await refuse({ spki: spkiOf(generateKeyPair("ec-p384").publicKey) }, "E_WEAK_KEY");
    await refuse({ spki: spkiOf(generateKeyPair("ed25519").publicKey) }, "E_WEAK_KEY");
    assert.equal(signed, 0);
    // A signer that does not return raw r||s is refused (DER from a wrong signer, say).
    await refuse({ sign: async () => new Uint8Array(70) }, "E_KEYSTORE");
  });
});
