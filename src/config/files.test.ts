import assert from "node:assert/strict";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import { isMtlsError } from "../errors.js";
import { commitFile, ioError, readFileOrThrow, stageFile, tempPathFor, writeFileAtomic } from "./files.js";

const root = mkdtempSync(join(tmpdir(), "mtls-files-"));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
/** A fresh empty folder per test, so "no temp file left" can be checked by listing it. */
const freshDir = () => {
  const d = join(root, `t${++n}`);
  mkdirSync(d);
  return d;
};
const modeOf = (p: string) => statSync(p).mode & 0o777;

/** Runs fn with a known umask so mode checks do not depend on the environment. */
function withUmask<T>(mask: number, fn: () => T): T {
  const previous = process.umask(mask);
  try {
    return fn();
  } finally {
    process.umask(previous);
  }
}

describe("writeFileAtomic", () => {
  test("creates the file with the requested mode (0600 for keys)", () => {
    const dir = freshDir();
    const target = join(dir, "a.key");
    withUmask(0o022, () => writeFileAtomic(target, "secret", { mode: 0o600 }));
    assert.equal(readFileSync(target, "utf8"), "secret");
    assert.equal(modeOf(target), 0o600);
    assert.deepEqual(readdirSync(dir), ["a.key"]);
  });

  test("defaults to 0644 and accepts bytes", () => {
    const dir = freshDir();
    const target = join(dir, "a.der");
    withUmask(0o022, () => writeFileAtomic(target, new Uint8Array([1, 2, 3])));
    assert.deepEqual([...readFileSync(target)], [1, 2, 3]);
    assert.equal(modeOf(target), 0o644);
  });

  test("a 0600 file is never group/world readable, even with umask 0", () => {
    const dir = freshDir();
    const target = join(dir, "k");
    withUmask(0, () => writeFileAtomic(target, "x", { mode: 0o600 }));
    assert.equal(modeOf(target), 0o600);
  });

  test("refuses to overwrite without `overwrite` (E_EXISTS), keeps the old content and leaves no temp file", () => {
    const dir = freshDir();
    const target = join(dir, "a.crt");
    writeFileAtomic(target, "old");
    assert.throws(
      () => writeFileAtomic(target, "new"),
      (err) => isMtlsError(err, "E_EXISTS") && err.message.includes(target),
    );
    assert.equal(readFileSync(target, "utf8"), "old");
    assert.deepEqual(readdirSync(dir), ["a.crt"]);
  });

  test("refuses a dangling symlink as target too", () => {
    const dir = freshDir();
    const target = join(dir, "link");
    symlinkSync(join(dir, "nowhere"), target);
    assert.throws(
      () => writeFileAtomic(target, "x"),
      (err) => isMtlsError(err, "E_EXISTS"),
    );
    assert.deepEqual(readdirSync(dir), ["link"]);
  });

  test("overwrites with `overwrite`, taking the new mode", () => {
    const dir = freshDir();
    const target = join(dir, "a.key");
    withUmask(0o022, () => {
      writeFileAtomic(target, "old", { mode: 0o644 });
      writeFileAtomic(target, "new", { mode: 0o600, overwrite: true });
    });
    assert.equal(readFileSync(target, "utf8"), "new");
    assert.equal(modeOf(target), 0o600);
    assert.deepEqual(readdirSync(dir), ["a.key"]);
  });

  test("a missing folder → E_IO, nothing created", () => {
    const dir = freshDir();
    assert.throws(
      () => writeFileAtomic(join(dir, "no", "such", "file"), "x"),
      (err) => isMtlsError(err, "E_IO"),
    );
    assert.deepEqual(readdirSync(dir), []);
  });

  test("large content is written completely", () => {
    const dir = freshDir();
    const target = join(dir, "big");
    const data = new Uint8Array(5 * 1024 * 1024).map((_, i) => i & 0xff);
    writeFileAtomic(target, data);
    assert.deepEqual(new Uint8Array(readFileSync(target)), data);
  });
});

