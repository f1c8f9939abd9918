import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ERROR_CODES, isMtlsError, MtlsError } from "./errors.js";

test("every error code is documented in docs/errors.md", () => {
  const doc = readFileSync(new URL("../docs/errors.md", import.meta.url), "utf8");
  for (const code of Object.keys(ERROR_CODES)) assert.match(doc, new RegExp(`\\| \`${code}\` \\|`), code);
});

test("MtlsError carries its code and cause", () => {
  const cause = new Error("inner");
  const err = new MtlsError("E_BAD_CSR", "bad", { cause });
  assert.equal(err.code, "E_BAD_CSR");
  assert.equal(err.cause, cause);
  assert.ok(isMtlsError(err, "E_BAD_CSR"));
  assert.ok(!isMtlsError(err, "E_REVOKED"));
  assert.ok(!isMtlsError(new Error("x")));
});
