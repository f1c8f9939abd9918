import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { CertificateAuthority } from "../ca/authority.js";
import { initCa } from "../ca/init.js";
import { openCa } from "../ca/open.js";
import { type StatePaths, statePaths } from "../config/state.js";
import { isMtlsError } from "../errors.js";
import {
  buildCrl,
  type CertInfo,
  crlToPem,
  generateKeyPair,
  keyObjectSigner,
  parseCrls,
  parseOcspRequest,
} from "../pki/index.js";
import { createRevocationChecker, type RevocationCheckerOptions } from "./revocation.js";
import type { RevocationChecker } from "./types.js";

const run = promisify(execFile);
const openssl = (...args: string[]) => run("openssl", args, { timeout: 10_000 });

/** Resolves with the first "update" within `ms`, or rejects. */
function nextUpdate(checker: RevocationChecker, ms = 2_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      checker.off("update", on);
      reject(new Error(`no "update" within ${ms} ms`));
    }, ms);
    const on = (info: unknown) => {
      clearTimeout(timer);
      resolve(info);
    };
    checker.once("update", on);
  });
}

/** Polls `cond` every 20 ms for at most `ms`. */
async function waitFor(cond: () => boolean, ms = 2_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Replaces a file the way careful writers do: a temp file renamed over it. */
function replaceAtomically(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

type Handler = (req: IncomingMessage, body: Buffer, res: ServerResponse) => unknown;

/**
 * One HTTP server on 127.0.0.1 standing for the CA's public URL: /crl and /ocsp, each with a
 * swappable handler, counting requests. The OCSP handler hands each request to `openssl ocsp` in
 * responder mode (-reqin/-respout), so the answers come from OpenSSL, not from our code.
 */
class FrontServer {
  server: Server;
  port = 0;
  crlHandler: Handler = (_q, _b, res) => res.writeHead(404).end();
  ocspHandler: Handler = (_q, _b, res) => res.writeHead(404).end();
  counts = { crl: 0, ocsp: 0 };
  ocspBodies: Buffer[] = [];

  constructor() {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        const h = req.url?.startsWith("/ocsp") ? "ocsp" : req.url?.startsWith("/crl") ? "crl" : undefined;
        if (!h) return void res.writeHead(404).end();
        this.counts[h]++;
        if (h === "ocsp") this.ocspBodies.push(body);
        Promise.resolve((h === "ocsp" ? this.ocspHandler : this.crlHandler)(req, body, res)).catch((err) => {
          if (!res.headersSent) res.writeHead(500);
          res.end(String(err));
        });
      });
    });
  }

  async listen(): Promise<void> {
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    this.port = (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

interface TestCa {
  dir: string;
  paths: StatePaths;
  ca: CertificateAuthority;
  intermediateKey: string;
}

async function makeCa(dir: string, name: string, publicUrl?: string): Promise<TestCa> {
  const paths = statePaths(join(dir, "state"));
  await initCa({ paths, name, passphrase: "t", ...(publicUrl ? { publicUrl } : {}), actor: "test" });
  const ca = await openCa(paths, { env: { MTLS_PASSPHRASE: "t" } });
  const intermediateKey = join(dir, "intermediate.key");
  await openssl("pkey", "-in", paths.intermediateKey, "-passin", "pass:t", "-out", intermediateKey);
  return { dir, paths, ca, intermediateKey };
}

async function issue(t: TestCa, name: string): Promise<CertInfo> {
  return (await t.ca.issue({ profile: "client", name, sans: [], actor: "test" })).certificate;
}

/** openssl's index.txt: one line per certificate, V(alid) or R(evoked). */
function indexTxt(entries: { cert: CertInfo; revokedAt?: Date }[]): string {
  const t = (d: Date) => `${d.toISOString().replace(/[-:T]/g, "").slice(2, 14)}Z`;
  return entries
    .map(({ cert, revokedAt }) => {
      const serial = cert.serial.toUpperCase();
      return revokedAt
        ? `R\t${t(cert.notAfter)}\t${t(revokedAt)},keyCompromise\t${serial}\tunknown\t/CN=${cert.subject}\n`
        : `V\t${t(cert.notAfter)}\t\t${serial}\tunknown\t/CN=${cert.subject}\n`;
    })
    .join("");
}

interface ResponderConfig {
  dir: string;
  index: string;
  caCert: string;
  rsigner: string;
  rkey: string;
}

let exchange = 0;

/** Runs `openssl ocsp` as the responder for one request (it re-reads index.txt every time). */
async function opensslAnswer(o: ResponderConfig, request: Buffer): Promise<Buffer> {
  const n = exchange++;
  const reqFile = join(o.dir, `req-${n}.der`);
  const respFile = join(o.dir, `resp-${n}.der`);
  writeFileSync(reqFile, request);
  await openssl(
    "ocsp",
    "-index",
    o.index,
    "-CA",
    o.caCert,
    "-rsigner",
    o.rsigner,
    "-rkey",
    o.rkey,
    "-reqin",
    reqFile,
    "-respout",
    respFile,
    "-nmin",
    "5",
  );
  return readFileSync(respFile);
}

const opensslResponder =
  (o: ResponderConfig, seen?: Buffer[]): Handler =>
  async (_req, body, res) => {
    const answer = await opensslAnswer(o, body);
    seen?.push(answer);
    res.writeHead(200, { "content-type": "application/ocsp-response" }).end(answer);
  };

describe("revocation checker", () => {
  let root: string;
  let front: FrontServer;
  let main: TestCa;
  let alice: CertInfo;
  let bob: CertInfo;
  const checkers: RevocationChecker[] = [];

  async function checker(opts: RevocationCheckerOptions): Promise<RevocationChecker> {
    const c = await createRevocationChecker(opts);
    checkers.push(c);
    return c;
  }

  before(async () => {
    root = mkdtempSync(join(tmpdir(), "mtls-revocation-"));
    front = new FrontServer();
    await front.listen();
    main = await makeCa(join(root, "main"), "Acme", `http://127.0.0.1:${front.port}`);
    alice = await issue(main, "alice");
    bob = await issue(main, "bob");
  });

  after(async () => {
    for (const c of checkers) c.close();
    await main?.ca.store.close();
    await front?.close();
    rmSync(root, { recursive: true, force: true });
  });

  describe("CRL files", () => {
    test("good, then revoked after the CA rewrites its CRL bundle (atomic rename): update within 2 s", async () => {
      const errors: string[] = [];
      const c = await checker({ crl: [main.paths.crl], onError: (e) => errors.push(e.message) });
      const good = await c.check(alice, main.ca.intermediate);
      assert.equal(good.status, "good");
      assert.match(good.source, /^crl:.*crl\.pem \(#1\)$/);
      assert.equal((await c.check(bob, main.ca.intermediate)).status, "good");
      // The bundle's second CRL is the root's: it vouches for the intermediate.
      assert.equal((await c.check(main.ca.intermediate, main.ca.root)).status, "good");

      const updated = nextUpdate(c);
      await main.ca.revoke([bob.serial], "keyCompromise", "test");
      await updated;
      const revoked = await c.check(bob, main.ca.intermediate);
      assert.equal(revoked.status, "revoked");
      assert.equal(revoked.reason, "keyCompromise");
      assert.ok(revoked.revokedAt instanceof Date);
      assert.match(revoked.source, /\(#2\)$/);
      assert.equal((await c.check(alice, main.ca.intermediate)).status, "good");
      assert.deepEqual(errors, []);
    });

    test("a garbage replacement keeps the old CRLs and reports once; a good one is taken again", async () => {
      const dir = mkdtempSync(join(root, "crlfile-"));
      const file = join(dir, "bundle.pem");
      const original = readFileSync(main.paths.crl);
      writeFileSync(file, original);
      const errors: { msg: string; source: string }[] = [];
      const c = await checker({
        crl: [file],
        onError: (e, source) => errors.push({ msg: e.message, source }),
      });
      assert.equal((await c.check(bob, main.ca.intermediate)).status, "revoked");

      replaceAtomically(file, "-----BEGIN X509 CRL-----\nnot base64 at all!\n-----END X509 CRL-----\n");
      await waitFor(() => errors.length > 0, 2_000, "onError");
      assert.match(errors[0]?.msg ?? "", /keeping the CRLs loaded before/);
      assert.equal(errors[0]?.source, `crl:${file}`);
      assert.equal((await c.check(bob, main.ca.intermediate)).status, "revoked");
      assert.equal((await c.check(alice, main.ca.intermediate)).status, "good");

      replaceAtomically(file, Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00])); // DER, but not a CRL
      await waitFor(() => errors.length > 1, 2_000, "second onError");
      assert.equal((await c.check(bob, main.ca.intermediate)).status, "revoked");

      // A different but valid file (the root CRL alone): "update", and the intermediate's CRL is gone.
      const updated = nextUpdate(c);
      replaceAtomically(file, readFileSync(main.paths.rootCrl));
      await updated;
      assert.equal((await c.check(bob, main.ca.intermediate)).status, "unknown");
      assert.equal((await c.check(main.ca.intermediate, main.ca.root)).status, "good");
    });

    test("a CRL made by `openssl ca -gencrl` with our intermediate's key is read and verified", async () => {
      const dir = mkdtempSync(join(root, "openssl-ca-"));
      const index = join(dir, "index.txt");
      writeFileSync(index, indexTxt([{ cert: alice }, { cert: bob, revokedAt: new Date() }]));
      writeFileSync(join(dir, "crlnumber"), "0A\n");
      const cfg = join(dir, "ca.cnf");
      writeFileSync(
        cfg,
        `[ca]\ndefault_ca = d\n[d]\ndatabase = ${index}\ncrlnumber = ${join(dir, "crlnumber")}\n` +
          "default_md = sha256\ndefault_crl_days = 1\ncrl_extensions = e\n[e]\nauthorityKeyIdentifier = keyid:always\n",
      );
      const out = join(dir, "crl.pem");
      await openssl(
        "ca",
        "-gencrl",
        "-config",
        cfg,
        "-keyfile",
        main.intermediateKey,
        "-cert",
        main.paths.intermediateCert,
        "-out",
        out,
      );
      const c = await checker({ crl: [out] });
      const good = await c.check(alice, main.ca.intermediate);
      assert.deepEqual(good, { status: "good", source: `crl:${out} (#10)` });
      const revoked = await c.check(bob, main.ca.intermediate);
      assert.equal(revoked.status, "revoked");
      assert.equal(revoked.reason, "keyCompromise");
    });

    test("a missing or garbage file at start is E_BAD_INPUT", async () => {
      await assert.rejects(
        createRevocationChecker({ crl: [join(root, "nope.pem")] }),
        (err) => isMtlsError(err, "E_BAD_INPUT") && /cannot read CRL file/.test((err as Error).message),
      );
      const bad = join(root, "garbage.pem");
      writeFileSync(bad, "hello");
      await assert.rejects(createRevocationChecker({ crl: [bad] }), (err) => isMtlsError(err, "E_BAD_INPUT"));
    });

    test("a CRL signed by another key under our intermediate's name is ignored (and reported)", async () => {
      const forger = keyObjectSigner(generateKeyPair("ec-p256").privateKey);
      const now = new Date();
      const forged = await buildCrl(
        {
          issuer: main.ca.intermediate.subjectDer,
          issuerSpki: forger.spki,
          thisUpdate: now,
          nextUpdate: new Date(now.getTime() + 86_400_000),
          crlNumber: 99,
          entries: [{ serial: alice.serial, revokedAt: now, reason: "keyCompromise" }],
        },
        forger,
      );
      const file = join(root, "forged.pem");
      writeFileSync(file, crlToPem(forged));
      const errors: string[] = [];
      const c = await checker({ crl: [file], onError: (e) => errors.push(e.message) });
      assert.deepEqual(await c.check(alice, main.ca.intermediate), { status: "unknown", source: "none" });
      assert.match(errors.join("\n"), /not signed by its key/);

      // With the real bundle beside it, the genuine CRL (#2, lower than the forged #99) decides.
      const both = await checker({ crl: [file, main.paths.crl] });
      assert.equal((await both.check(alice, main.ca.intermediate)).status, "good");
      assert.equal((await both.check(bob, main.ca.intermediate)).status, "revoked");

      // Another CA's genuine CRL does not speak for ours at all.
      const other = await makeCa(join(root, "other"), "Other Corp");
      try {
        const c2 = await checker({ crl: [other.paths.crl] });
        assert.equal((await c2.check(alice, main.ca.intermediate)).status, "unknown");
      } finally {
        await other.ca.store.close();
      }
    });

    test("a CRL past its nextUpdate gives no 'good', but its revocations stand; no issuer → unknown", async () => {
      const later = new Date(Date.now() + 8 * 86_400_000); // intermediate CRLs live 7 days
      const c = await checker({ crl: [main.paths.crl], clock: () => later });
      assert.equal((await c.check(alice, main.ca.intermediate)).status, "unknown");
      assert.equal((await c.check(bob, main.ca.intermediate)).status, "revoked");
      assert.equal((await c.check(main.ca.intermediate, main.ca.root)).status, "good"); // root CRL: 1 year
      assert.deepEqual(await c.check(alice, undefined), { status: "unknown", source: "none" });
    });
  });

  describe("CRL over HTTP", () => {
    test("fetched at start, refetched (304 when unchanged), a revocation arrives as an update", async () => {
      let crlDer = parseCrls(readFileSync(main.paths.crl))[0]?.der as Uint8Array;
      let etag = '"1"';
      let notModified = 0;
      front.crlHandler = (req, _b, res) => {
        if (req.headers["if-none-match"] === etag) {
          notModified++;
          return void res.writeHead(304).end();
        }
        res.writeHead(200, { "content-type": "application/pkix-crl", etag }).end(crlDer);
      };
      const url = `http://127.0.0.1:${front.port}/crl`;
      const errors: string[] = [];
      const before = front.counts.crl;
      const c = await checker({
        crl: [url],
        refreshFloorMs: 100,
        crlMaxAgeMs: 150,
        onError: (e) => errors.push(e.message),
      });
      assert.equal(front.counts.crl - before, 1);
      const st = await c.check(alice, main.ca.intermediate);
      assert.equal(st.status, "good");
      assert.equal(st.source, `crl:${url} (#2)`);
      await waitFor(() => notModified >= 2, 2_000, "conditional refetches");

      const carol = await issue(main, "carol");
      assert.equal((await c.check(carol, main.ca.intermediate)).status, "good");
      const updated = nextUpdate(c);
      await main.ca.revoke([carol.serial], "superseded", "test");
      crlDer = parseCrls(readFileSync(main.paths.crl))[0]?.der as Uint8Array;
      etag = '"2"';
      await updated;
      const revoked = await c.check(carol, main.ca.intermediate);
      assert.equal(revoked.status, "revoked");
      assert.equal(revoked.reason, "superseded");

      // Replaying an older CRL must not win over a newer one.
      const older = await main.ca.generateCrl(
        main.ca.intermediate,
        main.ca.intermediateSigner(),
        86_400_000,
        "t",
      );
      const newest = await main.ca.generateCrl(
        main.ca.intermediate,
        main.ca.intermediateSigner(),
        86_400_000,
        "t",
      );
      crlDer = newest;
      etag = '"3"';
      await nextUpdate(c);
      crlDer = older; // lower number, thisUpdate not newer
      etag = '"4"';
      await waitFor(() => errors.some((m) => /older than/.test(m)), 2_000, "rollback report");
      assert.equal((await c.check(carol, main.ca.intermediate)).status, "revoked");
      assert.match((await c.check(alice, main.ca.intermediate)).source, /\(#\d+\)$/);
    });

    test("unreachable at start: unknown and reported, then fetched on retry; a failed refetch keeps the CRL", async () => {
      let fail = true;
      const crlDer = parseCrls(readFileSync(main.paths.crl))[0]?.der as Uint8Array;
      front.crlHandler = (_q, _b, res) => {
        if (fail) return void res.writeHead(503).end();
        res.writeHead(200).end(crlDer);
      };
      const url = `http://127.0.0.1:${front.port}/crl`;
      const errors: string[] = [];
      const c = await checker({
        crl: [url],
        refreshFloorMs: 100,
        crlMaxAgeMs: 100,
        onError: (e) => errors.push(e.message),
      });
      assert.match(errors[0] ?? "", /HTTP 503/);
      assert.equal((await c.check(alice, main.ca.intermediate)).status, "unknown");
      const updated = nextUpdate(c, 3_000);
      fail = false;
      await updated;
      assert.equal((await c.check(alice, main.ca.intermediate)).status, "good");
      const n = errors.length;
      fail = true;
      await waitFor(() => errors.length > n, 2_000, "refetch failure");
      assert.equal((await c.check(alice, main.ca.intermediate)).status, "good");
    });
  });

  describe("OCSP against openssl ocsp", () => {
    let ocspDir: string;
    let index: string;
    let responder: ResponderConfig;
    const answers: Buffer[] = [];

    before(async () => {
      ocspDir = mkdtempSync(join(root, "ocsp-"));
      index = join(ocspDir, "index.txt");
      writeFileSync(index, indexTxt([{ cert: alice }, { cert: bob }]));
      responder = {
        dir: ocspDir,
        index,
        caCert: main.paths.intermediateCert,
        rsigner: main.paths.intermediateCert,
        rkey: main.intermediateKey,
      };
      front.ocspHandler = opensslResponder(responder, answers);
    });

    test("signed by the CA itself: good, cached, nonce sent and echoed; deduplicated", async () => {
      const c = await checker({ ocsp: true, ocspRecheckMs: 0 });
      const n0 = front.counts.ocsp;
      const st = await c.check(alice, main.ca.intermediate);
      assert.deepEqual(st, { status: "good", source: `ocsp:http://127.0.0.1:${front.port}/ocsp` });
      assert.equal(front.counts.ocsp - n0, 1);
      const sent = parseOcspRequest(front.ocspBodies.at(-1) as Buffer);
      assert.equal(sent.nonce?.length, 16);
      assert.ok(
        (answers.at(-1) as Buffer).includes(Buffer.from(sent.nonce as Uint8Array)),
        "openssl echoed the nonce",
      );

      assert.equal((await c.check(alice, main.ca.intermediate)).status, "good");
      assert.equal(front.counts.ocsp - n0, 1, "second check answered from the cache");

      const dave = await issue(main, "dave");
      writeFileSync(index, indexTxt([{ cert: alice }, { cert: bob }, { cert: dave }]));
      const all = await Promise.all(Array.from({ length: 5 }, () => c.check(dave, main.ca.intermediate)));
      assert.ok(all.every((s) => s.status === "good"));
      assert.equal(front.counts.ocsp - n0, 2, "five concurrent checks, one request");
    });

    test("a revocation in the responder reaches a re-polled serial as an update", async () => {
      const erin = await issue(main, "erin");
      const entries = [{ cert: alice }, { cert: bob }, { cert: erin }];
      writeFileSync(index, indexTxt(entries));
      const c = await checker({ ocsp: true, ocspRecheckMs: 150 });
      assert.equal((await c.check(erin, main.ca.intermediate)).status, "good");
      const updated = nextUpdate(c, 3_000);
      const revokedAt = new Date(Math.floor(Date.now() / 1000) * 1000);
      writeFileSync(index, indexTxt([{ cert: alice }, { cert: bob }, { cert: erin, revokedAt }]));
      await updated;
      const st = await c.check(erin, main.ca.intermediate);
      assert.equal(st.status, "revoked");
      assert.equal(st.reason, "keyCompromise");
      assert.equal(st.revokedAt?.getTime(), revokedAt.getTime());
    });

    test("a CRL revocation wins over an OCSP good; a leaf without AIA falls back to the CRL", async () => {
      // bob is revoked in the CRL bundle, but openssl's index says V.
      const c = await checker({ ocsp: true, ocspRecheckMs: 0, crl: [main.paths.crl] });
      const st = await c.check(bob, main.ca.intermediate);
      assert.equal(st.status, "revoked");
      assert.match(st.source, /^crl:/);
      assert.match((await c.check(alice, main.ca.intermediate)).source, /^ocsp:/);

      const plain = await makeCa(join(root, "plain"), "Plain"); // no public URL: no AIA
      try {
        const frank = await issue(plain, "frank");
        assert.deepEqual(frank.ocspUrls, []);
        const c2 = await checker({ ocsp: true, ocspRecheckMs: 0, crl: [plain.paths.crl] });
        assert.match((await c2.check(frank, plain.ca.intermediate)).source, /^crl:/);
        const c3 = await checker({ ocsp: true, ocspRecheckMs: 0 });
        assert.deepEqual(await c3.check(frank, plain.ca.intermediate), { status: "unknown", source: "none" });
      } finally {
        await plain.ca.store.close();
      }
    });

    test("a delegated responder certificate (EKU OCSPSigning, made by openssl) is accepted; without the EKU refused", async () => {
      const mk = async (name: string, extLines: string) => {
        const key = join(ocspDir, `${name}.key`);
        const csr = join(ocspDir, `${name}.csr`);
        const crt = join(ocspDir, `${name}.crt`);
        const extFile = join(ocspDir, `${name}.ext`);
        writeFileSync(extFile, extLines);
        await openssl(
          "req",
          "-new",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-keyout",
          key,
          "-subj",
          `/O=Acme/CN=Acme ${name}`,
          "-out",
          csr,
        );
        await openssl(
          "x509",
          "-req",
          "-in",
          csr,
          "-CA",
          main.paths.intermediateCert,
          "-CAkey",
          main.intermediateKey,
          "-set_serial",
          "0x1234",
          "-days",
          "1",
          "-extfile",
          extFile,
          "-out",
          crt,
        );
        return { key, crt };
      };
      const good = await mk(
        "OCSP Responder",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning\n",
      );
      const noEku = await mk(
        "Not A Responder",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
      );
      const saved = front.ocspHandler;
      try {
        front.ocspHandler = opensslResponder({ ...responder, rsigner: good.crt, rkey: good.key });
        const c = await checker({ ocsp: true, ocspRecheckMs: 0 });
        assert.equal((await c.check(alice, main.ca.intermediate)).status, "good");

        front.ocspHandler = opensslResponder({ ...responder, rsigner: noEku.crt, rkey: noEku.key });
        const errors: string[] = [];
        const c2 = await checker({ ocsp: true, ocspRecheckMs: 0, onError: (e) => errors.push(e.message) });
        assert.equal((await c2.check(alice, main.ca.intermediate)).status, "unknown");
        assert.match(errors.join("\n"), /not authorized for OCSP signing/);
      } finally {
        front.ocspHandler = saved;
      }
    });

    test("a response signed by an unrelated key under the CA's name is refused; a replayed nonce too", async () => {
      const fakeKey = join(ocspDir, "fake.key");
      const fakeCrt = join(ocspDir, "fake.crt");
      await openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        fakeKey,
        "-subj",
        "/O=Acme/CN=Acme Intermediate CA",
        "-days",
        "1",
        "-out",
        fakeCrt,
      );
      const saved = front.ocspHandler;
      try {
        front.ocspHandler = opensslResponder({ ...responder, rsigner: fakeCrt, rkey: fakeKey });
        const errors: string[] = [];
        const c = await checker({ ocsp: true, ocspRecheckMs: 0, onError: (e) => errors.push(e.message) });
        assert.equal((await c.check(alice, main.ca.intermediate)).status, "unknown");
        // openssl names it by its own (UTF8String) subject, which is not byte for byte our intermediate's
        // name, so the impostor is judged as a delegate the intermediate never issued.
        assert.match(errors.join("\n"), /is not issued by O=Acme, CN=Acme Intermediate CA/);

        // A man in the middle replays a genuine, earlier response: its nonce is not ours.
        let captured: Buffer | undefined;
        front.ocspHandler = async (_req, body, res) => {
          captured ??= await opensslAnswer(responder, body);
          res.writeHead(200).end(captured);
        };
        const c2 = await checker({ ocsp: true, ocspRecheckMs: 0, onError: (e) => errors.push(e.message) });
        assert.equal((await c2.check(alice, main.ca.intermediate)).status, "good"); // first: genuine
        const c3 = await checker({ ocsp: true, ocspRecheckMs: 0, onError: (e) => errors.push(e.message) });
        assert.equal((await c3.check(alice, main.ca.intermediate)).status, "unknown");
        assert.match(errors.join("\n"), /nonce other than the one we sent/);
      } finally {
        front.ocspHandler = saved;
      }
    });

    test("an unreachable responder: unknown within ocspTimeoutMs (or good with softFail); refused port too", async () => {
      const saved = front.ocspHandler;
      const hung: ServerResponse[] = [];
      try {
        front.ocspHandler = (_q, _b, res) => {
          hung.push(res); // never answers
        };
        const errors: string[] = [];
        const c = await checker({
          ocsp: true,
          ocspRecheckMs: 0,
          ocspTimeoutMs: 300,
          onError: (e) => errors.push(e.message),
        });
        const t0 = Date.now();
        const st = await c.check(alice, main.ca.intermediate);
        const took = Date.now() - t0;
        assert.equal(st.status, "unknown");
        assert.ok(took >= 250 && took < 1_500, `took ${took} ms`);
        assert.match(errors[0] ?? "", /timed out/);
        // Held off for ocspErrorHoldMs: the next check answers at once.
        const t1 = Date.now();
        assert.equal((await c.check(alice, main.ca.intermediate)).status, "unknown");
        assert.ok(Date.now() - t1 < 100);

        const soft = await checker({ ocsp: true, ocspRecheckMs: 0, ocspTimeoutMs: 200, softFail: true });
        const s = await soft.check(alice, main.ca.intermediate);
        assert.equal(s.status, "good");
        assert.match(s.source, /soft-fail/);
        // With a CRL, the CRL's verdict stands.
        const withCrl = await checker({
          ocsp: true,
          ocspRecheckMs: 0,
          ocspTimeoutMs: 200,
          crl: [main.paths.crl],
        });
        assert.match((await withCrl.check(alice, main.ca.intermediate)).source, /^crl:/);
      } finally {
        for (const r of hung) r.destroy();
        front.ocspHandler = saved;
      }

      // A responder nobody listens on (a CA whose public URL points at a closed port).
      const probe = createServer();
      probe.listen(0, "127.0.0.1");
      await once(probe, "listening");
      const deadPort = (probe.address() as AddressInfo).port;
      await new Promise<void>((r) => probe.close(() => r()));
      const dead = await makeCa(join(root, "dead"), "Dead", `http://127.0.0.1:${deadPort}`);
      try {
        const gina = await issue(dead, "gina");
        const errors: string[] = [];
        const c = await checker({
          ocsp: true,
          ocspRecheckMs: 0,
          ocspTimeoutMs: 1_000,
          onError: (e) => errors.push(e.message),
        });
        const t0 = Date.now();
        assert.equal((await c.check(gina, dead.ca.intermediate)).status, "unknown");
        assert.ok(Date.now() - t0 < 1_000);
        assert.match(errors[0] ?? "", /unreachable/);
      } finally {
        await dead.ca.store.close();
      }
    });

    test("the responder timeout fires even when garbage collection runs during the wait", async () => {
      // AbortSignal.any([..., AbortSignal.timeout(ms)]) loses its timeout to a GC on Node 20
      // (nodejs/node#57736): the check then waited for ever. Forced collections make it certain.
      const gc = (() => {
        setFlagsFromString("--expose-gc");
        return runInNewContext("gc") as () => void;
      })();
      const saved = front.ocspHandler;
      const hung: ServerResponse[] = [];
      try {
        front.ocspHandler = (_q, _b, res) => {
          hung.push(res); // never answers
        };
        const c = await checker({ ocsp: true, ocspRecheckMs: 0, ocspTimeoutMs: 300 });
        const t0 = Date.now();
        const pending = c.check(alice, main.ca.intermediate);
        for (let i = 0; i < 10; i++) {
          await new Promise((r) => setTimeout(r, 20));
          gc();
        }
        const st = await Promise.race([
          pending,
          new Promise<"hung">((r) => setTimeout(() => r("hung"), 3_000).unref()),
        ]);
        assert.notEqual(st, "hung", "no verdict 3 s after a 300 ms timeout");
        assert.equal((st as { status: string }).status, "unknown");
        assert.ok(Date.now() - t0 < 1_500, `took ${Date.now() - t0} ms`);
      } finally {
        for (const r of hung) r.destroy();
        front.ocspHandler = saved;
      }
    });

    test("a certificate the issuer did not sign never triggers a request", async () => {
      const other = await makeCa(join(root, "other2"), "Acme", `http://127.0.0.1:${front.port}`);
      try {
        const mallory = await issue(other, "mallory");
        const c = await checker({ ocsp: true, ocspRecheckMs: 0 });
        const n0 = front.counts.ocsp;
        assert.equal((await c.check(mallory, main.ca.intermediate)).status, "unknown");
        assert.equal(front.counts.ocsp, n0);
      } finally {
        await other.ca.store.close();
      }
    });
  });

  test("close() stops timers and watchers (the process is not held open)", async () => {
    const c = await createRevocationChecker({ crl: [main.paths.crl], ocsp: true });
    c.close();
    c.close();
    await sleep(10);
  });
});
