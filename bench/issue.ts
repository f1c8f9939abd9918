/**
 * Issuance benchmark (issue 2, "Performance"): certificates per second through the library end to end,
 * the signing step alone, Node's and OpenSSL's raw ECDSA P-256 sign rates, and a shell-script CA
 * (`openssl ecparam` + `req` + `x509 -req` per certificate), all in one run on this machine.
 * Prints a markdown report and rewrites the `bench:issue` section of docs/benchmarks.md.
 *
 *   npm run bench                 (BENCH_SECONDS=5 BENCH_SHELL_N=50 by default)
 *   node --cpu-prof --import tsx bench/issue.ts
 *   BENCH_ONLY=e2e node --cpu-prof --import tsx bench/issue.ts   (only the sequential issue loop;
 *                                                                 docs/benchmarks.md is left alone)
 */
import { execFileSync } from "node:child_process";
import { generateKeyPairSync, sign as nodeSign, randomBytes, webcrypto } from "node:crypto";
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { CertificateAuthority, type IssueRequest, initCa, openCa } from "../src/ca/index.js";
import { leafExtensions } from "../src/ca/profiles.js";
import { statePaths } from "../src/config/state.js";
import { buildCertificate, randomSerial } from "../src/pki/certificate.js";
import { parseCertificate } from "../src/pki/certinfo.js";
import { generateKeyPair, spkiOf } from "../src/pki/keys.js";
import { buildName } from "../src/pki/names.js";
import type { Signer } from "../src/pki/signer.js";
import { type CertificateRecord, openSqliteStore, type Store } from "../src/store/index.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const WARMUP_SECONDS = Number(process.env.BENCH_WARMUP ?? 1);
/** Component measurements (the "where the time goes" table) run shorter. */
const PART_SECONDS = Math.max(1, SECONDS / 3);
const SHELL_N = Number(process.env.BENCH_SHELL_N ?? 50);
const ONLY_E2E = process.env.BENCH_ONLY === "e2e";
/** Callers with an issue() in flight at once, as an enrollment API serving many clients has. */
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const GOAL_PER_SEC = 2000;
const PASSPHRASE = "bench-passphrase-not-secret";
const ORG = "Bench Corp";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const docFile = join(root, "docs", "benchmarks.md");
const START = "<!-- bench:issue:start -->";
const END = "<!-- bench:issue:end -->";

interface Rate {
  ops: number;
  seconds: number;
  perSec: number;
  /** The best one-second window of the run: other work on a shared machine shows as a gap to perSec. */
  bestSecond?: number;
}

/** Counts operations per whole second of a run, to report the best one. */
class Windows {
  private start = now();
  private ops = 0;
  best = 0;
  add(ops: number, t: number): void {
    this.ops += ops;
    if (t - this.start >= 1000) {
      this.best = Math.max(this.best, (this.ops * 1000) / (t - this.start));
      this.start = t;
      this.ops = 0;
    }
  }
  /** The best window, counting a last partial one of at least half a second. */
  finish(t: number): number {
    if (t - this.start >= 500) this.best = Math.max(this.best, (this.ops * 1000) / (t - this.start));
    return this.best;
  }
}

const now = () => performance.now();

/** Runs `fn` back to back (awaiting each call) for a warm-up, then for `seconds`, and counts calls. */
async function measure(
  seconds: number,
  fn: (i: number) => unknown,
  opsPerCall = 1,
  warmup = WARMUP_SECONDS,
): Promise<Rate> {
  let i = 0;
  const warmEnd = now() + warmup * 1000;
  while (now() < warmEnd) await fn(i++);
  let ops = 0;
  const start = now();
  const end = start + seconds * 1000;
  const windows = new Windows();
  let t = start;
  while (t < end) {
    await fn(i++);
    ops += opsPerCall;
    t = now();
    windows.add(opsPerCall, t);
  }
  const elapsed = (t - start) / 1000;
  return { ops, seconds: elapsed, perSec: ops / elapsed, bestSecond: windows.finish(t) || ops / elapsed };
}

