import assert from "node:assert/strict";
import { createPrivateKey } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as tls from "node:tls";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { writeFileAtomic } from "../config/files.js";
import { type ErrorCode, isMtlsError, type MtlsError } from "../errors.js";
import { makeSan } from "../pki/names.js";
import { loadTlsMaterial } from "./material.js";
import type { TlsFiles, TlsMaterial } from "./types.js";

let pki: TestPki;
let web1: IssuedFiles;
let web2: IssuedFiles;
let web3: IssuedFiles;
let alice: IssuedFiles;
let expired: IssuedFiles;
let mallory: IssuedFiles;
let dirCount = 0;

before(async () => {
  pki = await createTestPki("mtls-material-");
  const sans = [makeSan("dns", "localhost"), makeSan("ip", "127.0.0.1")];
  web1 = await pki.issue("server", "web1", { sans });
  web2 = await pki.issue("server", "web2", { sans });
  web3 = await pki.issue("server", "web3", { sans });
  alice = await pki.issue("client", "alice");
  expired = await pki.issue("server", "old", {
    sans,
    at: new Date(Date.now() - 7_200_000),
    ttlMs: 3_600_000,
  });
  mallory = await pki.issue("server", "mallory", { sans, other: true });
});
after(() => pki.close());

/** A fresh folder holding copies of `from`'s files as server.crt / server.key / ca.crt. */
function liveCopy(from: IssuedFiles): TlsFiles {
  const dir = join(pki.dir, `live-${++dirCount}`);
  mkdirSync(dir);
  const files = { cert: join(dir, "server.crt"), key: join(dir, "server.key"), ca: join(dir, "ca.crt") };
  copyFileSync(from.cert, files.cert);
  copyFileSync(from.key, files.key);
  copyFileSync(from.ca, files.ca);
  return files;
}

/** Replaces the files the way renewals do: temp file + rename, key first. */
function replaceAtomically(files: TlsFiles, from: IssuedFiles, what: "both" | "cert" | "key" = "both") {
  if (what !== "cert") writeFileAtomic(files.key, readFileSync(from.key), { overwrite: true, mode: 0o600 });
  if (what !== "key") writeFileAtomic(files.cert, readFileSync(from.cert), { overwrite: true });
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, pattern: RegExp) {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isMtlsError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match((err as MtlsError).message, pattern);
    return true;
  });
}

/** Waits up to `ms` for `cond`, checking every 20 ms. */
async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const fp = (hexColons: string) => hexColons.replace(/:/g, "").toLowerCase();

/** An echo server whose context follows `material` (setSecureContext on every reload). */
async function serve(material: TlsMaterial): Promise<{ server: tls.Server; port: number }> {
  const server = tls.createServer(
    { ...material.contextOptions(), requestCert: true, rejectUnauthorized: false },
    (socket) => {
      socket.on("error", () => undefined);
      socket.pipe(socket);
    },
  );
  material.on("reload", () => server.setSecureContext(material.contextOptions()));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Sessions (TLS 1.3 tickets) each client socket received, in order. */
const sessions = new WeakMap<tls.TLSSocket, Buffer[]>();

function connect(port: number, client: TlsMaterial, session?: Buffer): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      { host: "127.0.0.1", port, secureContext: client.current(), ...(session ? { session } : {}) },
      () => resolve(socket),
    );
    const got: Buffer[] = [];
    sessions.set(socket, got);
    socket.on("session", (s: Buffer) => got.push(s));
    socket.once("error", reject);
  });
}

function echo(socket: tls.TLSSocket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    socket.once("data", (d) => resolve(d.toString()));
    socket.once("error", reject);
    socket.write(text);
  });
}

