import assert from "node:assert/strict";
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import {
  CHACHA20_POLY1305,
  CHACHA20_POLY1305_AVAILABLE,
  chacha20,
  chacha20Poly1305,
  open,
  poly1305,
  seal,
} from "./chacha20-poly1305.js";

// Test vectors of RFC 8439 (sections 2.4.2, 2.5.2, 2.6.2, 2.8.2 and Appendix A), then a cross-check
// against OpenSSL's chacha20-poly1305 (node:crypto) on random inputs of every awkward length.

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/[\s:]/g, ""), "hex"));
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const zeros = (n: number): Uint8Array => new Uint8Array(n);

const KEY_00_1F = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
const KEY_80_9F = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
const KEY_1C92 = hex(`1c 92 40 a5 eb 55 d3 8a f3 33 88 86 04 f6 b5 f0
                      47 39 17 c1 40 2b 80 09 9d ca 5c bc 20 70 75 c0`);
const KEY_ONE = hex(`${"00".repeat(31)}01`);
const NONCE_2 = hex(`${"00".repeat(11)}02`);

const SUNSCREEN = text(
  "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
);
const IETF = text(
  "Any submission to the IETF intended by the Contributor for publication as all or part of an IETF " +
    'Internet-Draft or RFC and any statement made within the context of an IETF activity is considered an "IETF ' +
    'Contribution". Such statements include oral statements in IETF sessions, as well as written and electronic ' +
    "communications made at any time or place, which are addressed to",
);
const JABBERWOCKY = text(
  "'Twas brillig, and the slithy toves\nDid gyre and gimble in the wabe:\nAll mimsy were the borogoves,\n" +
    "And the mome raths outgrabe.",
);
const DRAFTS = text(
  "Internet-Drafts are draft documents valid for a maximum of six months and may be updated, replaced, or " +
    "obsoleted by other documents at any time. It is inappropriate to use Internet-Drafts as reference material " +
    "or to cite them other than as /\u201cwork in progress./\u201d", // sic: the RFC's bytes
);

