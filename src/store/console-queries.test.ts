import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { escapeLike, walkIsCheaper } from "./console-queries.js";

describe("console queries (pure parts)", () => {
  it("escapeLike makes %, _ and \\ literal for LIKE ... ESCAPE '\\'", () => {
    assert.equal(escapeLike("50%_off\\now"), "50\\%\\_off\\\\now");
    assert.equal(escapeLike("alice"), "alice");
  });

  it("walkIsCheaper: a first page of a common view walks the sort index, a rare view or a deep page does not", () => {
    assert.equal(walkIsCheaper(50, 78_000, 100_000), true, "valid: 78% of the rows, first page");
    assert.equal(walkIsCheaper(50_050, 78_000, 100_000), false, "valid, page 1000");
    assert.equal(walkIsCheaper(50, 1_500, 100_000), false, "expiring within 7 days: 1.5%");
    assert.equal(walkIsCheaper(50, 0, 100_000), false, "nothing matches");
    assert.equal(walkIsCheaper(50, 10, 5), false, "a table smaller than its count (rows estimated low)");
  });
});
