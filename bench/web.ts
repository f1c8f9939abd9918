/**
 * mtls/web benchmarks (issue 9), printed as markdown and written to the `bench:web` section of
 * docs/benchmarks.md:
 * 1. Record protection in the TS TLS client: the pure-TS ChaCha20-Poly1305 next to AES-GCM through
 *    WebCrypto, per 16 KiB and 1 KiB record (bench/web-aead.ts). Decides whether
 *    TLS_CHACHA20_POLY1305_SHA256 is offered.
 * 2. In Chromium (playwright-core, /usr/bin/chromium): handshake time, sequential requests and
 *    throughput of the TS client through `mtls gateway --relay`, next to the same requests through
 *    the browser's own TLS to the same gateway (bench/web-browser.ts, its knobs are listed there).
 *
 *   node --import tsx bench/web.ts
 * Knobs: BENCH_SECONDS (per measurement, default 2), BENCH_ONLY=aead|aead-chromium|browser (run one part; leaves the
 * doc alone).
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { busy, machine, machineLine, writeDoc } from "./lib/proc.js";
import { aeadTable, measureAeads } from "./web-aead.js";
import { browserAeadTable, measureAeadsInChromium } from "./web-aead-chromium.js";
import { BROWSER_DEFAULTS, browserPart } from "./web-browser.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const ONLY = process.env.BENCH_ONLY;

/** One part of the report: a name for BENCH_ONLY, and what it adds to the markdown. */
interface Part {
  name: string;
  run(): Promise<string>;
}

const parts: Part[] = [
  {
    name: "aead",
    async run() {
      const rows = await measureAeads(SECONDS, [16384, 1024]);
      return [
        "### Record protection in the TS TLS client",
        "",
        "One TLS record sealed / opened; MB/s by the wall clock, and in brackets MB per CPU-second of the",
        "process (all threads: WebCrypto runs AES-GCM on libuv's pool).",
        "",
        aeadTable(rows),
      ].join("\n");
    },
  },
  {
    name: "aead-chromium",
    async run() {
      const rows = await measureAeadsInChromium(SECONDS, [16384, 1024]);
      return [
        "The same in headless Chromium (AES-GCM through the page's WebCrypto), MB/s:",
        "",
        browserAeadTable(rows),
      ].join("\n");
    },
  },
  { name: "browser", run: browserPart },
];

async function main(): Promise<void> {
  const m = machine(ROOT);
  const chosen = parts.filter((p) => !ONLY || p.name === ONLY);
  if (chosen.length === 0) throw new Error(`BENCH_ONLY=${ONLY}: no such part (${parts.map((p) => p.name)})`);
  const sections: string[] = [];
  for (const p of chosen) {
    process.stderr.write(`bench: web ${p.name}\n`);
    sections.push(await p.run());
  }
  const provisional = busy(m) ? " **Provisional: the machine was busy (load above the core count).**" : "";
  const body = [`${machineLine(m)} Load ${m.load}.${provisional}`, ...sections].join("\n\n");
  console.log(body);
  if (!ONLY && SECONDS === 2 && BROWSER_DEFAULTS) {
    writeDoc({
      file: join(ROOT, "docs", "benchmarks.md"),
      name: "web",
      intro:
        "## mtls/web: the TLS 1.3 client in the page\n\n`node --import tsx bench/web.ts` (bench/web.ts).",
      body,
    });
  }
}

await main();
