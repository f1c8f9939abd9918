#!/usr/bin/env node
// Bundles `mtls/web` for browsers with esbuild (run by `npm run build` after tsc):
//   dist/web/mtls-web.js         ESM bundle of src/web/index.ts (the package's "browser" export of ./web)
//   dist/web/keystore-worker.js  the key store's dedicated worker (src/web/keystore/worker.ts)
// and FAILS if anything reachable from src/web needs Node: a node:* (or bare "fs", "crypto", ...) import
// stops esbuild itself (platform "browser"); a free reference to Buffer, process, global, __dirname,
// __filename or setImmediate is found by a first, unminified pass in which each of those globals is
// replaced by a marker, so the offending module can be named. The written files are scanned once more
// for `require("node:` / `from "node:` / `Buffer.` / `process.`.
//
// Usage: node scripts/build-web.mjs [--outdir DIR]
import { mkdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** The bundles: esbuild entry point and output name (without .js). */
export const WEB_ENTRIES = [
  { in: "src/web/index.ts", out: "mtls-web" },
  { in: "src/web/keystore/worker.ts", out: "keystore-worker" },
];

/** Globals that exist in Node but not in browsers; no module of the bundle may use them. */
export const NODE_GLOBALS = ["Buffer", "process", "global", "__dirname", "__filename", "setImmediate"];
const MARK = "__MTLS_WEB_NODE_GLOBAL_";

/**
 * Known, harmless uses in dependencies: [module path prefix, global, why]. pvtsutils (under
 * @peculiar/asn1-schema) falls back to Buffer only where atob/btoa are missing, i.e. never in a browser.
 * Anything under src/ is never allowed.
 */
export const ALLOWED = [["node_modules/pvtsutils/", "Buffer", "base64 fallback when atob/btoa are missing"]];

const COMMON = {
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  // Browsers only: never pick a package's "node" or "require" condition.
  conditions: ["browser", "import", "module", "default"],
  mainFields: ["browser", "module", "main"],
  logLevel: "silent",
  absWorkingDir: ROOT,
  // So that entry points outside the repository (test fixtures) resolve our dependencies too.
  nodePaths: [join(ROOT, "node_modules")],
};

/** One error message listing every problem, so the build log says exactly what to fix. */
export class WebBuildError extends Error {
  constructor(problems) {
    super(`mtls/web bundle is not browser-safe:\n  ${problems.join("\n  ")}`);
    this.name = "WebBuildError";
    this.problems = problems;
  }
}

/**
 * Builds the bundles into `outdir` (default dist/web) and returns their sizes.
 * `entries` replaces WEB_ENTRIES (tests use it to prove that a Node-only module is refused).
 * @param {{ outdir?: string, entries?: {in: string, out: string}[], minify?: boolean }} [options]
 */
export async function buildWeb(options = {}) {
  const outdir = resolve(ROOT, options.outdir ?? "dist/web");
  const entries = options.entries ?? WEB_ENTRIES;
  const problems = [];
  for (const e of entries) {
    try {
      statSync(resolve(ROOT, e.in));
    } catch {
      problems.push(`entry point ${e.in} does not exist`);
    }
  }
  if (problems.length) throw new WebBuildError(problems);

  // Pass 1, in memory and unminified: node:* imports fail here; Node globals become markers.
  const define = Object.fromEntries(NODE_GLOBALS.map((g) => [g, `${MARK}${g}`]));
  let check;
  try {
    check = await build({ ...COMMON, entryPoints: entries, outdir, write: false, define });
  } catch (err) {
    throw new WebBuildError(esbuildProblems(err));
  }
  const allowedUses = new Map(); // output name -> { Buffer: n, process: n } tolerated in the shipped scan
  for (const file of check.outputFiles) {
    if (!file.path.endsWith(".js")) continue;
    const uses = nodeGlobalUses(file.text);
    const counts = {};
    for (const u of uses) {
      if (ALLOWED.some(([prefix, g]) => u.module.startsWith(prefix) && u.global === g)) {
        counts[u.global] = (counts[u.global] ?? 0) + (u.member ? 1 : 0);
      } else {
        problems.push(`${u.module}: uses the Node global \`${u.global}\` (in ${relative(ROOT, file.path)})`);
      }
    }
    allowedUses.set(relative(outdir, file.path), counts);
  }
  if (problems.length) throw new WebBuildError([...new Set(problems)]);

  // Pass 2: the files that ship.
  mkdirSync(outdir, { recursive: true });
  let result;
  try {
    result = await build({
      ...COMMON,
      entryPoints: entries,
      outdir,
      minify: options.minify ?? true,
      sourcemap: "linked",
      metafile: true,
    });
  } catch (err) {
    throw new WebBuildError(esbuildProblems(err));
  }
  const outputs = [];
  for (const path of Object.keys(result.metafile.outputs)) {
    if (!path.endsWith(".js")) continue;
    const abs = resolve(ROOT, path);
    const text = readFileSync(abs, "utf8");
    problems.push(...scanShipped(text, relative(ROOT, abs), allowedUses.get(relative(outdir, abs)) ?? {}));
    outputs.push({
      file: abs,
      bytes: Buffer.byteLength(text),
      gzipBytes: gzipSync(text, { level: 9 }).length,
    });
  }
  if (problems.length) throw new WebBuildError(problems);
  return { outputs };
}

function esbuildProblems(err) {
  const errors = err?.errors ?? [];
  if (!errors.length) return [String(err?.message ?? err)];
  return errors.map((e) => {
    const at = e.location ? `${e.location.file}:${e.location.line}: ` : "";
    return `${at}${e.text}`;
  });
}

/**
 * Every marker left by pass 1: the global, whether it is used as `X.member`, and the module it sits in
 * (esbuild heads each module of an unminified bundle with a `// path` comment).
 */
export function nodeGlobalUses(text) {
  const uses = [];
  const heads = [...text.matchAll(/^\/\/ ((?:src|node_modules|\.\.)\/[^\n]+)$/gm)].map((m) => [
    m.index,
    m[1],
  ]);
  const re = new RegExp(`${MARK}(\\w+)(\\.)?`, "g");
  for (let m = re.exec(text); m; m = re.exec(text)) {
    let module = "?";
    for (const [at, name] of heads) {
      if (at > m.index) break;
      module = name;
    }
    uses.push({ global: m[1], member: m[2] === ".", module });
  }
  return uses;
}

/**
 * The last look at what ships: no Node import may survive, and `Buffer.` / `process.` may appear only
 * as often as the allowed dependency uses found in pass 1 (`allowed`: global -> count).
 */
export function scanShipped(text, name, allowed = {}) {
  const problems = [];
  const imports = [
    [/\brequire\(\s*["']node:/, 'require("node:…")'],
    [/\bfrom\s*["']node:/, 'import from "node:…"'],
    [/\bimport\(\s*["']node:/, 'import("node:…")'],
  ];
  for (const [re, what] of imports) if (re.test(text)) problems.push(`${name} contains ${what}`);
  for (const g of ["Buffer", "process"]) {
    const n = text.match(new RegExp(`(?<![\\w$.])${g}\\.`, "g"))?.length ?? 0;
    if (n > (allowed[g] ?? 0))
      problems.push(`${name} contains ${g}. (${n} times, ${allowed[g] ?? 0} allowed)`);
  }
  return problems;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const args = process.argv.slice(2);
  const i = args.indexOf("--outdir");
  try {
    const { outputs } = await buildWeb(i >= 0 ? { outdir: args[i + 1] } : {});
    for (const o of outputs) {
      const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
      console.log(`${relative(ROOT, o.file)}: ${kib(o.bytes)} (${kib(o.gzipBytes)} gzip)`);
    }
  } catch (err) {
    console.error(err instanceof WebBuildError ? err.message : err);
    process.exitCode = 1;
  }
}
