import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import { formatPkcs11Uri, isPkcs11Uri, parsePkcs11Uri, redactPkcs11Uri } from "./pkcs11-uri.js";

describe("PKCS#11 URIs (RFC 7512)", () => {
  it("parses path and query attributes", () => {
    const uri = parsePkcs11Uri(
      "pkcs11:token=mtls;object=intermediate;type=private;id=%01%a2;slot-id=3?pin-source=file:/run/pin&module-path=/usr/lib/softhsm/libsofthsm2.so",
    );
    assert.deepEqual(uri, {
      token: "mtls",
      object: "intermediate",
      type: "private",
      id: new Uint8Array([0x01, 0xa2]),
      slotId: 3,
      pinSource: "file:/run/pin",
      modulePath: "/usr/lib/softhsm/libsofthsm2.so",
    });
  });

  it("decodes percent-encoded UTF-8 and keeps examples from RFC 7512", () => {
    assert.deepEqual(
      parsePkcs11Uri("pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc."),
      {
        token: "Software PKCS#11 softtoken",
        manufacturer: "Snake Oil, Inc.",
      },
    );
    assert.equal(parsePkcs11Uri("pkcs11:object=%E2%82%AC").object, "€");
    assert.deepEqual(parsePkcs11Uri("pkcs11:"), {});
    assert.deepEqual(parsePkcs11Uri("pkcs11:token=a;x-vendor=1"), { token: "a" });
  });

  it("round-trips through formatPkcs11Uri, leaving the PIN out unless asked", () => {
    const text = "pkcs11:token=my%20token;object=ca%3bkey;id=%00%ff;type=private?pin-value=12%2634";
    const uri = parsePkcs11Uri(text);
    assert.equal(uri.object, "ca;key");
    assert.equal(uri.pinValue, "12&34");
    assert.equal(formatPkcs11Uri(uri), "pkcs11:token=my%20token;object=ca%3bkey;id=%00%ff;type=private");
    assert.deepEqual(parsePkcs11Uri(formatPkcs11Uri(uri, { withPin: true })), uri);
    assert.equal(redactPkcs11Uri(text), "pkcs11:token=my%20token;object=ca%3bkey;id=%00%ff;type=private");
  });

  it("refuses malformed URIs with E_BAD_INPUT, never echoing a PIN", () => {
    for (const [text, why] of [
      ["file:/x", /must start with "pkcs11:"/],
      ["pkcs11:token=a;token=b", /appears twice/],
      ["pkcs11:tokn=a", /unknown attribute "tokn"/],
      ["pkcs11:object=a%zz", /percent-encoding/],
      ["pkcs11:type=key", /unknown object type/],
      ["pkcs11:slot-id=x", /not a number/],
      ["pkcs11:object", /not name=value/],
      ["pkcs11:object=a#frag", /fragment/],
      ["pkcs11:object=%ff%fe", /UTF-8/],
      ["pkcs11:object=a?pin-value=hunter2&bogus=1", /unknown query attribute/],
    ] as const) {
      assert.throws(
        () => parsePkcs11Uri(text),
        (err: unknown) =>
          isMtlsError(err, "E_BAD_INPUT") && why.test(err.message) && !err.message.includes("hunter2"),
        text,
      );
    }
  });

  it("recognizes the scheme case-insensitively", () => {
    assert.equal(isPkcs11Uri("PKCS11:token=a"), true);
    assert.equal(isPkcs11Uri("/etc/key.pem"), false);
  });
});