describe("ChaCha20 (RFC 8439 2.4.2, A.1, A.2)", () => {
  it("has little-endian typed arrays here", () => assert.equal(CHACHA20_POLY1305_AVAILABLE, true));

  it("encrypts the sunscreen text (2.4.2)", () => {
    assert.equal(SUNSCREEN.length, 114);
    const ct = chacha20(KEY_00_1F, hex("000000000000004a00000000"), 1, SUNSCREEN);
    assert.equal(
      toHex(ct),
      toHex(
        hex(`6e 2e 35 9a 25 68 f9 80 41 ba 07 28 dd 0d 69 81 e9 7e 7a ec 1d 43 60 c2 0a 27 af cc fd 9f ae 0b
             f9 1b 65 c5 52 47 33 ab 8f 59 3d ab cd 62 b3 57 16 39 d6 24 e6 51 52 ab 8f 53 0c 35 9f 08 61 d8
             07 ca 0d bf 50 0d 6a 61 56 a3 8e 08 8a 22 b6 5e 52 bc 51 4d 16 cc f8 06 81 8c e9 1a b7 79 37 36
             5a f9 0b bf 74 a3 5b e6 b4 0b 8e ed f2 78 5e 42 87 4d`),
      ),
    );
    assert.deepEqual(chacha20(KEY_00_1F, hex("000000000000004a00000000"), 1, ct), SUNSCREEN);
  });

  it("produces the A.1 key stream blocks", () => {
    const vectors: [Uint8Array, Uint8Array, number, string][] = [
      [
        zeros(32),
        zeros(12),
        0,
        `76 b8 e0 ad a0 f1 3d 90 40 5d 6a e5 53 86 bd 28 bd d2 19 b8 a0 8d ed 1a a8 36 ef cc 8b 77 0d c7
         da 41 59 7c 51 57 48 8d 77 24 e0 3f b8 d8 4a 37 6a 43 b8 f4 15 18 a1 1c c3 87 b6 69 b2 ee 65 86`,
      ],
      [
        zeros(32),
        zeros(12),
        1,
        `9f 07 e7 be 55 51 38 7a 98 ba 97 7c 73 2d 08 0d cb 0f 29 a0 48 e3 65 69 12 c6 53 3e 32 ee 7a ed
         29 b7 21 76 9c e6 4e 43 d5 71 33 b0 74 d8 39 d5 31 ed 1f 28 51 0a fb 45 ac e1 0a 1f 4b 79 4d 6f`,
      ],
      [
        KEY_ONE,
        zeros(12),
        1,
        `3a eb 52 24 ec f8 49 92 9b 9d 82 8d b1 ce d4 dd 83 20 25 e8 01 8b 81 60 b8 22 84 f3 c9 49 aa 5a
         8e ca 00 bb b4 a7 3b da d1 92 b5 c4 2f 73 f2 fd 4e 27 36 44 c8 b3 61 25 a6 4a dd eb 00 6c 13 a0`,
      ],
      [
        hex(`00ff${"00".repeat(30)}`),
        zeros(12),
        2,
        `72 d5 4d fb f1 2e c4 4b 36 26 92 df 94 13 7f 32 8f ea 8d a7 39 90 26 5e c1 bb be a1 ae 9a f0 ca
         13 b2 5a a2 6c b4 a6 48 cb 9b 9d 1b e6 5b 2c 09 24 a6 6c 54 d5 45 ec 1b 73 74 f4 87 2e 99 f0 96`,
      ],
      [
        zeros(32),
        NONCE_2,
        0,
        `c2 c6 4d 37 8c d5 36 37 4a e2 04 b9 ef 93 3f cd 1a 8b 22 88 b3 df a4 96 72 ab 76 5b 54 ee 27 c7
         8a 97 0e 0e 95 5c 14 f3 a8 8e 74 1b 97 c2 86 f7 5f 8f c2 99 e8 14 83 62 fa 19 8a 39 53 1b ed 6d`,
      ],
    ];
    for (const [key, nonce, counter, want] of vectors) {
      assert.equal(toHex(chacha20(key, nonce, counter, zeros(64))), toHex(hex(want)), `counter ${counter}`);
    }
  });

  it("encrypts the A.2 texts", () => {
    assert.equal(IETF.length, 375);
    assert.equal(JABBERWOCKY.length, 127);
    assert.equal(
      toHex(chacha20(zeros(32), zeros(12), 0, zeros(64))),
      toHex(
        hex(`76 b8 e0 ad a0 f1 3d 90 40 5d 6a e5 53 86 bd 28 bd d2 19 b8 a0 8d ed 1a a8 36 ef cc 8b 77 0d c7
             da 41 59 7c 51 57 48 8d 77 24 e0 3f b8 d8 4a 37 6a 43 b8 f4 15 18 a1 1c c3 87 b6 69 b2 ee 65 86`),
      ),
    );
    assert.equal(
      toHex(chacha20(KEY_ONE, NONCE_2, 1, IETF)),
      toHex(
        hex(`a3 fb f0 7d f3 fa 2f de 4f 37 6c a2 3e 82 73 70 41 60 5d 9f 4f 4f 57 bd 8c ff 2c 1d 4b 79 55 ec
             2a 97 94 8b d3 72 29 15 c8 f3 d3 37 f7 d3 70 05 0e 9e 96 d6 47 b7 c3 9f 56 e0 31 ca 5e b6 25 0d
             40 42 e0 27 85 ec ec fa 4b 4b b5 e8 ea d0 44 0e 20 b6 e8 db 09 d8 81 a7 c6 13 2f 42 0e 52 79 50
             42 bd fa 77 73 d8 a9 05 14 47 b3 29 1c e1 41 1c 68 04 65 55 2a a6 c4 05 b7 76 4d 5e 87 be a8 5a
             d0 0f 84 49 ed 8f 72 d0 d6 62 ab 05 26 91 ca 66 42 4b c8 6d 2d f8 0e a4 1f 43 ab f9 37 d3 25 9d
             c4 b2 d0 df b4 8a 6c 91 39 dd d7 f7 69 66 e9 28 e6 35 55 3b a7 6c 5c 87 9d 7b 35 d4 9e b2 e6 2b
             08 71 cd ac 63 89 39 e2 5e 8a 1e 0e f9 d5 28 0f a8 ca 32 8b 35 1c 3c 76 59 89 cb cf 3d aa 8b 6c
             cc 3a af 9f 39 79 c9 2b 37 20 fc 88 dc 95 ed 84 a1 be 05 9c 64 99 b9 fd a2 36 e7 e8 18 b0 4b 0b
             c3 9c 1e 87 6b 19 3b fe 55 69 75 3f 88 12 8c c0 8a aa 9b 63 d1 a1 6f 80 ef 25 54 d7 18 9c 41 1f
             58 69 ca 52 c5 b8 3f a3 6f f2 16 b9 c1 d3 00 62 be bc fd 2d c5 bc e0 91 19 34 fd a7 9a 86 f6 e6
             98 ce d7 59 c3 ff 9b 64 77 33 8f 3d a4 f9 cd 85 14 ea 99 82 cc af b3 41 b2 38 4d d9 02 f3 d1 ab
             7a c6 1d d2 9c 6f 21 ba 5b 86 2f 37 30 e3 7c fd c4 fd 80 6c 22 f2 21`),
      ),
    );
    assert.equal(
      toHex(chacha20(KEY_1C92, NONCE_2, 42, JABBERWOCKY)),
      toHex(
        hex(`62 e6 34 7f 95 ed 87 a4 5f fa e7 42 6f 27 a1 df 5f b6 91 10 04 4c 0d 73 11 8e ff a9 5b 01 e5 cf
             16 6d 3d f2 d7 21 ca f9 b2 1e 5f b1 4c 61 68 71 fd 84 c5 4f 9d 65 b2 83 19 6c 7f e4 f6 05 53 eb
             f3 9c 64 02 c4 22 34 e3 2a 35 6b 3e 76 43 12 a6 1a 55 32 05 57 16 ea d6 96 25 68 f8 7d 3f 3f 77
             04 c6 a8 d1 bc d1 bf 4d 50 d6 15 4b 6d a7 31 b1 87 b5 8d fd 72 8a fa 36 75 7a 79 7a c1 88 d1`),
      ),
    );
  });
});

