import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import { createLogger, parseLogLevel } from "./logger.js";

function capture() {
  const lines: Record<string, unknown>[] = [];
  return { lines, destination: { write: (s: string) => void lines.push(JSON.parse(s)) } };
}

describe("logger", () => {
  it("writes one JSON object per line with an ISO time and a level name", () => {
    const c = capture();
    const log = createLogger({ name: "t", destination: c.destination });
    log.info({ a: 1 }, "hello");
    log.debug("hidden at info");
    assert.equal(c.lines.length, 1);
    const l = c.lines[0] as Record<string, unknown>;
    assert.equal(l.level, "info");
    assert.equal(l.name, "t");
    assert.equal(l.msg, "hello");
    assert.match(String(l.time), /^\d{4}-\d\d-\d\dT/);
  });

  it("redacts fields that would hold secrets", () => {
    const c = capture();
    const log = createLogger({ destination: c.destination });
    log.info({ passphrase: "t", key: "-----BEGIN PRIVATE KEY-----", tls: { privateKey: "x" } }, "oops");
    const text = JSON.stringify(c.lines);
    assert.ok(!text.includes("BEGIN PRIVATE KEY") && !text.includes('"t"') && !text.includes('"x"'), text);
  });

  it("refuses an unknown level", () => {
    assert.equal(parseLogLevel("DEBUG"), "debug");
    assert.throws(
      () => parseLogLevel("loud"),
      (e) => isMtlsError(e, "E_USAGE"),
    );
  });
});
