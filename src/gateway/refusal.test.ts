import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { PeerIdentity } from "../policy/index.js";
import { escapeHtml, refusalAnswer, refusalHtml, refusalJson, renderRefusal, wantsHtml } from "./refusal.js";

describe("refusals", () => {
  it("maps reasons to a status and a stable code", () => {
    assert.deepEqual(
      (["no_certificate", "expired", "revoked", "unknown_ca", "bad_purpose", "not_allowed"] as const).map(
        (r) => [refusalAnswer(r).status, refusalAnswer(r).code],
      ),
      [
        [401, "E_NOT_AUTHENTICATED"],
        [401, "E_EXPIRED"],
        [401, "E_REVOKED"],
        [401, "E_UNTRUSTED"],
        [401, "E_PURPOSE"],
        [403, "E_NOT_AUTHORIZED"],
      ],
    );
    assert.equal(refusalAnswer("too_large").status, 413);
    assert.equal(refusalAnswer("upstream_timeout").status, 504);
  });

  it("negotiates HTML for browsers and JSON for the rest", () => {
    assert.ok(wantsHtml("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"));
    assert.ok(!wantsHtml("application/json"));
    assert.ok(!wantsHtml("*/*"));
    assert.ok(!wantsHtml(undefined));
    assert.ok(!wantsHtml("text/html;q=0.5, application/json"));
    const r = renderRefusal(refusalAnswer("no_certificate"), "application/json");
    assert.equal(r.headers["content-type"], "application/json");
    assert.deepEqual(JSON.parse(r.body), JSON.parse(refusalJson(refusalAnswer("no_certificate"))));
  });

  it("escapes everything it shows on the page and links to enrollment", () => {
    assert.equal(escapeHtml(`<a href="x">'&'</a>`), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    const identity = {
      subject: "CN=<script>alert(1)</script>",
      serial: "01",
      notAfter: new Date(0),
    } as unknown as PeerIdentity;
    const html = refusalHtml(refusalAnswer("revoked"), {
      identity,
      enrollUrl: 'https://ca.test/enroll?a=1&b="2"',
      path: "/<x>",
    });
    assert.doesNotMatch(html, /<script>/);
    assert.match(html, /CN=&lt;script&gt;/);
    assert.match(html, /href="https:\/\/ca\.test\/enroll\?a=1&amp;b=&quot;2&quot;"/);
    assert.match(html, /Your certificate has been revoked/);
    assert.doesNotMatch(
      refusalHtml(refusalAnswer("not_allowed"), { enrollUrl: "https://ca.test" }),
      /Get a certificate/,
    );
  });
});