describe("Poly1305 (RFC 8439 2.5.2, 2.6.2, A.3, A.4)", () => {
  it("tags the Cryptographic Forum Research Group message (2.5.2)", () => {
    const key = hex(
      "85:d6:be:78:57:55:6d:33:7f:44:52:fe:42:d5:06:a8:01:03:80:8a:fb:0d:b2:fd:4a:bf:f6:af:41:49:f5:1b",
    );
    assert.equal(
      toHex(poly1305(key, text("Cryptographic Forum Research Group"))),
      toHex(hex("a8:06:1d:c1:30:51:36:c6:c2:2b:8b:af:0c:01:27:a9")),
    );
  });

  it("passes the A.3 vectors, including the reduction edge cases", () => {
    const r = (s: string): string => s.padEnd(32, "0");
    const vectors: [Uint8Array, Uint8Array, string][] = [
      [zeros(32), zeros(64), "00000000000000000000000000000000"],
      [hex(`${"00".repeat(16)}36e5f6b5c5e06070f0efca96227a863e`), IETF, "36e5f6b5c5e06070f0efca96227a863e"],
      [hex(`36e5f6b5c5e06070f0efca96227a863e${"00".repeat(16)}`), IETF, "f3477e7cd95417af89a6b8794c310cf0"],
      [KEY_1C92, JABBERWOCKY, "4541669a7eaaee61e708dc7cbcc5eb62"],
      // #5: a partially reduced final result that is not fully reduced.
      [hex(`${r("02")}${"00".repeat(16)}`), hex("ff".repeat(16)), "03000000000000000000000000000000"],
      // #6: adding s overflows 2^128.
      [hex(`${r("02")}${"ff".repeat(16)}`), hex(r("02")), "03000000000000000000000000000000"],
      // #7: a data limb of all ones with a carry from the lower limb.
      [
        hex(`${r("01")}${"00".repeat(16)}`),
        hex(`${"ff".repeat(16)}f0${"ff".repeat(15)}11${"00".repeat(15)}`),
        "05000000000000000000000000000000",
      ],
      // #8: the polynomial part is exactly 2^130 - 5.
      [
        hex(`${r("01")}${"00".repeat(16)}`),
        hex(`${"ff".repeat(16)}fb${"fe".repeat(15)}${"01".repeat(16)}`),
        "00000000000000000000000000000000",
      ],
      // #9: exactly 2^130 - 6.
      [hex(`${r("02")}${"00".repeat(16)}`), hex(`fd${"ff".repeat(15)}`), "faffffffffffffffffffffffffffffff"],
      // #10 and #11: 5*H+L reduction producing 131-bit intermediate / final results.
      [
        hex(`0100000000000000040000000000000000${"00".repeat(15)}`),
        hex(
          `e33594d7505e43b900000000000000003394d7505e4379cd0100000000000000${"00".repeat(16)}01${"00".repeat(15)}`,
        ),
        "14000000000000005500000000000000",
      ],
      [
        hex(`0100000000000000040000000000000000${"00".repeat(15)}`),
        hex(`e33594d7505e43b900000000000000003394d7505e4379cd0100000000000000${"00".repeat(16)}`),
        "13000000000000000000000000000000",
      ],
    ];
    vectors.forEach(([key, msg, tag], i) => {
      assert.equal(key.length, 32, `vector #${i + 1} key`);
      assert.equal(toHex(poly1305(key, msg)), tag, `A.3 vector #${i + 1}`);
    });
  });

  it("derives the one-time keys of 2.6.2 and A.4 (ChaCha20 block 0)", () => {
    const vectors: [Uint8Array, Uint8Array, string][] = [
      [
        KEY_80_9F,
        hex("000000000001020304050607"),
        "8ad5a08b905f81cc815040274ab29471a833b637e3fd0da508dbb8e2fdd1a646",
      ],
      [zeros(32), zeros(12), "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"],
      [KEY_ONE, NONCE_2, "ecfa254f845f647473d3cb140da9e87606cb33066c447b87bc2666dde3fbb739"],
      [KEY_1C92, NONCE_2, "965e3bc6f9ec7ed9560808f4d229f94b137ff275ca9b3fcbdd59deaad23310ae"],
    ];
    for (const [key, nonce, otk] of vectors) assert.equal(toHex(chacha20(key, nonce, 0, zeros(32))), otk);
  });
});