describe("stageFile + commitFile", () => {
  test("the staged file is a hidden temp beside the target with the final mode; commit publishes it", () => {
    const dir = freshDir();
    const target = join(dir, "a.key");
    const tmp = withUmask(0o022, () => stageFile(target, "k", 0o600));
    assert.equal(dirname(tmp), dir);
    assert.match(basename(tmp), /^\.a\.key\.[0-9a-f]{12}\.tmp$/);
    assert.equal(modeOf(tmp), 0o600);
    assert.equal(readFileSync(tmp, "utf8"), "k");
    assert.deepEqual(readdirSync(dir), [basename(tmp)]); // the target does not exist yet
    commitFile(tmp, target);
    assert.deepEqual(readdirSync(dir), ["a.key"]);
    assert.equal(readFileSync(target, "utf8"), "k");
    assert.equal(modeOf(target), 0o600);
  });

  test("commit onto an existing target without overwrite → E_EXISTS, temp removed, target untouched", () => {
    const dir = freshDir();
    const target = join(dir, "a.crt");
    writeFileSync(target, "old");
    const tmp = stageFile(target, "new");
    assert.throws(
      () => commitFile(tmp, target),
      (err) => isMtlsError(err, "E_EXISTS"),
    );
    assert.deepEqual(readdirSync(dir), ["a.crt"]);
    assert.equal(readFileSync(target, "utf8"), "old");
  });

  test("commit with overwrite replaces the target", () => {
    const dir = freshDir();
    const target = join(dir, "a.crt");
    writeFileSync(target, "old");
    commitFile(stageFile(target, "new"), target, true);
    assert.equal(readFileSync(target, "utf8"), "new");
    assert.deepEqual(readdirSync(dir), ["a.crt"]);
  });

  test("committing a temp that vanished → E_IO", () => {
    const dir = freshDir();
    assert.throws(
      () => commitFile(join(dir, ".gone.tmp"), join(dir, "x")),
      (err) => isMtlsError(err, "E_IO"),
    );
    assert.throws(
      () => commitFile(join(dir, ".gone.tmp"), join(dir, "x"), true),
      (err) => isMtlsError(err, "E_IO"),
    );
  });

  test("two stages of the same target do not collide", () => {
    const dir = freshDir();
    const target = join(dir, "a");
    const a = stageFile(target, "1");
    const b = stageFile(target, "2");
    assert.notEqual(a, b);
    commitFile(a, target);
    assert.throws(
      () => commitFile(b, target),
      (err) => isMtlsError(err, "E_EXISTS"),
    );
    assert.equal(readFileSync(target, "utf8"), "1");
    assert.deepEqual(readdirSync(dir), ["a"]);
  });

  test("tempPathFor stays in the target's folder", () => {
    assert.equal(dirname(tempPathFor("/x/y/z.pem")), "/x/y");
    assert.notEqual(tempPathFor("/x/z"), tempPathFor("/x/z"));
  });
});

describe("readFileOrThrow", () => {
  test("reads a file", () => {
    const dir = freshDir();
    writeFileSync(join(dir, "f"), "hello");
    assert.equal(readFileOrThrow(join(dir, "f")).toString(), "hello");
  });

  test("missing → E_NOT_FOUND naming what was looked for", () => {
    const dir = freshDir();
    assert.throws(
      () => readFileOrThrow(join(dir, "nope"), "root certificate"),
      (err) => isMtlsError(err, "E_NOT_FOUND") && /root certificate not found/.test(err.message),
    );
  });

  test("a directory → E_BAD_INPUT", () => {
    const dir = freshDir();
    assert.throws(
      () => readFileOrThrow(dir, "CSR"),
      (err) => isMtlsError(err, "E_BAD_INPUT") && /directory/.test(err.message),
    );
  });

  test("a path through a file → E_IO (ENOTDIR)", () => {
    const dir = freshDir();
    writeFileSync(join(dir, "f"), "x");
    assert.throws(
      () => readFileOrThrow(join(dir, "f", "g")),
      (err) => isMtlsError(err, "E_IO") && /ENOTDIR/.test(err.message),
    );
  });
});

test("ioError keeps the cause and the errno code", () => {
  const cause = Object.assign(new Error("boom"), { code: "EACCES" });
  const err = ioError("cannot write /x", cause);
  assert.equal(err.code, "E_IO");
  assert.equal(err.message, "cannot write /x: EACCES");
  assert.equal(err.cause, cause);
  assert.equal(ioError("m", new Error("plain")).message, "m: plain");
});
