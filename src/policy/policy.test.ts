import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import { isMtlsError } from "../errors.js";
import { rulesFromFlags } from "./flags.js";
import { compilePolicy, describeIdentity, normalizeFingerprint, normalizeSpkiPin } from "./policy.js";
import type { PeerIdentity, RuleSpec } from "./types.js";

const FP = "ab".repeat(32);
const SPKI_BYTES = createHash("sha256").update("alice's key").digest();
const SPKI_B64 = SPKI_BYTES.toString("base64");

function identity(over: Partial<PeerIdentity> = {}): PeerIdentity {
  return {
    subject: "CN=alice, OU=ops, O=Acme",
    commonName: "alice",
    organizationalUnits: ["ops"],
    organization: "Acme",
    dnsNames: [],
    uris: ["spiffe://acme.test/user/alice"],
    emails: ["alice@acme.test"],
    ips: [],
    fingerprint: FP,
    spkiSha256: SPKI_B64,
    serial: "01",
    issuer: "CN=Acme Intermediate CA, O=Acme",
    notBefore: new Date(0),
    notAfter: new Date(2 ** 40),
    der: new Uint8Array(),
    ...over,
  };
}

const allows = (rules: RuleSpec[], id: PeerIdentity = identity(), method?: string) =>
  compilePolicy(rules).authorize(id, method === undefined ? undefined : { method }).allowed;

const uriAllows = (pattern: string, uri: string) => allows([{ uri: [pattern] }], identity({ uris: [uri] }));

function throwsUsage(rules: unknown, pattern: RegExp) {
  assert.throws(
    () => compilePolicy(rules as RuleSpec[]),
    (err: unknown) => isMtlsError(err, "E_USAGE") && pattern.test(err.message),
  );
}

describe("deny by default", () => {
  test("an empty policy denies everyone and says so", () => {
    const d = compilePolicy([]).authorize(identity());
    assert.equal(d.allowed, false);
    assert.equal(d.rule, undefined);
    assert.match(d.reason, /^no rule allows CN=alice, URI spiffe:\/\/acme.test\/user\/alice/);
    assert.match(d.reason, /deny by default/);
  });
  test("a non-matching rule denies with the identity in the reason", () => {
    const d = compilePolicy([{ cn: ["bob"] }]).authorize(identity({ commonName: "carol", uris: [] }));
    assert.deepEqual(d, { allowed: false, reason: "no rule allows CN=carol, email alice@acme.test" });
  });
});