describe("AEAD_CHACHA20_POLY1305 (RFC 8439 2.8.2, A.5)", () => {
  it("seals the 2.8.2 example", () => {
    const aad = hex("50 51 52 53 c0 c1 c2 c3 c4 c5 c6 c7");
    const nonce = hex("07 00 00 00 40 41 42 43 44 45 46 47");
    const sealed = seal(KEY_80_9F, nonce, aad, SUNSCREEN);
    const ct = `d3 1a 8d 34 64 8e 60 db 7b 86 af bc 53 ef 7e c2 a4 ad ed 51 29 6e 08 fe a9 e2 b5 a7 36 ee 62 d6
                3d be a4 5e 8c a9 67 12 82 fa fb 69 da 92 72 8b 1a 71 de 0a 9e 06 0b 29 05 d6 a5 b6 7e cd 3b 36
                92 dd bd 7f 2d 77 8b 8c 98 03 ae e3 28 09 1b 58 fa b3 24 e4 fa d6 75 94 55 85 80 8b 48 31 d7 bc
                3f f4 de f0 8e 4b 7a 9d e5 76 d2 65 86 ce c6 4b 61 16`;
    const tag = "1a:e1:0b:59:4f:09:e2:6a:7e:90:2e:cb:d0:60:06:91";
    assert.equal(toHex(sealed), toHex(hex(ct + tag)));
    assert.deepEqual(open(KEY_80_9F, nonce, aad, sealed), SUNSCREEN);
  });

  it("opens the A.5 message and refuses it with any bit changed", () => {
    assert.equal(DRAFTS.length, 265);
    const nonce = hex("00 00 00 00 01 02 03 04 05 06 07 08");
    const aad = hex("f3 33 88 86 00 00 00 00 00 00 4e 91");
    const sealed =
      hex(`64 a0 86 15 75 86 1a f4 60 f0 62 c7 9b e6 43 bd 5e 80 5c fd 34 5c f3 89 f1 08 67 0a c7 6c 8c b2
      4c 6c fc 18 75 5d 43 ee a0 9e e9 4e 38 2d 26 b0 bd b7 b7 3c 32 1b 01 00 d4 f0 3b 7f 35 58 94 cf
      33 2f 83 0e 71 0b 97 ce 98 c8 a8 4a bd 0b 94 81 14 ad 17 6e 00 8d 33 bd 60 f9 82 b1 ff 37 c8 55
      97 97 a0 6e f4 f0 ef 61 c1 86 32 4e 2b 35 06 38 36 06 90 7b 6a 7c 02 b0 f9 f6 15 7b 53 c8 67 e4
      b9 16 6c 76 7b 80 4d 46 a5 9b 52 16 cd e7 a4 e9 90 40 c5 a4 04 33 22 5e e2 82 a1 b0 a0 6c 52 3e
      af 45 34 d7 f8 3f a1 15 5b 00 47 71 8c bc 54 6a 0d 07 2b 04 b3 56 4e ea 1b 42 22 73 f5 48 27 1a
      0b b2 31 60 53 fa 76 99 19 55 eb d6 31 59 43 4e ce bb 4e 46 6d ae 5a 10 73 a6 72 76 27 09 7a 10
      49 e6 17 d9 1d 36 10 94 fa 68 f0 ff 77 98 71 30 30 5b ea ba 2e da 04 df 99 7b 71 4d 6c 6f 2c 29
      a6 ad 5c b4 02 2b 02 70 9b
      ee ad 9d 67 89 0c bb 22 39 23 36 fe a1 85 1f 38`);
    assert.deepEqual(open(KEY_1C92, nonce, aad, sealed), DRAFTS);
    assert.deepEqual(seal(KEY_1C92, nonce, aad, DRAFTS), sealed);
    for (const at of [0, 100, 264, 265, 280]) {
      const bad = sealed.slice();
      bad[at] = (bad[at] as number) ^ 0x01;
      assert.equal(open(KEY_1C92, nonce, aad, bad), null, `bit flipped at ${at}`);
    }
    const badAad = aad.slice();
    badAad[11] = (badAad[11] as number) ^ 0x80;
    assert.equal(open(KEY_1C92, nonce, badAad, sealed), null, "other AAD");
    assert.equal(open(KEY_1C92, hex("000000000102030405060709"), aad, sealed), null, "other nonce");
    assert.equal(open(KEY_1C92, nonce, aad, sealed.subarray(0, 15)), null, "shorter than a tag");
    assert.equal(open(KEY_1C92, nonce, aad, sealed.subarray(0, sealed.length - 1)), null, "truncated");
  });

  it("refuses keys and nonces of the wrong size", () => {
    assert.throws(() => seal(zeros(16), zeros(12), zeros(0), zeros(1)), RangeError);
    assert.throws(() => seal(zeros(32), zeros(8), zeros(0), zeros(1)), RangeError);
  });
});