describe("loadTlsMaterial", () => {
  test("loads, checks and builds a TLS 1.2+ context", async () => {
    const m = await loadTlsMaterial(web1);
    try {
      assert.equal(m.certificate.serial, web1.certificate.serial);
      assert.deepEqual(
        m.chain.map((c) => c.serial),
        [pki.ca.intermediate.serial],
      );
      assert.deepEqual(
        m.anchors.map((c) => c.serial),
        [pki.ca.root.serial],
      );
      assert.equal(typeof m.current().context, "object");
      const opts = m.contextOptions();
      assert.equal(opts.minVersion, "TLSv1.2");
      assert.equal((opts.ticketKeys as Buffer).length, 48);
      assert.match(String(opts.key), /BEGIN PRIVATE KEY/);
      assert.equal(m.files, web1);
    } finally {
      m.close();
    }
  });

  test("a missing file is E_NOT_FOUND", async () => {
    await rejectsWith(
      loadTlsMaterial({ ...web1, key: join(pki.dir, "nope.key") }),
      "E_NOT_FOUND",
      /key file not found: .*nope.key/,
    );
  });

  test("an unparseable certificate is E_BAD_INPUT, naming the file", async () => {
    const files = liveCopy(web1);
    writeFileSync(files.cert, "garbage\n");
    await rejectsWith(loadTlsMaterial(files), "E_BAD_INPUT", /server\.crt: not a certificate/);
  });

  test("a key that does not match the certificate is refused", async () => {
    await rejectsWith(
      loadTlsMaterial({ ...web1, key: web2.key }),
      "E_BAD_INPUT",
      /the key in .*web2.key does not match the certificate in .*web1.crt/,
    );
  });

  test("an expired certificate is E_EXPIRED", async () => {
    await rejectsWith(loadTlsMaterial(expired), "E_EXPIRED", /expired at/);
  });

  test("a certificate of another CA is E_UNTRUSTED", async () => {
    await rejectsWith(loadTlsMaterial({ ...mallory, ca: web1.ca }), "E_UNTRUSTED", /not from this CA/);
  });

  test("encrypted keys need the passphrase", async () => {
    const files = liveCopy(web1);
    const key = createPrivateKey(readFileSync(web1.key));
    writeFileSync(
      files.key,
      key.export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "secret" }),
    );
    const m = await loadTlsMaterial(files, { passphrase: "secret" });
    m.close();
    await rejectsWith(loadTlsMaterial(files), "E_PASSPHRASE", /is encrypted: a passphrase is needed/);
    await rejectsWith(loadTlsMaterial(files, { passphrase: "wrong" }), "E_PASSPHRASE", /wrong passphrase/);
  });

  test("the clock decides validity", async () => {
    const afterExpiry = new Date(web1.certificate.notAfter.getTime() + 1);
    await rejectsWith(loadTlsMaterial(web1, { clock: () => afterExpiry }), "E_EXPIRED", /expired at/);
  });
});

describe("reload", () => {
  test("swaps the context for new connections; open ones keep working", async () => {
    const files = liveCopy(web1);
    const material = await loadTlsMaterial(files);
    const client = await loadTlsMaterial(alice);
    const { server, port } = await serve(material);
    let reloads = 0;
    material.on("reload", () => reloads++);
    try {
      const first = await connect(port, client);
      assert.equal(fp(first.getPeerCertificate().fingerprint256), web1.certificate.fingerprint);
      assert.equal(await echo(first, "before"), "before");

      replaceAtomically(files, web2);
      assert.equal(await material.reload(), true);
      assert.equal(reloads, 1);
      assert.equal(material.certificate.serial, web2.certificate.serial);

      const second = await connect(port, client);
      assert.equal(fp(second.getPeerCertificate().fingerprint256), web2.certificate.fingerprint);
      assert.equal(await echo(second, "new"), "new");
      // The connection made before the swap is untouched.
      assert.equal(await echo(first, "still here"), "still here");
      assert.equal(fp(first.getPeerCertificate().fingerprint256), web1.certificate.fingerprint);

      // Idempotent: nothing changed, no event.
      assert.equal(await material.reload(), false);
      assert.equal(reloads, 1);
      first.destroy();
      second.destroy();
    } finally {
      server.close();
      material.close();
      client.close();
    }
  });

  test("session tickets survive a reload (the ticket keys stay)", async () => {
    const files = liveCopy(web1);
    const material = await loadTlsMaterial(files);
    const client = await loadTlsMaterial(alice);
    const { server, port } = await serve(material);
    try {
      const keys = material.contextOptions().ticketKeys as Buffer;
      const first = await connect(port, client);
      // TLS 1.3 sends tickets after the handshake; an echo round trip brings them in.
      await echo(first, "x");
      const got = sessions.get(first) ?? [];
      await waitFor(() => got.length > 0, 2000, "a session ticket");
      const session = got[0] as Buffer;
      first.destroy();

      replaceAtomically(files, web2);
      assert.equal(await material.reload(), true);
      assert.deepEqual(material.contextOptions().ticketKeys, keys);

      const resumed = await connect(port, client, session);
      assert.equal(resumed.isSessionReused(), true);
      assert.equal(await echo(resumed, "y"), "y");
      resumed.destroy();
    } finally {
      server.close();
      material.close();
      client.close();
    }
  });

  test("a bad new file is refused: the old material stays and reloadError says why, once", async () => {
    const files = liveCopy(web1);
    const material = await loadTlsMaterial(files);
    const client = await loadTlsMaterial(alice);
    const { server, port } = await serve(material);
    const errors: MtlsError[] = [];
    let reloads = 0;
    material.on("reloadError", (e: MtlsError) => errors.push(e));
    material.on("reload", () => reloads++);
    const before = material.current();
    const expectRefused = async (code: ErrorCode, pattern: RegExp) => {
      const n = errors.length;
      assert.equal(await material.reload(), false);
      assert.equal(errors.length, n + 1, "one reloadError");
      const err = errors[n] as MtlsError;
      assert.ok(isMtlsError(err, code), `expected ${code}, got ${err.code}: ${err.message}`);
      assert.match(err.message, pattern);
      assert.equal(material.current(), before);
      assert.equal(material.certificate.serial, web1.certificate.serial);
    };
    try {
      writeFileAtomic(files.cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", {
        overwrite: true,
      });
      await expectRefused("E_BAD_INPUT", /server\.crt: malformed certificate/);
      // The same bad content is not reported again on every poll.
      assert.equal(await material.reload(), false);
      assert.equal(errors.length, 1);

      writeFileAtomic(files.cert, "garbage", { overwrite: true });
      await expectRefused("E_BAD_INPUT", /not a certificate/);

      replaceAtomically(files, web2, "cert"); // new certificate, old key
      await expectRefused("E_BAD_INPUT", /does not match the certificate/);

      replaceAtomically(files, expired);
      await expectRefused("E_EXPIRED", /expired at/);

      replaceAtomically(files, mallory);
      await expectRefused("E_UNTRUSTED", /not from this CA/);

      rmSync(files.key);
      await expectRefused("E_NOT_FOUND", /key file not found/);

      // Still serving the old certificate.
      const conn = await connect(port, client);
      assert.equal(fp(conn.getPeerCertificate().fingerprint256), web1.certificate.fingerprint);
      conn.destroy();
      assert.equal(reloads, 0);

      replaceAtomically(files, web2);
      assert.equal(await material.reload(), true);
      assert.equal(reloads, 1);
      assert.equal(material.certificate.serial, web2.certificate.serial);
    } finally {
      server.close();
      material.close();
      client.close();
    }
  });

  test("concurrent reloads run one at a time and swap once", async () => {
    const files = liveCopy(web1);
    const material = await loadTlsMaterial(files);
    let reloads = 0;
    material.on("reload", () => reloads++);
    replaceAtomically(files, web2);
    const results = await Promise.all([material.reload(), material.reload(), material.reload()]);
    assert.deepEqual(results, [true, false, false]);
    assert.equal(reloads, 1);
    material.close();
  });
});

