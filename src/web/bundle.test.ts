import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { buildWeb, scanShipped, WEB_ENTRIES, WebBuildError } from "../../scripts/build-web.mjs";

// The browser bundle of `mtls/web` as `npm run build` makes it (scripts/build-web.mjs), built into a
// temporary folder: it must be one self-contained ES module with no trace of Node.
const dir = mkdtempSync(join(tmpdir(), "mtls-web-bundle-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The public names `mtls/web` must offer (issue 9, docs/notes web contract). */
const PUBLIC_FUNCTIONS = [
  "createMtlsClient",
  "configureMtlsFetch",
  "mtlsFetch",
  "connectTls",
  "verifyServerChain",
  "verifySchemeSignature",
  "certificatesFromPem",
  "createHttpClient",
  "openRelay",
  "KeyStoreClient",
  "buildCsr",
  "enroll",
  "renew",
  "TlsAlertError",
  "CertificateError",
];

describe("mtls/web browser bundle", () => {
  it("is a self-contained ES module without node: imports, Buffer or process", async (t) => {
    const out = join(dir, "real");
    const { outputs } = await buildWeb({ outdir: out });
    // The folder is not inside a package, so tell Node these .js files are ES modules.
    writeFileSync(join(out, "package.json"), '{ "type": "module" }\n');
    const names = outputs.map((o) => o.file.slice(out.length + 1)).sort();
    assert.deepEqual(names, ["keystore-worker.js", "mtls-web.js"]);
    for (const o of outputs) {
      const text = readFileSync(o.file, "utf8");
      assert.doesNotMatch(text, /(?:\bfrom|\bimport\(|\brequire\()\s*["']node:/, "no node: import");
      assert.doesNotMatch(text, /(?<![\w$.])process\./, "no process");
      assert.match(text, /\/\/# sourceMappingURL=/);
      const name = o.file.slice(out.length + 1);
      t.diagnostic(
        `${name}: ${(o.bytes / 1024).toFixed(1)} KiB, ${(o.gzipBytes / 1024).toFixed(1)} KiB gzip`,
      );
    }
    const web = outputs.find((o) => o.file.endsWith("mtls-web.js"));
    const worker = outputs.find((o) => o.file.endsWith("keystore-worker.js"));
    assert.ok(web && worker);
    // Budgets (gzip): the TLS client, X.509 checks, HTTP and the ASN.1 libraries together.
    assert.ok(web.gzipBytes < 100 * 1024, `mtls-web.js is ${web.gzipBytes} bytes gzip`);
    assert.ok(worker.gzipBytes < 50 * 1024, `keystore-worker.js is ${worker.gzipBytes} bytes gzip`);

    // Loading it as a module proves it parses and links (the temporary folder has no node_modules, so a
    // bare import left in the bundle would fail here); its exports are the public API.
    const mod = (await import(pathToFileURL(web.file).href)) as Record<string, unknown>;
    for (const name of PUBLIC_FUNCTIONS) assert.equal(typeof mod[name], "function", `exports ${name}`);
    // The worker runs only inside a worker (it touches `self`), so only check that it parses as a module.
    const check = spawnSync(process.execPath, ["--check", worker.file], { encoding: "utf8" });
    assert.equal(check.status, 0, check.stderr);
  });

  it("is what package.json exports as mtls/web for browsers", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      exports: Record<string, Record<string, string>>;
      scripts: Record<string, string>;
    };
    assert.deepEqual(pkg.exports["./web"], {
      types: "./dist/web/index.d.ts",
      browser: "./dist/web/mtls-web.js",
      default: "./dist/web/index.js",
    });
    assert.match(pkg.scripts.build ?? "", /node scripts\/build-web\.mjs/);
    assert.deepEqual(
      WEB_ENTRIES.map((e) => e.out),
      ["mtls-web", "keystore-worker"],
    );
  });

  it("refuses a module that imports node:*", async () => {
    const entry = join(dir, "node-import.ts");
    writeFileSync(
      entry,
      'import { readFileSync } from "node:fs";\nexport const f = () => readFileSync("x");\n',
    );
    await assert.rejects(
      buildWeb({ outdir: join(dir, "bad1"), entries: [{ in: entry, out: "bad" }] }),
      (err: unknown) => err instanceof WebBuildError && /node:fs/.test(err.message),
    );
  });

  it("refuses a module that uses Buffer or process, naming the module", async () => {
    const entry = join(dir, "node-globals.ts");
    writeFileSync(
      entry,
      "export const b = (s: string) => Buffer.from(s);\nexport const e = () => process.env.HOME;\n",
    );
    await assert.rejects(
      buildWeb({ outdir: join(dir, "bad2"), entries: [{ in: entry, out: "bad" }] }),
      (err: unknown) =>
        err instanceof WebBuildError &&
        err.problems.some((p) => p.includes("node-globals.ts") && p.includes("`Buffer`")) &&
        err.problems.some((p) => p.includes("node-globals.ts") && p.includes("`process`")),
    );
    // A feature test is a use too: the browser code must not look for Node at all.
    writeFileSync(entry, 'export const isNode = typeof process !== "undefined";\n');
    await assert.rejects(
      buildWeb({ outdir: join(dir, "bad3"), entries: [{ in: entry, out: "bad" }] }),
      WebBuildError,
    );
  });

  it("scans shipped text for Node imports and globals", () => {
    assert.deepEqual(scanShipped('import{a}from"node:fs";', "x"), ['x contains import from "node:…"']);
    assert.deepEqual(scanShipped('var f=require("node:crypto")', "x"), ['x contains require("node:…")']);
    assert.equal(scanShipped("return Buffer.from(a)", "x").length, 1);
    assert.equal(scanShipped("return Buffer.from(a)", "x", { Buffer: 1 }).length, 0);
    assert.equal(scanShipped("ArrayBuffer.isView(a);x.process.y;SharedArrayBuffer.z", "x").length, 0);
    assert.equal(scanShipped("if(process.env.DEBUG)f()", "x").length, 1);
  });
});
