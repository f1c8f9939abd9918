import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isMtlsError } from "../errors.js";
import { formatDuration, parseDuration } from "./duration.js";

const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

describe("parseDuration", () => {
  for (const [text, ms] of [
    ["30d", 30 * D],
    ["1h30m", H + 30 * M],
    ["1y", 365 * D],
    ["90s", 90 * S],
    ["2w", 14 * D],
    ["12h", 12 * H],
    ["1d12h", D + 12 * H],
    ["1m1m", 2 * M], // repeated units add up
    ["007d", 7 * D],
    ["0d1h", H], // a zero part is fine when the total is positive
  ] as const) {
    test(`${text} → ${ms} ms`, () => assert.equal(parseDuration(text), ms));
  }

  for (const bad of [
    "",
    "30",
    "5x",
    "0d",
    "0s0m",
    "-1d",
    "+1d",
    "1.5d",
    "1 d",
    " 1d",
    "1d ",
    "d",
    "1D",
    "1h-30m",
    "30dd",
  ]) {
    test(`rejects ${JSON.stringify(bad)} with E_USAGE`, () => {
      assert.throws(
        () => parseDuration(bad),
        (err) => isMtlsError(err, "E_USAGE"),
      );
    });
  }

  test("the message names what was being parsed and gives examples", () => {
    assert.throws(
      () => parseDuration("soon", "--ttl"),
      (err) => isMtlsError(err, "E_USAGE") && /--ttl "soon"/.test(err.message) && /30d/.test(err.message),
    );
  });
});

describe("formatDuration", () => {
  for (const [ms, text] of [
    [30 * D, "30d"],
    [D + 12 * H, "1d12h"],
    [D + 30 * M, "1d"], // minutes are dropped once there are days
    [H + 30 * M, "1h30m"],
    [5 * H, "5h"],
    [45 * M, "45m"],
    [59 * S, "0m"],
    [0, "0m"],
    [-5 * M, "0m"],
  ] as const) {
    test(`${ms} ms → ${text}`, () => assert.equal(formatDuration(ms), text));
  }

  test("round trip for whole values", () => {
    for (const text of ["30d", "1d12h", "1h30m", "5h", "45m"])
      assert.equal(formatDuration(parseDuration(text)), text);
  });
});