/**
 * `callers` loops, each awaiting one `fn` call after another, all in flight together (no batches:
 * a caller whose call finished starts the next at once), until `seconds` have passed.
 */
async function measureConcurrent(
  seconds: number,
  callers: number,
  fn: () => Promise<unknown>,
  warmup = WARMUP_SECONDS,
): Promise<Rate> {
  const phase = async (ms: number, windows?: Windows) => {
    let ops = 0;
    const end = now() + ms;
    const caller = async () => {
      while (now() < end) {
        await fn();
        ops++;
        windows?.add(1, now());
      }
    };
    await Promise.all(Array.from({ length: callers }, caller));
    return ops;
  };
  await phase(warmup * 1000);
  const windows = new Windows();
  const start = now();
  const ops = await phase(seconds * 1000, windows);
  const t = now();
  const elapsed = (t - start) / 1000;
  return { ops, seconds: elapsed, perSec: ops / elapsed, bestSecond: windows.finish(t) || ops / elapsed };
}

/** The same for synchronous functions, without a microtask per call. */
function measureSync(seconds: number, fn: (i: number) => unknown, warmup = WARMUP_SECONDS): Rate {
  let i = 0;
  const warmEnd = now() + warmup * 1000;
  while (now() < warmEnd) fn(i++);
  let ops = 0;
  const start = now();
  const end = start + seconds * 1000;
  const windows = new Windows();
  let t = start;
  while (t < end) {
    fn(i++);
    ops++;
    t = now();
    windows.add(1, t);
  }
  const elapsed = (t - start) / 1000;
  return { ops, seconds: elapsed, perSec: ops / elapsed, bestSecond: windows.finish(t) || ops / elapsed };
}

const fmtRate = (n: number) => Math.round(n).toLocaleString("en-US");
const fmtUs = (perSec: number) => `${(1e6 / perSec).toFixed(perSec > 10_000 ? 1 : 0)} µs`;
const yesNo = (b: boolean) => (b ? "yes" : "no");
const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

function clientRequest(i: number): IssueRequest {
  const name = `bench-${i}`;
  return {
    profile: "client",
    name,
    sans: [
      { type: "email", value: `${name}@bench.test` },
      { type: "uri", value: `spiffe://bench.test/user/${name}` },
    ],
    actor: "bench",
  };
}

function machine() {
  const cpuinfo = existsSync("/proc/cpuinfo") ? readFileSync("/proc/cpuinfo", "utf8") : "";
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown";
  let nproc = String(availableParallelism());
  try {
    nproc = execFileSync("nproc", { encoding: "utf8" }).trim();
  } catch {}
  const openssl = execFileSync("openssl", ["version"], { encoding: "utf8" }).trim();
  return {
    nproc,
    model,
    node: process.version,
    nodeOpenssl: process.versions.openssl,
    openssl,
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    cpuPressure: existsSync("/proc/pressure/cpu")
      ? (/some avg10=\S+ avg60=(\S+)/.exec(readFileSync("/proc/pressure/cpu", "utf8"))?.[1] ?? "")
      : "",
    load: loadavg()
      .map((l) => l.toFixed(2))
      .join(" "),
  };
}

// ---------------------------------------------------------------------------------------------
// 1. mtls end to end, and where its time goes

interface EndToEnd {
  sequential: Rate;
  /** CONCURRENCY callers, group commit (the store's default). */
  concurrent: Rate;
  /** 8 callers, group commit. */
  concurrent8: Rate;
  /** CONCURRENCY callers over a store without group commit: one transaction and fsync per issue. */
  concurrentNoGroup: Rate;
}

function sequentialIssue(ca: CertificateAuthority, label: string): Promise<Rate> {
  let n = 0;
  log(`${label}: sequential ca.issue() for ${SECONDS}s`);
  return measure(SECONDS, () => ca.issue(clientRequest(n++)));
}

let concurrentN = 10_000_000;
function concurrentIssue(ca: CertificateAuthority, label: string, callers: number): Promise<Rate> {
  log(`${label}: ${callers} concurrent callers of ca.issue() for ${SECONDS}s`);
  return measureConcurrent(SECONDS, callers, () => ca.issue(clientRequest(concurrentN++)));
}