describe("each kind", () => {
  test("all allows any verified certificate", () => {
    const d = compilePolicy([{ all: true }]).authorize(identity());
    assert.deepEqual(d, { allowed: true, rule: "all", reason: "allowed by all" });
  });
  test("all: false is no condition", () => {
    throwsUsage([{ all: false }], /empty/);
    assert.equal(allows([{ all: false, cn: ["alice"] }]), true);
  });
  test("cn: exact and case-sensitive", () => {
    assert.equal(allows([{ cn: ["alice"] }]), true);
    assert.equal(allows([{ cn: ["Alice"] }]), false);
    assert.equal(allows([{ cn: ["alic"] }]), false);
    assert.equal(allows([{ cn: ["alice"] }], identity({ commonName: undefined })), false);
  });
  test("ou: any of the identity's OUs, exact", () => {
    const id = identity({ organizationalUnits: ["dev", "ops"] });
    assert.equal(allows([{ ou: ["ops"] }], id), true);
    assert.equal(allows([{ ou: ["OPS"] }], id), false);
    assert.equal(allows([{ ou: ["sec"] }], id), false);
  });
  test("email: case-insensitive", () => {
    assert.equal(allows([{ email: ["Alice@ACME.test"] }]), true);
    assert.equal(allows([{ email: ["bob@acme.test"] }]), false);
  });
  test("dns: exact (case-insensitive, trailing dot ignored)", () => {
    const id = identity({ dnsNames: ["web.acme.test"] });
    assert.equal(allows([{ dns: ["web.acme.test"] }], id), true);
    assert.equal(allows([{ dns: ["WEB.Acme.Test."] }], id), true);
    assert.equal(allows([{ dns: ["acme.test"] }], id), false);
    assert.equal(allows([{ dns: ["eb.acme.test"] }], id), false);
  });
  test("dns: *.acme.test matches exactly one label", () => {
    const pattern = [{ dns: ["*.acme.test"] }];
    assert.equal(allows(pattern, identity({ dnsNames: ["web.acme.test"] })), true);
    assert.equal(allows(pattern, identity({ dnsNames: ["WEB.acme.TEST"] })), true);
    assert.equal(allows(pattern, identity({ dnsNames: ["a.b.acme.test"] })), false);
    assert.equal(allows(pattern, identity({ dnsNames: ["acme.test"] })), false);
    assert.equal(allows(pattern, identity({ dnsNames: ["webacme.test"] })), false);
    assert.equal(allows(pattern, identity({ dnsNames: ["*.acme.test"] })), false);
    assert.equal(allows(pattern, identity({ dnsNames: ["x.evil.test", "db.acme.test"] })), true);
  });
  test("fingerprint: colons and any case", () => {
    const colons = (FP.toUpperCase().match(/../g) as string[]).join(":");
    assert.equal(allows([{ fingerprint: [colons] }]), true);
    assert.equal(allows([{ fingerprint: [FP] }]), true);
    assert.equal(allows([{ fingerprint: ["cd".repeat(32)] }]), false);
  });
  test("spki: base64, base64url, unpadded, hex, curl's sha256// form", () => {
    for (const pin of [
      SPKI_B64,
      SPKI_B64.replace(/=$/, ""),
      SPKI_BYTES.toString("base64url"),
      SPKI_BYTES.toString("hex"),
      SPKI_BYTES.toString("hex").toUpperCase(),
      `sha256//${SPKI_B64}`,
    ]) {
      assert.equal(allows([{ spki: [pin] }]), true, pin);
    }
    assert.equal(allows([{ spki: [createHash("sha256").update("x").digest("base64")] }]), false);
  });
});

