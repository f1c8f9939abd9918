import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { OneTimeDownloads } from "./downloads.js";
import { generateP12Password } from "./p12.js";
import { CsrfTokens } from "./security.js";

describe("CSRF tokens", () => {
  it("verify only for the binding they were made for, and only under the same key", () => {
    const csrf = new CsrfTokens();
    const t = csrf.token("admin:aa");
    assert.ok(csrf.verify("admin:aa", t));
    assert.ok(!csrf.verify("admin:bb", t));
    assert.ok(!csrf.verify("admin:aa", `${t}x`));
    assert.ok(!csrf.verify("admin:aa", ""));
    assert.ok(!csrf.verify("admin:aa", undefined));
    assert.ok(!new CsrfTokens().verify("admin:aa", t), "another process (key) refuses it");
  });
});

describe("one-time downloads", () => {
  it("hand a file out once, under a random id", () => {
    const d = new OneTimeDownloads();
    const id = d.put({
      filename: "a.p12",
      contentType: "application/x-pkcs12",
      data: new Uint8Array([1, 2]),
    });
    assert.match(id, /^[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(d.take(id)?.data, new Uint8Array([1, 2]));
    assert.equal(d.take(id), undefined);
    d.close();
  });

  it("forget a file after its time", () => {
    let now = 1_000_000;
    const d = new OneTimeDownloads(() => new Date(now), 10 * 60_000);
    const id = d.put({ filename: "a.p12", contentType: "x", data: new Uint8Array([1]) });
    now += 10 * 60_000;
    assert.equal(d.take(id), undefined);
    const id2 = d.put({ filename: "b.p12", contentType: "x", data: new Uint8Array([2]) });
    now += 10 * 60_000 - 1;
    assert.ok(d.take(id2));
    d.close();
  });
});

describe("generated .p12 passwords", () => {
  it("are five groups of four unambiguous characters, different each time", () => {
    const a = generateP12Password();
    assert.match(a, /^[a-km-zA-HJ-NP-Z2-9]{4}(-[a-km-zA-HJ-NP-Z2-9]{4}){4}$/);
    assert.doesNotMatch(a, /[01lIoO]/);
    assert.notEqual(a, generateP12Password());
  });
});

describe("paths in the log", () => {
  it("lose the secret of an enrollment link and the download id, keep the token id", async () => {
    const { redactPath } = await import("./redact.js");
    assert.equal(
      redactPath(`/enroll/mtls_0123456789abcdef.${"S".repeat(43)}`),
      "/enroll/mtls_0123456789abcdef.[redacted]",
    );
    assert.equal(redactPath("/enroll/whatever-was-pasted"), "/enroll/[redacted]");
    assert.equal(redactPath(`/enroll/download/${"d".repeat(43)}`), "/enroll/download/[redacted]");
    assert.equal(redactPath("/admin/certificates/ab12"), "/admin/certificates/ab12");
  });
});
