// The same record-protection comparison as bench/web-aead.ts, inside headless Chromium (/usr/bin/chromium
// through playwright-core), where it matters: the pure-TS ChaCha20-Poly1305 next to AES-GCM through the
// page's WebCrypto (BoringSSL behind an async boundary). The AEAD code is bundled with esbuild and run
// in a page at http://localhost (routed, no server), a secure context.
//
//   node --import tsx bench/web-aead-chromium.ts     Knobs: BENCH_SECONDS (default 2), BENCH_SIZES.
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";

export interface BrowserAeadRow {
  name: string;
  size: number;
  sealMBs: number;
  openMBs: number;
}

const CHROMIUM = "/usr/bin/chromium";

/** The page-side code: globalThis.aeadBench(seconds, sizes) -> rows. */
const PAGE_SOURCE = `
import { AES_128_GCM, AES_256_GCM } from "./src/web/tls/aead.ts";
import { CHACHA20_POLY1305 } from "./src/web/tls/chacha20-poly1305.ts";
async function measure(seconds, fn, size) {
  for (let i = 0; i < 200; i++) await fn(i);
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) for (let k = 0; k < 16; k++) await fn(n++);
  return (n * size) / ((performance.now() - start) / 1000) / 1e6;
}
const nonceOf = (i) => { const n = new Uint8Array(12); new DataView(n.buffer).setUint32(8, i); return n; };
globalThis.aeadBench = async (seconds, sizes) => {
  const rows = [];
  for (const size of sizes) {
    for (const [name, alg] of [
      ["ChaCha20-Poly1305, pure TS (Aead interface)", CHACHA20_POLY1305],
      ["AES-128-GCM, WebCrypto crypto.subtle (Aead interface)", AES_128_GCM],
      ["AES-256-GCM, WebCrypto crypto.subtle (Aead interface)", AES_256_GCM],
    ]) {
      const aead = await alg.create(crypto.getRandomValues(new Uint8Array(alg.keyLength)));
      const aad = new Uint8Array([23, 3, 3, (size + 17) >> 8, (size + 17) & 255]);
      const pt = crypto.getRandomValues(new Uint8Array(Math.min(size, 65536)));
      const sealed = await aead.seal(nonceOf(0), aad, pt);
      const sealMBs = await measure(seconds, (i) => aead.seal(nonceOf(i), aad, pt), size);
      const openMBs = await measure(seconds, async () => {
        if (!(await aead.open(nonceOf(0), aad, sealed))) throw new Error(name + ": open failed");
      }, size);
      rows.push({ name, size, sealMBs, openMBs });
    }
  }
  return rows;
};
`;

export async function measureAeadsInChromium(seconds: number, sizes: number[]): Promise<BrowserAeadRow[]> {
  const root = fileURLToPath(new URL("..", import.meta.url));
  const bundle = await build({
    stdin: { contents: PAGE_SOURCE, resolveDir: root, loader: "js" },
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "silent",
  });
  const code = bundle.outputFiles[0]?.text ?? "";
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  try {
    const page = await browser.newPage();
    // WebCrypto needs a secure context: http://localhost is one; no server needed, the page is routed.
    await page.route("http://localhost/", (route) =>
      route.fulfill({ status: 200, contentType: "text/html", body: "<!doctype html><title>aead</title>" }),
    );
    await page.goto("http://localhost/");
    await page.addScriptTag({ content: code });
    return (await page.evaluate(
      ([s, z]) => (globalThis as unknown as { aeadBench(s: number, z: number[]): unknown }).aeadBench(s, z),
      [seconds, sizes] as [number, number[]],
    )) as BrowserAeadRow[];
  } finally {
    await browser.close();
  }
}

export function browserAeadTable(rows: BrowserAeadRow[]): string {
  return [
    "| AEAD (in Chromium) | record | seal MB/s | open MB/s |",
    "|---|---:|---:|---:|",
    ...rows.map((r) => `| ${r.name} | ${r.size} B | ${r.sealMBs.toFixed(0)} | ${r.openMBs.toFixed(0)} |`),
  ].join("\n");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const seconds = Number(process.env.BENCH_SECONDS ?? 2);
  const sizes = (process.env.BENCH_SIZES ?? "16384,1024").split(",").map(Number);
  const { loadavg } = await import("node:os");
  console.log(
    `Chromium (${CHROMIUM}), load ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}, ${seconds} s each.\n`,
  );
  console.log(browserAeadTable(await measureAeadsInChromium(seconds, sizes)));
}
