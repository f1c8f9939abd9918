import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  derBitString,
  derEnumerated,
  derExplicit,
  derOctetString,
  derPositiveInteger,
  derSequence,
  derSmallInteger,
  derTime,
  derTlv,
} from "./der.js";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const bytes = (...b: number[]) => new Uint8Array(b);

describe("derTlv lengths", () => {
  const cases: [number, string][] = [
    [0, "00"],
    [1, "01"],
    [127, "7f"], // largest short form
    [128, "8180"], // smallest long form
    [255, "81ff"],
    [256, "820100"],
    [65535, "82ffff"],
    [65536, "83010000"],
  ];
  for (const [length, header] of cases) {
    test(`${length} content bytes → length octets ${header}`, () => {
      const out = derTlv(0x04, new Uint8Array(length));
      assert.equal(hex(out.subarray(0, 1 + header.length / 2)), `04${header}`);
      assert.equal(out.length, 1 + header.length / 2 + length);
    });
  }

  test("concatenates several content parts in order", () => {
    assert.equal(hex(derTlv(0x30, bytes(1, 2), bytes(), bytes(3))), "3003010203");
  });

  test("content split across parts still counts as one length", () => {
    const out = derSequence(new Uint8Array(100), new Uint8Array(100));
    assert.equal(hex(out.subarray(0, 3)), "3081c8");
    assert.equal(out.length, 203);
  });
});

describe("derPositiveInteger", () => {
  test("a magnitude with the top bit set gets a 0x00 pad", () => {
    assert.equal(hex(derPositiveInteger(bytes(0x80))), "02020080");
    assert.equal(hex(derPositiveInteger(bytes(0xff, 0x01))), "020300ff01");
  });

  test("a magnitude with the top bit clear is written as is", () => {
    assert.equal(hex(derPositiveInteger(bytes(0x7f))), "02017f");
    assert.equal(hex(derPositiveInteger(bytes(0x40, 0x00, 0x01))), "0203400001");
  });

  test("leading zero bytes are stripped (minimal encoding)", () => {
    assert.equal(hex(derPositiveInteger(bytes(0, 0, 0x7f))), "02017f");
    // ...but one is kept (re-added) when the next byte has its top bit set
    assert.equal(hex(derPositiveInteger(bytes(0, 0, 0x80))), "02020080");
  });

  test("zero is one 0x00 content byte", () => {
    assert.equal(hex(derPositiveInteger(bytes(0))), "020100");
    assert.equal(hex(derPositiveInteger(bytes(0, 0, 0))), "020100");
  });

  test("an empty magnitude still encodes a valid INTEGER (zero), never a zero-length one", () => {
    // X.690 §8.3.1: the contents of an INTEGER are one or more octets. `02 00` is not DER.
    assert.equal(hex(derPositiveInteger(bytes())), "020100");
  });

  test("a 16-byte serial with the top bit clear stays 16 bytes", () => {
    const serial = Buffer.from("7fffffffffffffffffffffffffffffff", "hex");
    assert.equal(hex(derPositiveInteger(serial)), `0210${"7f"}${"ff".repeat(15)}`);
  });
});

describe("derSmallInteger", () => {
  const cases: [number, string][] = [
    [0, "020100"],
    [1, "020101"],
    [2, "020102"],
    [127, "02017f"],
    [128, "02020080"],
    [255, "020200ff"],
    [256, "02020100"],
    [65535, "020300ffff"],
    [65536, "0203010000"],
    [2 ** 32, "02050100000000"],
  ];
  for (const [value, expected] of cases) {
    test(`${value} → ${expected}`, () => assert.equal(hex(derSmallInteger(value)), expected));
  }
});

describe("derTime (RFC 5280 §4.1.2.5)", () => {
  const ascii = (s: string) => Buffer.from(s, "ascii").toString("hex");

  test("2049-12-31T23:59:59Z is the last UTCTime", () => {
    assert.equal(hex(derTime(new Date("2049-12-31T23:59:59Z"))), `170d${ascii("491231235959Z")}`);
  });

  test("2050-01-01T00:00:00Z is GeneralizedTime with a four-digit year", () => {
    assert.equal(hex(derTime(new Date("2050-01-01T00:00:00Z"))), `180f${ascii("20500101000000Z")}`);
  });

  test("a 20xx date before 2050 uses two-digit years with leading zeros", () => {
    assert.equal(hex(derTime(new Date("2005-03-04T05:06:07Z"))), `170d${ascii("050304050607Z")}`);
  });

  test("milliseconds are dropped (whole seconds, never rounded up)", () => {
    assert.equal(hex(derTime(new Date("2030-01-01T00:00:00.999Z"))), `170d${ascii("300101000000Z")}`);
  });

  test("uses UTC whatever the local time zone", () => {
    // 23:30 on the 31st UTC is already the 1st in Tokyo: the encoding must still say the 31st.
    const previous = process.env.TZ;
    process.env.TZ = "Asia/Tokyo";
    try {
      assert.equal(new Date("2030-12-31T23:30:00Z").getDate(), 1); // the zone really applies
      assert.equal(hex(derTime(new Date("2030-12-31T23:30:00Z"))), `170d${ascii("301231233000Z")}`);
    } finally {
      if (previous === undefined) delete process.env.TZ;
      else process.env.TZ = previous;
    }
  });

  test("years far ahead are GeneralizedTime too", () => {
    assert.equal(hex(derTime(new Date("9999-12-31T23:59:59Z"))), `180f${ascii("99991231235959Z")}`);
  });
});

describe("small helpers", () => {
  test("BIT STRING has a 0 unused-bits byte", () => {
    assert.equal(hex(derBitString(bytes(0xab, 0xcd))), "030300abcd");
  });
  test("OCTET STRING", () => assert.equal(hex(derOctetString(bytes(1, 2))), "04020102"));
  test("ENUMERATED", () => assert.equal(hex(derEnumerated(1)), "0a0101"));
  test("explicit [0] and [3] are constructed context tags", () => {
    assert.equal(hex(derExplicit(0, derSmallInteger(2))), "a003020102");
    assert.equal(hex(derExplicit(3, derSequence())), "a3023000");
  });
});