describe("uri patterns", () => {
  test("exact", () => {
    assert.equal(uriAllows("spiffe://acme.test/user/alice", "spiffe://acme.test/user/alice"), true);
    assert.equal(uriAllows("spiffe://acme.test/user/alice", "spiffe://acme.test/user/alice/x"), false);
    assert.equal(uriAllows("spiffe://acme.test/user/alice", "spiffe://acme.test/user/alicex"), false);
    assert.equal(uriAllows("spiffe://acme.test/user/alice", "spiffe://acme.test/user/Alice"), false);
    assert.equal(uriAllows("spiffe://acme.test/user/alice", "spiffe://acme.test/user/alice/"), false);
  });
  test("scheme and authority compare case-insensitively, the path exactly", () => {
    assert.equal(uriAllows("spiffe://ACME.test/user/alice", "SPIFFE://acme.TEST/user/alice"), true);
    assert.equal(uriAllows("spiffe://acme.test/user/*", "spiffe://Acme.Test/user/bob"), true);
    assert.equal(uriAllows("spiffe://acme.test/user/*", "spiffe://acme.test/USER/bob"), false);
    assert.equal(uriAllows("spiffe://acme.test/user/*", "spiffe://acme.test.evil/user/bob"), false);
    assert.equal(uriAllows("spiffe://acme.test/user/*", "https://acme.test/user/bob"), false);
  });
  test("* matches exactly one non-empty segment", () => {
    const p = "spiffe://acme.test/user/*";
    assert.equal(uriAllows(p, "spiffe://acme.test/user/alice"), true);
    assert.equal(uriAllows(p, "spiffe://acme.test/user/alice/x"), false);
    assert.equal(uriAllows(p, "spiffe://acme.test/user"), false);
    assert.equal(uriAllows(p, "spiffe://acme.test/user/"), false);
    assert.equal(uriAllows(p, "spiffe://acme.test/user/.."), false);
    assert.equal(uriAllows(p, "spiffe://acme.test/service/alice"), false);
    assert.equal(uriAllows("spiffe://acme.test/*/alice", "spiffe://acme.test/user/alice"), true);
    assert.equal(uriAllows("spiffe://acme.test/*/alice", "spiffe://acme.test/user/bob"), false);
    assert.equal(uriAllows("spiffe://acme.test/*/*", "spiffe://acme.test/a/b"), true);
  });
  test("trailing /** matches one or more segments", () => {
    const p = "spiffe://acme.test/user/**";
    assert.equal(uriAllows(p, "spiffe://acme.test/user/alice"), true);
    assert.equal(uriAllows(p, "spiffe://acme.test/user/alice/x/y"), true);
    assert.equal(uriAllows(p, "spiffe://acme.test/user"), false);
    assert.equal(uriAllows(p, "spiffe://acme.test/user/"), false);
    assert.equal(uriAllows(p, "spiffe://acme.test/user/alice//x"), false);
    assert.equal(uriAllows(p, "spiffe://acme.test/user/../admin"), false);
    assert.equal(uriAllows(p, "spiffe://acme.test/users/alice"), false);
    assert.equal(uriAllows("spiffe://acme.test/**", "spiffe://acme.test/anything/at/all"), true);
    assert.equal(uriAllows("spiffe://acme.test/**", "spiffe://acme.test"), false);
    assert.equal(uriAllows("spiffe://acme.test/*/**", "spiffe://acme.test/ns/a/b"), true);
    assert.equal(uriAllows("spiffe://acme.test/*/**", "spiffe://acme.test/ns"), false);
  });
  test("non-hierarchical URIs compare exactly", () => {
    assert.equal(uriAllows("urn:uuid:1234", "urn:uuid:1234"), true);
    assert.equal(uriAllows("urn:uuid:1234", "urn:uuid:12345"), false);
  });
  test("any of the peer's URIs may match", () => {
    const id = identity({ uris: ["https://acme.test/x", "spiffe://acme.test/user/alice"] });
    assert.equal(allows([{ uri: ["spiffe://acme.test/user/*"] }], id), true);
  });
  test("bad patterns are refused when compiled", () => {
    throwsUsage([{ uri: ["spiffe://acme.test/**/x"] }], /"\*\*" may only be the last/);
    throwsUsage([{ uri: ["spiffe://acme.test/user-*"] }], /whole path segment/);
    throwsUsage([{ uri: ["spiffe://acme.test/a*b/c"] }], /whole path segment/);
    throwsUsage([{ uri: ["spiffe://*.acme.test/user"] }], /scheme or authority/);
    throwsUsage([{ uri: ["spiffe://acme.test/*?x=1"] }], /without query/);
    throwsUsage([{ uri: ["not a uri"] }], /not an absolute URI/);
    throwsUsage([{ uri: ["/user/alice"] }], /not an absolute URI/);
  });
});

describe("combining", () => {
  test("conditions in one rule are AND'ed", () => {
    const rule = { cn: ["alice"], ou: ["ops"] };
    assert.equal(allows([rule]), true);
    assert.equal(allows([rule], identity({ organizationalUnits: ["dev"] })), false);
    assert.equal(allows([rule], identity({ commonName: "bob" })), false);
    const d = compilePolicy([{ ou: ["ops"], uri: ["spiffe://acme.test/user/*"] }]).authorize(identity());
    assert.equal(d.rule, "ou=ops and uri=spiffe://acme.test/user/*");
    assert.equal(d.reason, "allowed by ou=ops and uri=spiffe://acme.test/user/*");
  });
  test("values of one condition are OR'ed", () => {
    assert.equal(allows([{ cn: ["bob", "alice"] }]), true);
    assert.equal(allows([{ cn: ["bob", "carol"] }]), false);
    assert.equal(compilePolicy([{ cn: ["bob", "alice"] }]).authorize(identity()).rule, "cn=alice");
  });
  test("rules are OR'ed; the first that allows is reported, by name when it has one", () => {
    const p = compilePolicy([
      { name: "bob only", cn: ["bob"] },
      { name: "ops team", ou: ["ops"] },
      { all: true },
    ]);
    const d = p.authorize(identity());
    assert.deepEqual(d, { allowed: true, rule: "ops team", reason: 'allowed by rule "ops team" (ou=ops)' });
    assert.equal(p.authorize(identity({ organizationalUnits: [] })).rule, "all");
  });
  test("all AND a condition", () => {
    assert.equal(allows([{ all: true, cn: ["bob"] }]), false);
    assert.equal(
      compilePolicy([{ all: true, cn: ["alice"] }]).authorize(identity()).rule,
      "all and cn=alice",
    );
  });
});

