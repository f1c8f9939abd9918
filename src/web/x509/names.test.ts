import assert from "node:assert/strict";
import { test } from "node:test";
import { dnsNameMatches, dnsWithinSubtree, parseServerName } from "./names.js";

test("parseServerName: IPv4 dotted quads, IPv6 text forms, DNS names, and neither", () => {
  assert.deepEqual(parseServerName("192.0.2.1"), { kind: "ip", bytes: new Uint8Array([192, 0, 2, 1]) });
  const v6 = (s: string) => {
    const r = parseServerName(s);
    return r.kind === "ip" ? Buffer.from(r.bytes).toString("hex") : r.kind;
  };
  assert.equal(v6("::1"), "00000000000000000000000000000001");
  assert.equal(v6("[2001:db8::8:800:200c:417a]"), "20010db8000000000008080020 0c417a".replace(" ", ""));
  assert.equal(v6("2001:DB8:0:0:8:800:200C:417A"), "20010db8000000000008080020 0c417a".replace(" ", ""));
  assert.equal(v6("::ffff:192.0.2.1"), "00000000000000000000ffffc0000201");
  assert.equal(v6("::"), "0".repeat(32));
  for (const bad of [
    "1::2::3",
    "1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7:8:9",
    "12345::",
    "fe80::1%eth0",
    "1:2:3:4:5:6:7::8",
    "::1.2.3",
  ]) {
    assert.equal(parseServerName(bad).kind, "invalid", bad);
  }
  assert.deepEqual(parseServerName("API.Example.com."), { kind: "dns", name: "api.example.com" });
  for (const bad of [
    "",
    "a..b",
    "*.example.com",
    "exa mple.com",
    "bücher.de",
    "127.1",
    "1.2.3.256",
    "01.2.3.4",
    "a.123",
    `${"a".repeat(64)}.com`,
  ]) {
    assert.equal(parseServerName(bad).kind, "invalid", bad);
  }
  assert.equal(parseServerName("1a.example.com").kind, "dns");
});

test("dnsNameMatches: exact, case-insensitive, wildcard only as the whole left-most label", () => {
  assert.equal(dnsNameMatches("API.example.com", "api.example.com"), true);
  assert.equal(dnsNameMatches("api.example.com.", "api.example.com"), true);
  assert.equal(dnsNameMatches("*.example.com", "a.example.com"), true);
  assert.equal(dnsNameMatches("*.Example.COM", "a.example.com"), true);
  for (const [pattern, host] of [
    ["*.example.com", "a.b.example.com"],
    ["*.example.com", "example.com"],
    ["f*.example.com", "foo.example.com"],
    ["*oo.example.com", "foo.example.com"],
    ["a.*.example.com", "a.b.example.com"],
    ["*.*.example.com", "a.b.example.com"],
    ["*.com", "example.com"],
    ["*", "localhost"],
    ["api.example.com", "api.example.co"],
    ["a..example.com", "a..example.com"],
  ] as const) {
    assert.equal(dnsNameMatches(pattern, host), false, `${pattern} vs ${host}`);
  }
});

test("dnsWithinSubtree: name constraint bases", () => {
  assert.equal(dnsWithinSubtree("example.com", "example.com"), true);
  assert.equal(dnsWithinSubtree("a.example.com", "example.com"), true);
  assert.equal(dnsWithinSubtree("badexample.com", "example.com"), false);
  assert.equal(dnsWithinSubtree("example.com", ".example.com"), false);
  assert.equal(dnsWithinSubtree("a.example.com", ".example.com"), true);
  assert.equal(dnsWithinSubtree("anything.org", ""), true);
});
