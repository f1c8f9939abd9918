import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parseCsr } from "./csr.js";
import { buildCsr, buildCsrPem } from "./csr-builder.js";
import { generateKeyPair, KEY_TYPES, spkiOf } from "./keys.js";
import { pemEncode } from "./pem.js";
import { keyObjectSigner } from "./signer.js";

const dir = mkdtempSync(join(tmpdir(), "mtls-csrb-"));
after(() => rmSync(dir, { recursive: true, force: true }));

describe("buildCsr", () => {
  for (const type of KEY_TYPES.filter((t) => t !== "rsa-3072" && t !== "rsa-4096")) {
    test(`${type}: parseCsr verifies it and reads back subject, key and SANs`, async () => {
      const { privateKey } = generateKeyPair(type);
      const pem = await buildCsrPem(
        {
          subject: { commonName: "web", organization: "Acme" },
          sans: [
            { type: "dns", value: "web.acme.test" },
            { type: "ip", value: "127.0.0.1" },
            { type: "uri", value: "spiffe://acme.test/web" },
          ],
        },
        keyObjectSigner(privateKey),
      );
      const info = await parseCsr(pem);
      assert.equal(info.keyType, type);
      assert.equal(info.commonName, "web");
      assert.deepEqual(Buffer.from(info.spki), Buffer.from(spkiOf(privateKey)));
      assert.deepEqual(info.sans, [
        { type: "dns", value: "web.acme.test" },
        { type: "ip", value: "127.0.0.1" },
        { type: "uri", value: "spiffe://acme.test/web" },
      ]);
    });
  }

  test("openssl req -verify accepts it; no SANs gives an empty attribute set", async () => {
    const { privateKey } = generateKeyPair("ec-p256");
    const der = await buildCsr({ subject: { commonName: "alice" } }, keyObjectSigner(privateKey));
    const file = join(dir, "a.csr");
    writeFileSync(file, der);
    const out = execFileSync(
      "openssl",
      ["req", "-inform", "DER", "-in", file, "-noout", "-verify", "-subject"],
      {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    assert.match(out, /subject=CN ?= ?alice/);
    const info = await parseCsr(pemEncode("CERTIFICATE REQUEST", der));
    assert.deepEqual(info.sans, []);
  });
});