describe("methods", () => {
  const rules: RuleSpec[] = [{ cn: ["alice"], methods: ["GET", "head"] }];
  test("a rule with methods applies only to those methods", () => {
    assert.equal(allows(rules, identity(), "GET"), true);
    assert.equal(allows(rules, identity(), "get"), true);
    assert.equal(allows(rules, identity(), "HEAD"), true);
    assert.equal(allows(rules, identity(), "POST"), false);
    const d = compilePolicy(rules).authorize(identity(), { method: "GET" });
    assert.equal(d.rule, "cn=alice and method=GET");
  });
  test("a rule with methods never matches where there is no method (a tunnel)", () => {
    assert.equal(allows(rules), false);
    assert.equal(allows(rules, identity(), undefined), false);
  });
  test("rules without methods apply to every method", () => {
    assert.equal(allows([{ cn: ["alice"] }], identity(), "DELETE"), true);
  });
  test("the refusal names the method", () => {
    const d = compilePolicy(rules).authorize(identity({ uris: [], emails: [] }), { method: "POST" });
    assert.equal(d.reason, "no rule allows CN=alice for POST");
  });
  test("WebDAV methods are known", () => {
    assert.equal(allows([{ all: true, methods: ["PROPFIND", "MKCOL"] }], identity(), "PROPFIND"), true);
  });
});

describe("bad input is refused at compile time", () => {
  test("empty rules", () => {
    throwsUsage([{}], /rule 1 is empty/);
    throwsUsage([{ cn: ["a"] }, { name: "second" }], /rule 2 \("second"\) is empty/);
    throwsUsage([{ methods: ["GET"] }], /methods alone/);
    throwsUsage([null], /object/);
  });
  test("empty lists and non-strings", () => {
    throwsUsage([{ cn: [] }], /cn: the list is empty/);
    throwsUsage([{ cn: "alice" }], /cn: expected a list/);
    throwsUsage([{ cn: [""] }], /not a non-empty string/);
    throwsUsage([{ ou: [42] }], /not a non-empty string/);
  });
  test("unknown conditions (a typo must not widen a rule)", () => {
    throwsUsage([{ cn: ["alice"], urii: ["spiffe://acme.test/x"] }], /unknown condition "urii"/);
  });
  test("bad fingerprints", () => {
    throwsUsage([{ fingerprint: ["abcd"] }], /not a SHA-256 fingerprint/);
    throwsUsage([{ fingerprint: ["zz".repeat(32)] }], /not a SHA-256 fingerprint/);
    throwsUsage([{ fingerprint: ["ab".repeat(20)] }], /not a SHA-256 fingerprint/);
  });
  test("bad spki pins", () => {
    throwsUsage([{ spki: ["abc"] }], /not a SHA-256 public-key pin/);
    throwsUsage([{ spki: [Buffer.alloc(20).toString("base64")] }], /not a SHA-256 public-key pin/);
  });
  test("unknown methods", () => {
    throwsUsage([{ all: true, methods: ["FETCH"] }], /unknown HTTP method "FETCH"/);
  });
  test("bad dns patterns", () => {
    throwsUsage([{ dns: ["web.*.test"] }], /not a DNS name or pattern/);
    throwsUsage([{ dns: ["w*.acme.test"] }], /not a DNS name or pattern/);
    throwsUsage([{ dns: ["*"] }], /not a DNS name or pattern/);
    throwsUsage([{ dns: ["*.test"] }], /not a DNS name or pattern/);
  });
  test("bad emails", () => {
    throwsUsage([{ email: ["alice"] }], /not an e-mail address/);
  });
});

