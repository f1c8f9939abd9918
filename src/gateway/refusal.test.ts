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

  it("access token refusals carry an RFC 6750 Bearer challenge", () => {
    const header = (r: Parameters<typeof refusalAnswer>[0]) =>
      renderRefusal(refusalAnswer(r), "application/json").headers["www-authenticate"];
    // §3.1: no token at all: a challenge without an error code.
    assert.equal(header("token_missing"), 'Bearer realm="mtls"');
    assert.equal(refusalAnswer("token_missing").code, "E_NO_ACCESS_TOKEN");
    assert.match(header("token_malformed") ?? "", /^Bearer realm="mtls", error="invalid_request", /);
    assert.equal(refusalAnswer("token_malformed").status, 400);
    assert.match(header("token_invalid") ?? "", /^Bearer realm="mtls", error="invalid_token", /);
    assert.equal(refusalAnswer("token_invalid").code, "E_BAD_ACCESS_TOKEN");
    assert.match(
      header("token_binding") ?? "",
      /error="invalid_token", error_description="[^"]*bound to another client certificate"$/,
    );
    assert.deepEqual(
      [refusalAnswer("token_binding").status, refusalAnswer("token_binding").code],
      [401, "E_ACCESS_TOKEN_BINDING"],
    );
    assert.equal(refusalAnswer("jwks_unavailable").status, 503);
    assert.equal(header("jwks_unavailable"), undefined);
    assert.equal(header("no_certificate"), undefined);
    // The HTML page for a browser carries the challenge too.
    assert.equal(
      renderRefusal(refusalAnswer("token_binding"), "text/html").headers["www-authenticate"],
      header("token_binding"),
    );
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

  it("says what to do next for each kind of refusal, and shows the certificate's expiry readably", () => {
    const identity = {
      subject: "O=Acme, CN=alice",
      serial: "0a1b",
      notAfter: new Date("2026-12-27T05:32:15.000Z"),
    } as unknown as PeerIdentity;
    const revoked = refusalHtml(refusalAnswer("revoked"), { identity, enrollUrl: "https://ca.test/enroll" });
    assert.match(revoked, /<dt>Valid until<\/dt><dd>2026-12-27 05:32 UTC<\/dd>/);
    assert.match(
      revoked,
      /<li><a class="button" href="https:\/\/ca\.test\/enroll">Get a certificate<\/a><\/li>/,
    );
    assert.match(
      refusalHtml(refusalAnswer("no_certificate")),
      /Ask your administrator for a client certificate/,
    );
    assert.match(
      refusalHtml(refusalAnswer("not_allowed"), { identity }),
      /ask the administrator of this service/,
    );
    const down = refusalHtml(refusalAnswer("upstream_unreachable"));
    assert.match(down, /<main class="unavailable">/);
    assert.match(down, /Try again in a moment/);
    assert.match(refusalHtml(refusalAnswer("no_route")), /Request refused[\s\S]*Check the address/);
  });
});
