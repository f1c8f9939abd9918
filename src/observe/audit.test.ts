import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { connectionEvent } from "./audit.js";
import { createLogger } from "./logger.js";

function capture() {
  const lines: Record<string, unknown>[] = [];
  return { lines, destination: { write: (s: string) => void lines.push(JSON.parse(s)) } };
}

describe("audit", () => {
  it("writes one connection event with the identity, outcome, bytes and duration", () => {
    const c = capture();
    const log = createLogger({ destination: c.destination });
    connectionEvent(log, {
      tunnel: "vnc",
      peer: "192.0.2.1:5000",
      identity: {
        subject: "CN=alice",
        sans: ["uri:spiffe://acme.test/user/alice"],
        serial: "01",
        fingerprint: "ab",
      },
      allowed: false,
      reason: "not_allowed",
      bytesIn: 0,
      bytesOut: 0,
      durationMs: 3,
      startedAt: new Date("2030-01-01T00:00:00Z"),
    });
    const l = c.lines[0] as Record<string, unknown>;
    assert.equal(l.event, "connection");
    assert.equal(l.level, "warn");
    assert.equal(l.reason, "not_allowed");
    assert.equal(l.startedAt, "2030-01-01T00:00:00.000Z");
    assert.deepEqual((l.identity as { sans: string[] }).sans, ["uri:spiffe://acme.test/user/alice"]);
  });
});