async function endToEnd(
  ca: CertificateAuthority,
  label: string,
  noGroup: CertificateAuthority,
): Promise<EndToEnd> {
  const sequential = await sequentialIssue(ca, label);
  const concurrent = await concurrentIssue(ca, label, CONCURRENCY);
  const concurrent8 = await concurrentIssue(ca, label, 8);
  const concurrentNoGroup = await concurrentIssue(noGroup, `${label}, no group commit`, CONCURRENCY);
  return { sequential, concurrent, concurrent8, concurrentNoGroup };
}

interface Part {
  what: string;
  rate: Rate;
  /** One of the steps ca.issue() takes by default (summed in the report). */
  inIssue: boolean;
}

/** One issuance transaction: the inventory row and its hash-chained audit event, as ca.issue() writes them. */
function storeWrite(store: Store, template: CertificateRecord) {
  let i = 0;
  return () => {
    const serial = randomSerial();
    const rec: CertificateRecord = {
      ...template,
      serial,
      name: `store-${i++}`,
      fingerprint: randomBytes(32).toString("hex"),
      createdAt: new Date(),
    };
    return store.transaction(async (tx) => {
      await tx.insertCertificate(rec);
      await tx.appendAudit({
        at: rec.createdAt,
        actor: "bench",
        action: "cert.issue",
        subject: serial,
        details: {
          name: rec.name,
          profile: rec.profile,
          subject: rec.subject,
          sans: rec.sans,
          keyType: rec.keyType,
          notAfter: rec.notAfter.toISOString(),
          fingerprint: rec.fingerprint,
        },
      });
    });
  };
}

/** What one durable commit costs on this disk at best: append 4 KiB to a file and fsync it. */
function fsyncAppend(fd: number): () => void {
  const page = Buffer.alloc(4096, 1);
  return () => {
    writeSync(fd, page);
    fsyncSync(fd);
  };
}