describe("ChaCha20-Poly1305 against OpenSSL (node:crypto)", () => {
  function opensslSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, pt: Uint8Array): Uint8Array {
    const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
    c.setAAD(aad, { plaintextLength: pt.length });
    return new Uint8Array(Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]));
  }
  function opensslOpen(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array {
    const d = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 });
    d.setAAD(aad, { plaintextLength: sealed.length - 16 });
    d.setAuthTag(sealed.subarray(sealed.length - 16));
    return new Uint8Array(Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]));
  }

  it("agrees on random inputs of every length 0..300 and TLS record sizes, at any alignment", () => {
    const lengths = [
      ...Array.from({ length: 301 }, (_, i) => i),
      1023,
      1024,
      1025,
      16383,
      16384,
      16385,
      16401,
    ];
    for (const n of lengths) {
      const key = new Uint8Array(randomBytes(32));
      const nonce = new Uint8Array(randomBytes(12));
      const aad = new Uint8Array(randomBytes(n % 37));
      // Plaintext at an odd offset inside a larger buffer: the implementation must not assume alignment.
      const backing = new Uint8Array(randomBytes(n + 3));
      const pt = backing.subarray(3);
      const ours = seal(key, nonce, aad, pt);
      const theirs = opensslSeal(key, nonce, aad, pt);
      assert.equal(toHex(ours), toHex(theirs), `seal, length ${n}`);
      const sealedBacking = new Uint8Array(theirs.length + 1);
      sealedBacking.set(theirs, 1);
      assert.deepEqual(open(key, nonce, aad, sealedBacking.subarray(1)), pt, `open, length ${n}`);
      assert.deepEqual(opensslOpen(key, nonce, aad, ours), pt);
    }
  });

  it("refuses random forgeries that OpenSSL refuses", () => {
    const cipher = chacha20Poly1305(new Uint8Array(randomBytes(32)));
    for (let i = 0; i < 200; i++) {
      const nonce = new Uint8Array(randomBytes(12));
      const sealed = cipher.seal(nonce, zeros(13), new Uint8Array(randomBytes(i * 7)));
      const at = i % sealed.length;
      sealed[at] = (sealed[at] as number) ^ (1 << (i % 8));
      assert.equal(cipher.open(nonce, zeros(13), sealed), null);
    }
  });

  it("plugs into the TLS AEAD interface", async () => {
    const key = new Uint8Array(randomBytes(32));
    const aead = await CHACHA20_POLY1305.create(key);
    assert.equal(CHACHA20_POLY1305.keyLength, 32);
    assert.equal(CHACHA20_POLY1305.tagLength, 16);
    const nonce = new Uint8Array(randomBytes(12));
    const aad = hex("1703034011");
    const pt = new Uint8Array(randomBytes(1000));
    const sealed = await aead.seal(nonce, aad, pt);
    assert.equal(toHex(sealed), toHex(opensslSeal(key, nonce, aad, pt)));
    assert.deepEqual(await aead.open(nonce, aad, sealed), pt);
    sealed[0] = (sealed[0] as number) ^ 1;
    assert.equal(await aead.open(nonce, aad, sealed), null);
  });
});