describe("watch", () => {
  test("notices an atomic rename replacement within 2 s, and stops on close()", async () => {
    const files = liveCopy(web1);
    const material = await loadTlsMaterial(files);
    const seen: string[] = [];
    material.on("reload", () => seen.push(material.certificate.serial));
    material.watch();
    try {
      replaceAtomically(files, web2);
      await waitFor(() => seen.length === 1, 2000, "the reload after an atomic replacement");
      assert.deepEqual(seen, [web2.certificate.serial]);

      // An in-place rewrite (no rename) is noticed too.
      writeFileSync(files.key, readFileSync(web3.key));
      writeFileSync(files.cert, readFileSync(web3.cert));
      await waitFor(() => seen.length === 2, 2000, "the reload after an in-place write");
      assert.equal(seen[1], web3.certificate.serial);

      material.close();
      replaceAtomically(files, web1);
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(seen.length, 2, "no reload after close()");
    } finally {
      material.close();
    }
  });

  test("a watched bad file is reported through reloadError", async () => {
    const files = liveCopy(web1);
    const material = await loadTlsMaterial(files);
    const errors: MtlsError[] = [];
    material.on("reloadError", (e: MtlsError) => errors.push(e));
    material.watch();
    try {
      writeFileAtomic(files.cert, "garbage", { overwrite: true });
      await waitFor(() => errors.length === 1, 2000, "the reloadError");
      assert.match((errors[0] as MtlsError).message, /not a certificate/);
      assert.equal(material.certificate.serial, web1.certificate.serial);
    } finally {
      material.close();
    }
  });

  test("polling (intervalMs) catches what the folder watch cannot see: files behind symlinks", async () => {
    // live/ holds symlinks into real/; rewriting real/ makes no event in live/.
    const real = liveCopy(web1);
    const dir = join(pki.dir, `live-${++dirCount}`);
    mkdirSync(dir);
    const files = { cert: join(dir, "server.crt"), key: join(dir, "server.key"), ca: join(dir, "ca.crt") };
    symlinkSync(real.cert, files.cert);
    symlinkSync(real.key, files.key);
    symlinkSync(real.ca, files.ca);
    const material = await loadTlsMaterial(files);
    let reloads = 0;
    material.on("reload", () => reloads++);
    try {
      material.watch();
      replaceAtomically(real, web2);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(reloads, 0, "the folder watch alone does not see it");
      material.watch({ intervalMs: 100 });
      await waitFor(() => reloads === 1, 2000, "the polled reload");
      assert.equal(material.certificate.serial, web2.certificate.serial);
    } finally {
      material.close();
    }
  });
});