/** The steps of ca.issue() one by one, in its order, each timed on its own. */
async function parts(ca: CertificateAuthority, dir: string): Promise<Part[]> {
  const signer = ca.intermediateSigner();
  const req = clientRequest(1_000_000_000);
  const sample = await ca.issue(req);
  const cert = sample.certificate;
  const out: Part[] = [];
  const run = async (what: string, fn: () => unknown, opts: { sync?: boolean; inIssue?: boolean } = {}) => {
    log(`part: ${what}`);
    const rate = opts.sync ? measureSync(PART_SECONDS, fn, 0.3) : await measure(PART_SECONDS, fn, 1, 0.3);
    out.push({ what, rate, inIssue: opts.inIssue ?? true });
  };
  const key = generateKeyPair("ec-p256").privateKey;
  const extensions = () =>
    leafExtensions({
      profile: "client",
      spki: cert.spki,
      keyType: "ec-p256",
      issuerSpki: ca.intermediate.spki,
      sans: req.sans,
    });
  await run('key generation: `generateKeyPair("ec-p256")`', () => generateKeyPair("ec-p256"), { sync: true });
  await run("SPKI export: `spkiOf(privateKey)`", () => spkiOf(key), { sync: true });
  await run("extensions: `leafExtensions()` (client, 2 SANs)", extensions, { sync: true });
  await run("subject: `buildName()`", () => buildName({ organization: ORG, commonName: req.name }), {
    sync: true,
  });
  const exts = extensions();
  await run("TBS + signature: `buildCertificate()`", () =>
    buildCertificate(
      {
        serial: randomSerial(),
        issuer: ca.intermediate.subjectDer,
        subject: cert.subjectDer,
        notBefore: cert.notBefore,
        notAfter: cert.notAfter,
        spki: cert.spki,
        extensions: exts,
      },
      signer,
    ),
  );
  // Not a step of issue() any more (the record is written from what was encoded), kept for scale.
  await run(
    "for scale, not in issue(): `parseCertificate()` of the new certificate",
    () => parseCertificate(cert.der),
    {
      sync: true,
      inIssue: false,
    },
  );
  await run(
    "store: inventory row + audit event, one transaction, synchronous=FULL (default)",
    storeWrite(ca.store, sample.record),
  );
  const normal = await openSqliteStore(join(dir, "normal.db"), { synchronous: "normal" });
  await run("store: the same with synchronous=NORMAL", storeWrite(normal, sample.record), { inIssue: false });
  await normal.close();
  const memory = await openSqliteStore(":memory:");
  await run("store: the same on an in-memory database (no disk)", storeWrite(memory, sample.record), {
    inIssue: false,
  });
  await memory.close();
  const fd = openSync(join(dir, "fsync-probe"), "w");
  try {
    await run(
      "disk: append 4 KiB + `fsync` (the floor under each synchronous=FULL commit)",
      fsyncAppend(fd),
      {
        sync: true,
        inIssue: false,
      },
    );
  } finally {
    closeSync(fd);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// 2-3. signing alone, WebCrypto and node:crypto

async function signing(signer: Signer) {
  const tbs = randomBytes(400);
  log("signer.sign() over a 400-byte TBS");
  const mtlsSign = await measure(SECONDS, () => signer.sign(tbs));

  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  log("node:crypto.sign");
  const nodeRate = measureSync(SECONDS, () => nodeSign("sha256", tbs, privateKey));

  const subtle = webcrypto.subtle;
  const pair = await subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  const alg = { name: "ECDSA", hash: "SHA-256" };
  log("WebCrypto subtle.sign");
  const webRate = await measure(SECONDS, () => subtle.sign(alg, pair.privateKey, tbs));
  return { mtlsSign, nodeRate, webRate };
}

// ---------------------------------------------------------------------------------------------
// 4. openssl speed

function opensslSpeed(): { sign: number; verify: number; raw: string } {
  log("openssl speed -seconds 3 ecdsap256");
  const raw = execFileSync("openssl", ["speed", "-seconds", "3", "ecdsap256"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"],
  });
  // " 256 bits ecdsa (nistp256)   0.0000s   0.0001s  38123.4  12345.6"
  const m = /256 bits ecdsa \(nistp256\)\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)\s+([\d.]+)/.exec(raw);
  if (!m) throw new Error(`could not parse openssl speed output:\n${raw}`);
  return { sign: Number(m[1]), verify: Number(m[2]), raw: m[0].trim() };
}

// ---------------------------------------------------------------------------------------------
// 5. a shell-script CA

const SHELL_CA = `#!/bin/sh
# One certificate per iteration, the way a shell-script CA does it: key, CSR, signature by the CA.
set -e
cd "$1"
i=0
while [ "$i" -lt "$2" ]; do
  i=$((i + 1))
  openssl ecparam -genkey -name prime256v1 -noout -out "bench-$i.key"
  openssl req -new -key "bench-$i.key" -subj "/O=${ORG}/CN=bench-$i" -out "bench-$i.csr"
  BENCH_NAME="bench-$i" openssl x509 -req -in "bench-$i.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \\
    -days 30 -sha256 -extfile ext.cnf -extensions client -out "bench-$i.crt" 2>/dev/null
done
`;

const SHELL_EXT = `[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = email:$ENV::BENCH_NAME@bench.test, URI:spiffe://bench.test/user/$ENV::BENCH_NAME
`;

function shellLoop(dir: string): Rate {
  mkdirSync(dir, { recursive: true });
  const opts = { cwd: dir, stdio: "ignore" as const };
  execFileSync("openssl", ["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", "ca.key"], opts);
  execFileSync(
    "openssl",
    [
      "req",
      "-new",
      "-x509",
      "-key",
      "ca.key",
      "-subj",
      `/O=${ORG}/CN=${ORG} Shell CA`,
      "-days",
      "365",
      "-addext",
      "basicConstraints=critical,CA:TRUE,pathlen:0",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-out",
      "ca.crt",
    ],
    opts,
  );
  writeFileSync(join(dir, "ext.cnf"), SHELL_EXT);
  writeFileSync(join(dir, "issue.sh"), SHELL_CA);
  log(`shell-script CA: ${SHELL_N} certificates`);
  const start = now();
  execFileSync("sh", [join(dir, "issue.sh"), dir, String(SHELL_N)], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const seconds = (now() - start) / 1000;
  // Sanity: the last certificate is really there and chains to the shell CA.
  execFileSync("openssl", ["verify", "-CAfile", "ca.crt", `bench-${SHELL_N}.crt`], opts);
  return { ops: SHELL_N, seconds, perSec: SHELL_N / seconds };
}

// ---------------------------------------------------------------------------------------------
// report

function report(r: {
  m: ReturnType<typeof machine>;
  e2e: EndToEnd;
  e2eNormal: Rate;
  e2eMemory: Rate;
  e2eMemoryConcurrent: Rate;
  parts: Part[];
  sign: Awaited<ReturnType<typeof signing>>;
  speed: ReturnType<typeof opensslSpeed>;
  shell: Rate;
}): string {
  const { m, e2e, e2eNormal, e2eMemory, e2eMemoryConcurrent, sign, speed, shell } = r;
  const signFraction = sign.mtlsSign.perSec / speed.sign;
  const row = (what: string, rate: Rate, note = "") =>
    `| ${what} | ${fmtRate(rate.perSec)} | ${rate.bestSecond ? fmtRate(rate.bestSecond) : "–"} | ${fmtUs(rate.perSec)} | ${note} |`;
  const e2eCost = 1e6 / e2e.sequential.perSec;
  const partRow = (p: Part) =>
    `| ${p.what} | ${fmtRate(p.rate.perSec)} | ${fmtUs(p.rate.perSec)} | ${((1e6 / p.rate.perSec / e2eCost) * 100).toFixed(0)}% |`;
  const sumUs = r.parts.filter((p) => p.inIssue).reduce((sum, p) => sum + 1e6 / p.rate.perSec, 0);
  const lines = [
    `Measured ${m.date} on ${m.nproc} CPU cores (${m.model}); Node ${m.node} (OpenSSL ${m.nodeOpenssl}); ${m.openssl}; load average ${m.load} at the start${m.cpuPressure ? `, CPU pressure (PSI some avg60) ${m.cpuPressure}%` : ""}.`,
    `Timed runs of ${SECONDS} s after a ${WARMUP_SECONDS} s warm-up, all in one Node process on its one JavaScript`,
    "thread (better-sqlite3 commits synchronously on it). Sequential: one caller awaits each `ca.issue()` before",
    "the next, so every certificate waits for its own commit and fsync. Concurrent: N callers each loop over",
    "`ca.issue()` with their calls in flight together, as an enrollment API serving many clients has them; with",
    "group commit the transactions that queue meanwhile share one COMMIT and one fsync, and each promise resolves",
    'only after that commit. "Per second" is the mean over the whole run; "Best 1 s" is its best one-second',
    "window, which shows how much other work on the machine (CPU or disk) pulled the mean down.",
    "",
    "| Measurement | Per second | Best 1 s | Per operation | Notes |",
    "|---|---:|---:|---:|---|",
    row(
      "**mtls end to end**, sequential `ca.issue()`",
      e2e.sequential,
      "client profile, ec-p256 key generated, signed, inventory row + audit event committed (SQLite WAL, synchronous=FULL)",
    ),
    row(
      `**mtls end to end**, ${CONCURRENCY} concurrent callers`,
      e2e.concurrent,
      "same work per certificate; group commit (the default): queued transactions share one commit and fsync",
    ),
    row("mtls end to end, 8 concurrent callers", e2e.concurrent8, "same, group commit"),
    row(
      `mtls end to end, ${CONCURRENCY} concurrent callers, no group commit`,
      e2e.concurrentNoGroup,
      "`openSqliteStore(file, { groupCommit: false })`: one transaction and fsync per certificate (as before)",
    ),
    row("mtls signing alone: intermediate `Signer.sign()`", sign.mtlsSign, "keyObjectSigner, 400-byte TBS"),
    row("Node `crypto.sign` ECDSA P-256 (SHA-256)", sign.nodeRate, "synchronous"),
    row("Node WebCrypto `subtle.sign` ECDSA P-256", sign.webRate, "sequential, awaited"),
    row(
      "`openssl speed -seconds 3 ecdsap256`, sign",
      { ops: 0, seconds: 0, perSec: speed.sign },
      `one process; verify ${fmtRate(speed.verify)}/s`,
    ),
    row(
      "shell-script CA: `openssl ecparam -genkey` + `req -new` + `x509 -req` per certificate",
      shell,
      `${shell.ops} certificates in ${shell.seconds.toFixed(2)} s, three processes each`,
    ),
    "",
    "| Ratio / goal | Value |",
    "|---|---|",
    `| mtls end to end vs the shell-script CA | ${(e2e.sequential.perSec / shell.perSec).toFixed(0)}× sequential, ${(e2e.concurrent.perSec / shell.perSec).toFixed(0)}× concurrent |`,
    `| group commit: ${CONCURRENCY} callers with vs without | ${(e2e.concurrent.perSec / e2e.concurrentNoGroup.perSec).toFixed(2)}× |`,
    `| mtls signing alone vs openssl speed sign | ${signFraction.toFixed(2)} of openssl's rate; within 2x: ${yesNo(signFraction >= 0.5)} |`,
    `| Node WebCrypto vs node:crypto sign | ${(sign.webRate.perSec / sign.nodeRate.perSec).toFixed(2)} |`,
    `| Goal: ≥ ${fmtRate(GOAL_PER_SEC)} certificates/s end to end on one core (one process, one thread, ${CONCURRENCY} concurrent callers) | ${yesNo(e2e.concurrent.perSec >= GOAL_PER_SEC)} (${fmtRate(e2e.concurrent.perSec)}/s; best 1 s window ${fmtRate(e2e.concurrent.bestSecond ?? 0)}/s) |`,
    `| One caller at a time (bounded by one fsync per certificate, not the goal's measure) | ${fmtRate(e2e.sequential.perSec)}/s; best 1 s window ${fmtRate(e2e.sequential.bestSecond ?? 0)}/s |`,
    "",
    "Where the time of one issuance goes: the steps of `ca.issue()` in its order, each timed on its own",
    `in the same process (${PART_SECONDS.toFixed(1)} s each, so approximate). Share = the step's time over the`,
    "sequential end-to-end time. Rows below the sum are not part of `ca.issue()`: they compare store settings.",
    "",
    "| Step | Per second | Per operation | Share of one issuance |",
    "|---|---:|---:|---:|",
    ...r.parts.filter((p) => p.inIssue).map(partRow),
    `| **sum of the steps above** | | **${sumUs.toFixed(0)} µs** | ${((sumUs / e2eCost) * 100).toFixed(0)}% |`,
    ...r.parts.filter((p) => !p.inIssue).map(partRow),
    partRow({
      what: "end to end, sequential `ca.issue()` with the store at synchronous=NORMAL",
      rate: e2eNormal,
      inIssue: false,
    }),
    partRow({
      what: "end to end, sequential `ca.issue()` over an in-memory store (CPU only)",
      rate: e2eMemory,
      inIssue: false,
    }),
    partRow({
      what: `end to end, ${CONCURRENCY} concurrent callers over an in-memory store (the CPU ceiling)`,
      rate: e2eMemoryConcurrent,
      inIssue: false,
    }),
    "",
    `The shell-script CA writes key, CSR and certificate files but keeps no inventory or audit log;`,
    "`ca.issue()` writes no files (the certificate and key are returned) but commits both to the database.",
  ];
  return lines.join("\n");
}

function writeDoc(section: string): void {
  const block = `${START}\n${section}\n${END}`;
  let text: string;
  if (existsSync(docFile)) {
    const old = readFileSync(docFile, "utf8");
    const a = old.indexOf(START);
    const b = old.indexOf(END);
    text =
      a >= 0 && b > a
        ? old.slice(0, a) + block + old.slice(b + END.length)
        : `${old.replace(/\n*$/, "\n\n")}## Issuing certificates\n\n${block}\n`;
  } else {
    text = [
      "# Benchmarks",
      "",
      "Each section below is written by a script in `bench/` and rewritten whenever it runs; the text",
      "between the `bench:*` markers is generated, so edit the scripts rather than the numbers.",
      "",
      "## Issuing certificates",
      "",
      "`npm run bench` (bench/issue.ts): certificates per second through the library end to end",
      "(key generation, signing, store write, audit entry), the signing step alone, Node's and",
      "OpenSSL's raw ECDSA P-256 sign rates, and a shell-script CA built from the `openssl` command.",
      "Goals (issue 2): at least 2,000 certificates per second end to end on one core, and signing",
      "alone within 2x of OpenSSL's raw sign rate.",
      "",
      block,
      "",
    ].join("\n");
  }
  mkdirSync(dirname(docFile), { recursive: true });
  writeFileSync(docFile, text);
}

async function main(): Promise<void> {
  const m = machine();
  const dir = mkdtempSync(join(tmpdir(), "mtls-bench-"));
  try {
    const paths = statePaths(join(dir, "state"));
    await initCa({ paths, name: ORG, passphrase: PASSPHRASE, actor: "bench" });
    const ca = await openCa(paths, { env: { MTLS_PASSPHRASE: PASSPHRASE } });
    if (ONLY_E2E) {
      const seq = await sequentialIssue(ca, "end to end only");
      const conc = await concurrentIssue(ca, "end to end only", CONCURRENCY);
      await ca.store.close();
      process.stdout.write(
        `mtls end to end, sequential: ${fmtRate(seq.perSec)}/s (${fmtUs(seq.perSec)} each; ${seq.ops} certificates in ${seq.seconds.toFixed(2)} s after the warm-up)\n` +
          `mtls end to end, ${CONCURRENCY} concurrent callers: ${fmtRate(conc.perSec)}/s (${fmtUs(conc.perSec)} each; best 1 s ${fmtRate(conc.bestSecond ?? 0)}/s)\n`,
      );
      return;
    }
    let e2e: EndToEnd;
    let partRates: Part[];
    let sign: Awaited<ReturnType<typeof signing>>;
    // A second connection to the same file, without group commit, for the before/after row.
    const plainStore = await openSqliteStore(paths.database, { groupCommit: false });
    try {
      const plain = await CertificateAuthority.open(paths, plainStore, { passphrase: () => PASSPHRASE });
      e2e = await endToEnd(ca, "end to end", plain);
    } finally {
      await plainStore.close();
    }
    try {
      partRates = await parts(ca, dir);
      sign = await signing(ca.intermediateSigner());
    } finally {
      await ca.store.close();
    }
    // The same CA over other stores, to tell the disk's share from the CPU's.
    const over = async (store: Store, label: string, callers = 1): Promise<Rate> => {
      try {
        const other = await CertificateAuthority.open(paths, store, { passphrase: () => PASSPHRASE });
        return callers === 1
          ? await sequentialIssue(other, label)
          : await concurrentIssue(other, label, callers);
      } finally {
        await store.close();
      }
    };
    const e2eNormal = await over(
      await openSqliteStore(paths.database, { synchronous: "normal" }),
      "end to end, synchronous=NORMAL",
    );
    const memStore = await openSqliteStore(":memory:");
    await memStore.setSetting("ca.name", ORG);
    const e2eMemory = await over(memStore, "end to end, in-memory store");
    const memStore2 = await openSqliteStore(":memory:");
    await memStore2.setSetting("ca.name", ORG);
    const e2eMemoryConcurrent = await over(memStore2, "end to end, in-memory store", CONCURRENCY);
    const speed = opensslSpeed();
    const shell = shellLoop(join(dir, "shell"));
    const section = report({
      m,
      e2e,
      e2eNormal,
      e2eMemory,
      e2eMemoryConcurrent,
      parts: partRates,
      sign,
      speed,
      shell,
    });
    process.stdout.write(`${section}\n`);
    writeDoc(section);
    log(`wrote ${docFile}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
