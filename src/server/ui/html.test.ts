import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { escapeHtml, Html, html, joinHtml, queryString, raw } from "./html.js";

describe("html`...`", () => {
  it("escapes every interpolated string: a CN of <script> renders as text", () => {
    const cn = "<script>alert(1)</script>";
    assert.equal(html`<td>${cn}</td>`.text, "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>");
  });

  it("escapes quotes so a value cannot leave its attribute", () => {
    const v = `x" onmouseover="alert(1)' \`y`;
    const out = html`<input value="${v}">`.text;
    assert.equal(out, '<input value="x&quot; onmouseover=&quot;alert(1)&#39; &#96;y">');
    assert.doesNotMatch(out, /" onmouseover/);
  });

  it("escapes & first, so entities in input are shown, not decoded", () => {
    assert.equal(escapeHtml("&lt;b&gt;"), "&amp;lt;b&amp;gt;");
  });

  it("keeps nested html as markup and escapes only the values inside it", () => {
    const name = "<b>bob</b>";
    const row = html`<tr>${html`<td>${name}</td>`}</tr>`;
    assert.equal(row.text, "<tr><td>&lt;b&gt;bob&lt;/b&gt;</td></tr>");
  });

  it("renders arrays item by item and skips null, undefined and false", () => {
    const items = ["<a>", html`<i>ok</i>`, null, undefined, false, 0];
    assert.equal(html`${items}`.text, "&lt;a&gt;<i>ok</i>0");
    assert.equal(html`[${false && html`<b>no</b>`}]`.text, "[]");
  });

  it("stringifies numbers and dates, escaping the result", () => {
    assert.equal(html`${42}|${{ toString: () => "<x>" }}`.text, "42|&lt;x&gt;");
  });

  it("raw() marks our own markup; a plain string never becomes markup", () => {
    assert.equal(html`${raw("<br>")}`.text, "<br>");
    assert.ok(raw("x") instanceof Html);
    assert.equal(html`${"<br>"}`.text, "&lt;br&gt;");
  });

  it("joinHtml escapes items and the separator unless they are Html", () => {
    assert.equal(joinHtml(["<a>", html`<b>`], "<,>").text, "&lt;a&gt;&lt;,&gt;<b>");
    assert.equal(joinHtml(["a", "b"], html`<br>`).text, "a<br>b");
  });

  it("queryString skips empty values and percent-encodes the rest", () => {
    assert.equal(queryString({ q: "a b&c", view: "", page: 2, x: undefined, y: null }), "?q=a+b%26c&page=2");
    assert.equal(queryString({ q: "" }), "");
  });
});
