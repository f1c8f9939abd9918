import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { base64Decode, base64Encode, latin1Decode } from "./base64.js";

test("base64 agrees with Buffer for every length 0..300 and random bytes", () => {
  for (let n = 0; n <= 300; n++) {
    const bytes = new Uint8Array(randomBytes(n));
    const b64 = Buffer.from(bytes).toString("base64");
    assert.equal(base64Encode(bytes), b64);
    const back = base64Decode(b64);
    assert.deepEqual(back, bytes);
    assert.equal(back.buffer.byteLength, n, "decoded bytes own an exact-size buffer");
    // unpadded input decodes like Buffer does
    assert.deepEqual(base64Decode(b64.replace(/=+$/, "")), new Uint8Array(Buffer.from(b64, "base64")));
  }
});

test("base64Decode refuses characters outside the alphabet; latin1Decode matches Buffer", () => {
  assert.throws(() => base64Decode("QU-B"), /invalid base64/);
  assert.throws(() => base64Decode("QU B"), /invalid base64/);
  const big = new Uint8Array(randomBytes(100_000));
  assert.equal(latin1Decode(big), Buffer.from(big).toString("latin1"));
});
