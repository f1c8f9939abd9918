import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createTestPki, type TestPki } from "../../test/fixtures/pki.js";
import { issueToFiles } from "../ca/index.js";
import { statePaths } from "../config/state.js";
import { type ErrorCode, isMtlsError, type MtlsError } from "../errors.js";
import { generateKeyPair, spkiOf } from "../pki/keys.js";
import { makeSan } from "../pki/names.js";
import { tlsFilesFromState } from "./from-state.js";
import { loadTlsMaterial } from "./material.js";

let pki: TestPki;
before(async () => {
  pki = await createTestPki("mtls-fromstate-");
});
after(() => pki.close());

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, pattern: RegExp) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isMtlsError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match((err as MtlsError).message, pattern);
    return true;
  });
}

describe("tlsFilesFromState", () => {
  test("finds the files of a name and the CA's root; they load", async () => {
    const web = await pki.issue("server", "web", { sans: [makeSan("dns", "localhost")] });
    const files = await tlsFilesFromState(pki.state, "web");
    assert.deepEqual(files, { cert: web.cert, key: web.key, ca: statePaths(pki.state).rootCert });
    const material = await loadTlsMaterial(files);
    assert.equal(material.certificate.serial, web.certificate.serial);
    material.close();
  });

  test("takes the newest valid certificate of the name", async () => {
    await pki.issue("client", "bob", { outDir: join(pki.dir, "bob-1") });
    const newer = await pki.issue("client", "bob", { outDir: join(pki.dir, "bob-2") });
    const files = await tlsFilesFromState(pki.state, "bob");
    assert.equal(files.cert, newer.cert);
    assert.equal(files.key, newer.key);
  });

  test("skips revoked and expired ones", async () => {
    const current = await pki.issue("client", "carol", { outDir: join(pki.dir, "carol-1") });
    const dir2 = join(pki.dir, "carol-2");
    await pki.issue("client", "carol", {
      outDir: dir2,
      at: new Date(Date.now() - 7_200_000),
      ttlMs: 3_600_000,
    });
    const revoked = await pki.issue("client", "carol", { outDir: join(pki.dir, "carol-3") });
    await pki.ca.revoke([revoked.certificate.serial], "superseded", "test");
    const files = await tlsFilesFromState(pki.state, "carol");
    assert.equal(files.cert, current.cert);
    const material = await loadTlsMaterial(files);
    assert.equal(material.certificate.serial, current.certificate.serial);
    material.close();
  });

  test("an unknown name is E_NOT_FOUND", async () => {
    await rejectsWith(tlsFilesFromState(pki.state, "nobody"), "E_NOT_FOUND", /no certificate named "nobody"/);
  });

  test("the CA's own certificates are not names to serve with", async () => {
    await rejectsWith(tlsFilesFromState(pki.state, "intermediate"), "E_NOT_FOUND", /no certificate named/);
  });

  test("a missing key file is E_NOT_FOUND", async () => {
    const dan = await pki.issue("client", "dan");
    rmSync(dan.key);
    await rejectsWith(
      tlsFilesFromState(pki.state, "dan"),
      "E_NOT_FOUND",
      /the key file of the certificate "dan" .* is missing: .*dan\.key/,
    );
  });

  test("a missing certificate file is E_NOT_FOUND", async () => {
    const erin = await pki.issue("client", "erin");
    rmSync(erin.cert);
    await rejectsWith(tlsFilesFromState(pki.state, "erin"), "E_NOT_FOUND", /certificate file .* is missing/);
  });

  test("a certificate issued for a CSR has no key in the state", async () => {
    const outDir = join(pki.dir, "csr-out");
    mkdirSync(outDir);
    await issueToFiles(
      pki.ca,
      {
        profile: "client",
        name: "frank",
        sans: [],
        actor: "test",
        spki: spkiOf(generateKeyPair("ec-p256").privateKey),
      },
      { outDir },
    );
    await rejectsWith(tlsFilesFromState(pki.state, "frank"), "E_NOT_FOUND", /issued for a CSR/);
  });

  test("only expired certificates: E_EXPIRED", async () => {
    await pki.issue("client", "gina", { at: new Date(Date.now() - 7_200_000), ttlMs: 3_600_000 });
    await rejectsWith(tlsFilesFromState(pki.state, "gina"), "E_EXPIRED", /"gina" .* expired at/);
  });

  test("only revoked certificates: E_REVOKED", async () => {
    const hank = await pki.issue("client", "hank");
    await pki.ca.revoke([hank.certificate.serial], "keyCompromise", "test");
    await rejectsWith(
      tlsFilesFromState(pki.state, "hank"),
      "E_REVOKED",
      /every certificate named "hank" is revoked/,
    );
  });

  test("a folder without a CA is E_NO_CA", async () => {
    const empty = join(pki.dir, "empty");
    mkdirSync(empty);
    await rejectsWith(tlsFilesFromState(empty, "web"), "E_NO_CA", /no CA in/);
  });
});
