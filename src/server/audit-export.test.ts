import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import { openSqliteStore } from "../store/index.js";
import { auditEvents, csvCell, csvHeader, formatAuditEvent, parseAuditFormat } from "./audit-export.js";

describe("audit export", () => {
  it("quotes CSV cells and defuses spreadsheet formulas", () => {
    assert.equal(csvCell("plain"), "plain");
    assert.equal(csvCell('a,"b"'), '"a,""b"""');
    assert.equal(csvCell("line\nbreak"), '"line\nbreak"');
    assert.equal(csvCell("=HYPERLINK(1)"), `"'=HYPERLINK(1)"`);
    assert.equal(csvCell("+1"), `"'+1"`);
    assert.equal(csvCell("@x"), `"'@x"`);
  });

  it("formats events as JSON lines or CSV rows, and pages through the whole log", async () => {
    const store = await openSqliteStore(":memory:");
    try {
      for (let i = 0; i < 25; i++) {
        await store.appendAudit({
          at: new Date(Date.UTC(2030, 0, 1, 0, 0, i)),
          actor: "api:0a",
          action: "test",
          subject: i % 2 ? `s${i}` : null,
          details: { i, note: "a,b" },
        });
      }
      const all = [];
      for await (const e of auditEvents(store, { pageSize: 7 })) all.push(e);
      assert.deepEqual(
        all.map((e) => e.seq),
        Array.from({ length: 25 }, (_, i) => i + 1),
      );
      const some = [];
      for await (const e of auditEvents(store, { afterSeq: 20, limit: 3, pageSize: 2 })) some.push(e.seq);
      assert.deepEqual(some, [21, 22, 23]);
      const first = all[0];
      assert.ok(first);
      const line = JSON.parse(formatAuditEvent(first, "jsonl"));
      assert.equal(line.seq, 1);
      assert.equal(line.at, "2030-01-01T00:00:00.000Z");
      assert.deepEqual(line.details, { i: 0, note: "a,b" });
      assert.equal(csvHeader(), "seq,at,actor,action,subject,details,prevHash,hash\r\n");
      const row = formatAuditEvent(first, "csv");
      assert.match(
        row,
        /^1,2030-01-01T00:00:00\.000Z,api:0a,test,,"\{""i"":0,""note"":""a,b""\}",0{64},[0-9a-f]{64}\r\n$/,
      );
    } finally {
      await store.close();
    }
  });

  it("parses formats", () => {
    assert.equal(parseAuditFormat(undefined), "jsonl");
    assert.equal(parseAuditFormat("CSV"), "csv");
    assert.equal(parseAuditFormat("ndjson"), "jsonl");
    assert.throws(
      () => parseAuditFormat("xml"),
      (e) => isMtlsError(e, "E_USAGE"),
    );
  });
});
