// mtls/web record protection speed: the pure-TS ChaCha20-Poly1305 (src/web/tls/chacha20-poly1305.ts)
// next to AES-GCM through WebCrypto (what the TS TLS client uses for the AES suites) and, for reference,
// OpenSSL's native ChaCha20-Poly1305 through node:crypto (which no browser page can call). One TLS record
// = N bytes of plaintext + the 5-byte record header as AAD, a fresh nonce per record, as TLS does.
//
//   node --import tsx bench/web-aead.ts     prints the table (also part of bench/web.ts's report)
// Knobs: BENCH_SECONDS per measurement (default 2), BENCH_SIZES (default 16384,1024).
import { createCipheriv, randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { AES_128_GCM, AES_256_GCM, type AeadAlgorithm } from "../src/web/tls/aead.js";
import { CHACHA20_POLY1305, chacha20Poly1305 } from "../src/web/tls/chacha20-poly1305.js";

/** MB/s by the wall clock, and MB per CPU-second of this process (user + system, all threads). */
export interface Speed {
  wall: number;
  cpu: number;
}

export interface AeadRow {
  name: string;
  size: number;
  seal: Speed;
  open: Speed | null;
}

async function measure(seconds: number, fn: (i: number) => unknown, size: number): Promise<Speed> {
  for (let i = 0; i < 200; i++) await fn(i); // warm-up: let V8 optimise
  let n = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    for (let k = 0; k < 16; k++) await fn(n++);
  }
  const secs = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuSecs = (cpu.user + cpu.system) / 1e6;
  return { wall: (n * size) / secs / 1e6, cpu: (n * size) / cpuSecs / 1e6 };
}

function nonceOf(i: number): Uint8Array {
  const n = new Uint8Array(12);
  new DataView(n.buffer).setUint32(8, i);
  return n;
}

const headerOf = (size: number) => new Uint8Array([0x17, 0x03, 0x03, (size + 17) >> 8, (size + 17) & 0xff]);

/** Through the Aead interface the TLS client uses (async; AES-GCM goes to WebCrypto). */
async function viaInterface(
  seconds: number,
  name: string,
  alg: AeadAlgorithm,
  size: number,
): Promise<AeadRow> {
  const aead = await alg.create(new Uint8Array(randomBytes(alg.keyLength)));
  const aad = headerOf(size);
  const pt = new Uint8Array(randomBytes(size));
  const sealed = await aead.seal(nonceOf(0), aad, pt);
  const seal = await measure(seconds, (i) => aead.seal(nonceOf(i), aad, pt), size);
  const open = await measure(
    seconds,
    async () => {
      if (!(await aead.open(nonceOf(0), aad, sealed))) throw new Error(`${name}: open failed`);
    },
    size,
  );
  return { name, size, seal, open };
}

export async function measureAeads(seconds: number, sizes: number[]): Promise<AeadRow[]> {
  const rows: AeadRow[] = [];
  for (const size of sizes) {
    const key = new Uint8Array(randomBytes(32));
    const aad = headerOf(size);
    const pt = new Uint8Array(randomBytes(size));

    const cipher = chacha20Poly1305(key);
    const sealed = cipher.seal(nonceOf(0), aad, pt);
    rows.push({
      name: "ChaCha20-Poly1305, pure TS, called directly (sync)",
      size,
      seal: await measure(seconds, (i) => cipher.seal(nonceOf(i), aad, pt), size),
      open: await measure(
        seconds,
        () => {
          if (!cipher.open(nonceOf(0), aad, sealed)) throw new Error("open failed");
        },
        size,
      ),
    });
    rows.push(
      await viaInterface(seconds, "ChaCha20-Poly1305, pure TS (Aead interface)", CHACHA20_POLY1305, size),
    );
    rows.push(
      await viaInterface(seconds, "AES-128-GCM, WebCrypto crypto.subtle (Aead interface)", AES_128_GCM, size),
    );
    rows.push(
      await viaInterface(seconds, "AES-256-GCM, WebCrypto crypto.subtle (Aead interface)", AES_256_GCM, size),
    );

    const native = (i: number) => {
      const c = createCipheriv("chacha20-poly1305", key, nonceOf(i), { authTagLength: 16 });
      c.setAAD(aad, { plaintextLength: pt.length });
      c.update(pt);
      c.final();
      return c.getAuthTag();
    };
    rows.push({
      name: "ChaCha20-Poly1305, OpenSSL via node:crypto (reference, not in browsers)",
      size,
      seal: await measure(seconds, native, size),
      open: null,
    });
  }
  return rows;
}

/** The markdown table: MB/s by the wall clock, MB per CPU-second in brackets. */
export function aeadTable(rows: AeadRow[]): string {
  const f = (x: Speed | null) => (x ? `${x.wall.toFixed(0)} (${x.cpu.toFixed(0)})` : "–");
  return [
    "| AEAD | record | seal MB/s (per CPU-s) | open MB/s (per CPU-s) |",
    "|---|---:|---:|---:|",
    ...rows.map((r) => `| ${r.name} | ${r.size} B | ${f(r.seal)} | ${f(r.open)} |`),
  ].join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const seconds = Number(process.env.BENCH_SECONDS ?? 2);
  const sizes = (process.env.BENCH_SIZES ?? "16384,1024").split(",").map(Number);
  const { cpus, loadavg } = await import("node:os");
  const load = loadavg().map((l) => l.toFixed(2));
  console.log(
    `Node ${process.version} (OpenSSL ${process.versions.openssl}) on ${cpus().length} cores (${cpus()[0]?.model}), ` +
      `load ${load.join(" ")}, ${seconds} s per measurement.\n`,
  );
  console.log(aeadTable(await measureAeads(seconds, sizes)));
}