describe("the policy object", () => {
  test("keeps a frozen copy of its rules", () => {
    const rules: RuleSpec[] = [{ cn: ["alice"] }];
    const p = compilePolicy(rules);
    (rules[0] as RuleSpec).cn?.push("bob");
    assert.deepEqual(p.rules, [{ cn: ["alice"] }]);
    assert.equal(Object.isFrozen(p.rules), true);
    assert.equal(allows([{ cn: ["bob"] }], identity({ commonName: "bob" })), true);
    assert.equal(p.authorize(identity({ commonName: "bob" })).allowed, false);
  });
});

describe("helpers", () => {
  test("normalizeFingerprint", () => {
    assert.equal(normalizeFingerprint(` SHA256:${FP.toUpperCase()} `), FP);
    assert.equal(normalizeFingerprint("xyz"), undefined);
  });
  test("normalizeSpkiPin gives standard padded base64", () => {
    assert.equal(normalizeSpkiPin(SPKI_BYTES.toString("base64url")), SPKI_B64);
    assert.equal(normalizeSpkiPin(`pin-sha256="${SPKI_B64}"`), SPKI_B64);
  });
  test("describeIdentity", () => {
    assert.equal(
      describeIdentity(identity({ emails: [], dnsNames: ["a.test", "b.test", "c.test"] })),
      "CN=alice, URI spiffe://acme.test/user/alice, DNS a.test, DNS b.test, 1 more",
    );
    assert.equal(
      describeIdentity(
        identity({
          commonName: undefined,
          subject: "",
          uris: [],
          emails: [],
          fingerprint: "0123456789abcdef0123",
        }),
      ),
      "fingerprint 0123456789abcdef…",
    );
    assert.equal(
      describeIdentity(identity({ commonName: undefined, subject: "O=Acme", uris: [], emails: [] })),
      "O=Acme",
    );
  });
});

describe("rulesFromFlags", () => {
  test("each value becomes a rule of its own", () => {
    assert.deepEqual(
      rulesFromFlags({
        allowCn: ["alice", "bob"],
        allowOu: ["ops"],
        allowDns: ["*.acme.test"],
        allowUri: ["spiffe://acme.test/user/*"],
        allowEmail: ["carol@acme.test"],
        allowFingerprint: [FP],
        allowSpki: [SPKI_B64],
        allowAll: true,
      }),
      [
        { cn: ["alice"] },
        { cn: ["bob"] },
        { ou: ["ops"] },
        { dns: ["*.acme.test"] },
        { uri: ["spiffe://acme.test/user/*"] },
        { email: ["carol@acme.test"] },
        { fingerprint: [FP] },
        { spki: [SPKI_B64] },
        { all: true },
      ],
    );
  });
  test("kinds are OR'ed, like ghostunnel's --allow-* flags", () => {
    const rules = rulesFromFlags({ allowCn: ["bob"], allowOu: ["ops"] });
    assert.equal(allows(rules), true); // alice is in ops
    assert.equal(allows(rules, identity({ organizationalUnits: [] })), false);
    assert.equal(allows(rules, identity({ commonName: "bob", organizationalUnits: [] })), true);
  });
  test("no flags: no rules, deny everyone", () => {
    assert.deepEqual(rulesFromFlags({}), []);
    assert.deepEqual(rulesFromFlags({ allowAll: false, allowCn: [] }), []);
    assert.equal(allows(rulesFromFlags({})), false);
  });
  test("bad flag values are refused by compilePolicy", () => {
    throwsUsage(rulesFromFlags({ allowFingerprint: ["nope"] }), /fingerprint "nope"/);
  });
});
