import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { stageFile } from "../config/files.js";
import { isMtlsError } from "../errors.js";
import { buildCertificate, randomSerial } from "../pki/certificate.js";
import { certToPem } from "../pki/certinfo.js";
import { generateKeyPair, pkcs8Of } from "../pki/keys.js";
import { buildName } from "../pki/names.js";
import { pemEncode } from "../pki/pem.js";
import { keyObjectSigner } from "../pki/signer.js";
import { finishInterruptedRekey, readCurrent, writeCertFiles } from "./files.js";

const root = mkdtempSync(join(tmpdir(), "mtls-agent-files-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

/** A self-signed certificate and its key, PEM (readCurrent needs only a parseable pair). */
async function pair(lifetimeMs = 3_600_000): Promise<{ cert: string; key: string; serial: string }> {
  const { privateKey } = generateKeyPair("ec-p256");
  const signer = keyObjectSigner(privateKey);
  const name = buildName({ commonName: `t${++n}` });
  const serial = randomSerial();
  const der = await buildCertificate(
    {
      serial,
      issuer: name,
      subject: name,
      notBefore: new Date(Date.now() - 1000),
      notAfter: new Date(Date.now() + lifetimeMs),
      spki: signer.spki,
      extensions: [],
    },
    signer,
  );
  return { cert: certToPem(der), key: pemEncode("PRIVATE KEY", pkcs8Of(privateKey)), serial };
}

function fresh() {
  const dir = join(root, `d${++n}`);
  mkdirSync(dir);
  return { dir, files: { cert: join(dir, "web.crt"), key: join(dir, "web.key") } };
}

const tmpFiles = (dir: string) => readdirSync(dir).filter((f) => f.endsWith(".tmp"));

describe("writeCertFiles", () => {
  test("a new pair: certificate 0644, key 0600, no temporary files", async () => {
    const { dir, files } = fresh();
    const p = await pair();
    writeCertFiles(files, { chainPem: p.cert, keyPem: p.key }, { overwrite: false });
    assert.equal(readCurrent(files).serial, p.serial);
    assert.equal(statSync(files.key).mode & 0o777, 0o600);
    assert.equal(statSync(files.cert).mode & 0o777, 0o644);
    assert.deepEqual(tmpFiles(dir), []);
  });

  test("without overwrite an existing file is E_EXISTS and nothing changes", async () => {
    const { files } = fresh();
    const a = await pair();
    writeCertFiles(files, { chainPem: a.cert, keyPem: a.key }, { overwrite: false });
    const b = await pair();
    assert.throws(
      () => writeCertFiles(files, { chainPem: b.cert, keyPem: b.key }, { overwrite: false }),
      (e) => isMtlsError(e, "E_EXISTS"),
    );
    assert.equal(readCurrent(files).serial, a.serial);
  });

  test("a failure while staging leaves the old pair and no temporary file", async () => {
    const { dir, files } = fresh();
    const a = await pair();
    writeCertFiles(files, { chainPem: a.cert, keyPem: a.key }, { overwrite: false });
    const b = await pair();
    const broken = { cert: files.cert, key: join(dir, "missing-dir", "web.key") };
    assert.throws(() => writeCertFiles(broken, { chainPem: b.cert, keyPem: b.key }, { overwrite: true }));
    assert.equal(readFileSync(files.cert, "utf8"), a.cert);
    assert.equal(readFileSync(files.key, "utf8"), a.key);
    assert.deepEqual(tmpFiles(dir), []);
  });

  test("a key that cannot follow its certificate puts the old certificate back", async () => {
    const { dir, files } = fresh();
    const a = await pair();
    writeCertFiles(files, { chainPem: a.cert, keyPem: a.key }, { overwrite: false });
    const b = await pair();
    // A directory where the key should go: staging beside it works, the rename onto it fails.
    const keyDir = join(dir, "key-is-a-dir");
    mkdirSync(join(keyDir, "x"), { recursive: true });
    const steps: string[] = [];
    assert.throws(() =>
      writeCertFiles(
        { cert: files.cert, key: keyDir },
        { chainPem: b.cert, keyPem: b.key },
        { overwrite: true, previousChainPem: a.cert, onStep: (s) => steps.push(s) },
      ),
    );
    assert.deepEqual(steps, ["cert"], "the certificate had been put in place");
    assert.equal(readFileSync(files.cert, "utf8"), a.cert, "and was put back");
    assert.equal(readCurrent(files).serial, a.serial);
    assert.deepEqual(tmpFiles(dir), []);
  });
});

describe("an interrupted rekey", () => {
  test("certificate renamed, key still staged: readCurrent finishes the rename", async () => {
    const { dir, files } = fresh();
    const a = await pair();
    writeCertFiles(files, { chainPem: a.cert, keyPem: a.key }, { overwrite: false });
    const b = await pair();
    // What a crash between the two renames leaves: the new certificate, the old key, the new key staged.
    stageFile(files.key, b.key, 0o600);
    writeFileSync(files.cert, b.cert);
    assert.equal(tmpFiles(dir).length, 1);
    const cur = readCurrent(files);
    assert.equal(cur.serial, b.serial);
    assert.equal(readFileSync(files.key, "utf8"), b.key);
    assert.equal(statSync(files.key).mode & 0o777, 0o600);
    assert.deepEqual(tmpFiles(dir), []);
  });

  test("stale staged files of a matching pair are only removed", async () => {
    const { dir, files } = fresh();
    const a = await pair();
    writeCertFiles(files, { chainPem: a.cert, keyPem: a.key }, { overwrite: false });
    const b = await pair();
    stageFile(files.key, b.key, 0o600);
    stageFile(files.cert, b.cert, 0o644);
    assert.equal(finishInterruptedRekey(files), false);
    assert.equal(readCurrent(files).serial, a.serial);
    assert.deepEqual(tmpFiles(dir), []);
  });

  test("a mismatched pair with nothing to recover is an error naming both files", async () => {
    const { files } = fresh();
    const a = await pair();
    const b = await pair();
    writeFileSync(files.cert, a.cert);
    writeFileSync(files.key, b.key);
    assert.throws(
      () => readCurrent(files),
      /the key in .*web\.key does not match the certificate in .*web\.crt/,
    );
  });
});
