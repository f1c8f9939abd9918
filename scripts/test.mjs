#!/usr/bin/env node
// Runs every node:test file: unit tests beside the modules (src/**/*.test.ts) and end-to-end tests
// (test/e2e/*.test.ts). Node 20 does not expand globs for --test, so the files are listed here.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";

function find(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return e.name === "node_modules" ? [] : find(p);
    return e.name.endsWith(".test.ts") ? [p] : [];
  });
}

const only = process.argv.slice(2);
const files = only.length ? only : [...find("src"), ...find("test")].sort();
const res = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-timeout=300000", ...files], {
  stdio: "inherit",
});
process.exit(res.status ?? 1);
