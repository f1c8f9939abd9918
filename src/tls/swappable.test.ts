import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { describe, test } from "node:test";
import { SwappableRevocation } from "./swappable.js";
import type { RevocationChecker } from "./types.js";

const checker = (needsIssuer?: boolean): RevocationChecker =>
  Object.assign(new EventEmitter(), {
    check: async () => ({ status: "good" as const, source: "test" }),
    close() {},
    ...(needsIssuer === undefined ? {} : { needsIssuer: () => needsIssuer }),
  });

describe("SwappableRevocation.needsIssuer", () => {
  test("no checker in force: no issuer needed; a checker in force: as it says, else yes", () => {
    const r = new SwappableRevocation();
    assert.equal(r.needsIssuer(), false);
    r.swap(checker());
    assert.equal(r.needsIssuer(), true);
    r.swap(checker(false));
    assert.equal(r.needsIssuer(), false);
    r.swap(undefined);
    assert.equal(r.needsIssuer(), false);
  });

  test("seen through a prototype wrapper (as the tunnel's IssuerBook wraps it), it follows swaps", () => {
    const r = new SwappableRevocation();
    const wrapped = Object.create(r) as RevocationChecker;
    assert.equal(wrapped.needsIssuer?.(), false);
    r.swap(checker());
    assert.equal(wrapped.needsIssuer?.(), true);
  });
});
