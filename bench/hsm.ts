/**
 * PKCS#11 signing benchmark (issue 6): signatures per second through the same Signer interface the
 * CA signs certificates, CRLs and OCSP responses with, for a key inside a SoftHSM2 token (pkcs11js,
 * CKM_ECDSA over a digest computed here, or CKM_SHA256_RSA_PKCS) next to a software key of the same
 * type (node:crypto). A fresh token in a temp directory; rounds alternate software and token so a
 * busy machine weighs on both alike; the median round counts. Prints a markdown report and rewrites
 * the `bench:hsm` section of docs/benchmarks.md.
 *
 *   npm run bench:hsm
 *   BENCH_SECONDS=2 BENCH_ROUNDS=3 BENCH_KEYS=ec-p256,ec-p384,rsa-2048 npm run bench:hsm
 */
import { execFileSync } from "node:child_process";
import { createPublicKey, verify } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { generatePkcs11Key } from "../src/keys/index.js";
import { generateKeyPair, type KeyType } from "../src/pki/keys.js";
import { keyObjectSigner, type Signer, signatureAlgorithmFor } from "../src/pki/signer.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const KEYS = (process.env.BENCH_KEYS ?? "ec-p256,ec-p384,rsa-2048").split(",") as KeyType[];
const MODULE = process.env.BENCH_PKCS11_MODULE ?? "/usr/lib/softhsm/libsofthsm2.so";
const PIN = "bench-pin-not-secret";

const here = dirname(fileURLToPath(import.meta.url));
const docFile = join(resolve(here, ".."), "docs", "benchmarks.md");
const START = "<!-- bench:hsm:start -->";
const END = "<!-- bench:hsm:end -->";

const log = (msg: string) => process.stderr.write(`bench:hsm: ${msg}\n`);
const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** Signs 32-byte-ish messages for `seconds`, one after the other; returns signatures per second. */
async function rate(signer: Signer, seconds: number): Promise<number> {
  const data = Buffer.alloc(300, 7); // about the size of a leaf certificate's TBS
  const end = performance.now() + seconds * 1000;
  let n = 0;
  let t = performance.now();
  const start = t;
  while (t < end) {
    for (let i = 0; i < 20; i++) {
      data.writeUInt32BE(n++, 0);
      await signer.sign(data);
    }
    t = performance.now();
  }
  return n / ((t - start) / 1000);
}

/** One signature checked by node:crypto, so a broken signer cannot make a fast number. */
async function check(signer: Signer): Promise<void> {
  const data = Buffer.from("bench check");
  const hash = signatureAlgorithmFor(signer.keyType).hash;
  const key = createPublicKey({ key: Buffer.from(signer.spki), format: "der", type: "spki" });
  if (!verify(hash, data, key, await signer.sign(data))) throw new Error(`${signer.keyType}: bad signature`);
}

interface Row {
  keyType: KeyType;
  software: number;
  token: number;
  /** Median of the per-round ratios (each round's software and token runs are back to back). */
  ratio: number;
}

function section(rows: Row[], machine: string, busy: boolean): string {
  const lines = [
    `Measured ${new Date().toISOString().slice(0, 10)} on ${machine}.`,
    `${ROUNDS} rounds of ${SECONDS} s per key, software and token back to back in each round; the medians of the rounds`,
    "are shown, and the ratio is the median of the rounds' ratios.",
    ...(busy
      ? [
          "**Provisional**: the machine was shared with other jobs during the run (see the load average), which",
          "weighs on both columns alike but lowers the absolute numbers; rerun `npm run bench:hsm` on an idle machine.",
        ]
      : []),
    "",
    "| key | software key (node:crypto) signatures/s | SoftHSM2 token (pkcs11js) signatures/s | software : token |",
    "|---|---:|---:|---:|",
    ...rows.map((r) => `| ${r.keyType} | ${fmt(r.software)} | ${fmt(r.token)} | ${fmt(r.ratio, 1)}x |`),
    "",
    "Both columns go through the same `Signer.sign()` the CA uses (hash, sign, DER ECDSA-Sig-Value), one",
    "signature at a time. SoftHSM2 is software too (OpenSSL inside the module): the token column measures the",
    "PKCS#11 path (pkcs11js, C_SignInit + C_Sign off the main thread per signature, one logged-in session) more than hardware, and a",
    "real HSM is usually slower per signature and faster only in parallel.",
  ];
  return lines.join("\n");
}

function writeDoc(text: string): void {
  const block = `${START}\n${text}\n${END}`;
  const old = existsSync(docFile) ? readFileSync(docFile, "utf8") : "# Benchmarks\n";
  const a = old.indexOf(START);
  const b = old.indexOf(END);
  const intro = [
    "## Keys in a PKCS#11 token: signing",
    "",
    "`npm run bench:hsm` (bench/hsm.ts): signatures per second with a key inside a SoftHSM2 token next to a",
    "software key of the same type, through the Signer that signs certificates, CRLs and OCSP responses.",
    "",
  ].join("\n");
  writeFileSync(
    docFile,
    a >= 0 && b > a
      ? old.slice(0, a) + block + old.slice(b + END.length)
      : `${old.replace(/\n*$/, "\n\n")}${intro}\n${block}\n`,
  );
}

async function main(): Promise<void> {
  if (!existsSync(MODULE)) throw new Error(`${MODULE} not found: install softhsm2`);
  const dir = mkdtempSync(join(tmpdir(), "mtls-bench-hsm-"));
  try {
    mkdirSync(join(dir, "tokens"));
    const conf = join(dir, "softhsm2.conf");
    writeFileSync(
      conf,
      `directories.tokendir = ${join(dir, "tokens")}\nobjectstore.backend = file\nlog.level = ERROR\n`,
    );
    process.env.SOFTHSM2_CONF = conf;
    execFileSync(
      "softhsm2-util",
      ["--init-token", "--free", "--label", "bench", "--pin", PIN, "--so-pin", `${PIN}-so`],
      {
        stdio: "ignore",
      },
    );
    const rows: Row[] = [];
    for (const keyType of KEYS) {
      const software = keyObjectSigner(generateKeyPair(keyType).privateKey);
      const token = generatePkcs11Key({
        module: MODULE,
        uri: `pkcs11:token=bench;object=${keyType}`,
        pin: PIN,
        keyType,
      });
      await check(software);
      await check(token);
      await rate(software, 0.3); // warm-up
      await rate(token, 0.3);
      const s: number[] = [];
      const t: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        s.push(await rate(software, SECONDS));
        t.push(await rate(token, SECONDS));
        log(
          `${keyType} round ${round + 1}: software ${fmt(s.at(-1) as number)}/s, token ${fmt(t.at(-1) as number)}/s`,
        );
      }
      rows.push({
        keyType,
        software: median(s),
        token: median(t),
        ratio: median(s.map((x, i) => x / (t[i] as number))),
      });
    }
    const machine = `${cpus()[0]?.model.trim() ?? "unknown CPU"}, ${availableParallelism()} cores, Node ${process.versions.node}, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" / ")}`;
    // More runnable work than half the cores: other jobs competed with the measurement.
    const text = section(rows, machine, (loadavg()[0] as number) > availableParallelism() / 2);
    process.stdout.write(`${text}\n`);
    writeDoc(text);
    log(`wrote ${docFile}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench:hsm: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
