import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MtlsError } from "../errors.js";
import { errorBody, RateLimitedError, statusFor, toHttpError } from "./errors.js";

describe("toHttpError", () => {
  it("maps codes to the statuses of docs/api.md", () => {
    const cases: [ConstructorParameters<typeof MtlsError>[0], number][] = [
      ["E_BAD_CSR", 400],
      ["E_BAD_SAN", 400],
      ["E_TTL", 400],
      ["E_NOT_AUTHENTICATED", 401],
      ["E_NOT_AUTHORIZED", 403],
      ["E_TOKEN_USED", 403],
      ["E_TOKEN_EXPIRED", 403],
      ["E_TOKEN_SCOPE", 403],
      ["E_REVOKED", 403],
      ["E_EXPIRED", 403],
      ["E_NOT_FOUND", 404],
      ["E_TOO_LARGE", 413],
      ["E_RATE_LIMITED", 429],
      ["E_PASSPHRASE", 503],
      ["E_STORE", 503],
    ];
    for (const [code, status] of cases) {
      assert.equal(statusFor(code), status, code);
      assert.equal(toHttpError(new MtlsError(code, "x")).status, status, code);
    }
  });

  it("reports E_USAGE (bad option values in the library) as E_BAD_INPUT", () => {
    assert.deepEqual(toHttpError(new MtlsError("E_USAGE", 'invalid "ttl" "3x"')), {
      status: 400,
      code: "E_BAD_INPUT",
      message: 'invalid "ttl" "3x"',
    });
  });

  it("never shows server-side details of a 5xx", () => {
    const e = toHttpError(new MtlsError("E_STORE", "SQLITE_BUSY at /var/lib/mtls/mtls.db"));
    assert.equal(e.status, 503);
    assert.doesNotMatch(e.message, /SQLITE|\/var/);
    const bug = toHttpError(new TypeError("cannot read properties of undefined"));
    assert.equal(bug.status, 500);
    assert.doesNotMatch(bug.message, /undefined/);
  });

  it("maps Fastify's client errors", () => {
    assert.equal(toHttpError({ code: "FST_ERR_CTP_BODY_TOO_LARGE", statusCode: 413 }).code, "E_TOO_LARGE");
    assert.equal(toHttpError({ code: "FST_ERR_CTP_INVALID_JSON_BODY", statusCode: 400 }).status, 400);
    assert.equal(toHttpError(new SyntaxError("Unexpected token")).code, "E_BAD_INPUT");
    assert.equal(toHttpError({ code: "FST_ERR_CTP_INVALID_MEDIA_TYPE", statusCode: 415 }).status, 415);
  });

  it("carries Retry-After for rate limits and keeps messages to one bounded line", () => {
    assert.equal(toHttpError(new RateLimitedError(3)).retryAfter, 3);
    const long = toHttpError(new MtlsError("E_BAD_INPUT", `a\nb ${"x".repeat(1000)}`));
    assert.ok(long.message.length <= 300);
    assert.doesNotMatch(long.message, /\n/);
    assert.deepEqual(errorBody(long).error.code, "E_BAD_INPUT");
  });
});
