import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { isMtlsError } from "../errors.js";
import { derBlocks, pemDecodeAll, pemEncode, toBuffer } from "./pem.js";

const badInput = (fn: () => unknown, message?: RegExp) =>
  assert.throws(fn, (err) => isMtlsError(err, "E_BAD_INPUT") && (!message || message.test(err.message)));

// A DER SEQUENCE with some content, long enough to span several PEM lines.
const derOf = (n: number) => new Uint8Array([0x30, 0x81, n, ...randomBytes(n)]);

describe("pemEncode", () => {
  test("64-character lines, label, trailing newline", () => {
    const der = derOf(200);
    const pem = pemEncode("CERTIFICATE", der);
    const lines = pem.split("\n");
    assert.equal(lines[0], "-----BEGIN CERTIFICATE-----");
    assert.equal(lines.at(-2), "-----END CERTIFICATE-----");
    assert.equal(lines.at(-1), "");
    for (const line of lines.slice(1, -3)) assert.equal(line.length, 64);
    assert.ok((lines.at(-3) ?? "").length <= 64);
  });

  test("encodes only the view of a subarray, not its whole buffer", () => {
    const big = new Uint8Array([1, 2, 3, 0x30, 0x01, 0x00, 9, 9]);
    const pem = pemEncode("X", big.subarray(3, 6));
    assert.deepEqual(pemDecodeAll(pem)[0]?.der, new Uint8Array([0x30, 0x01, 0x00]));
  });

  test("openssl reads what we write", () => {
    const der = new Uint8Array(
      execFileSync("openssl", ["ecparam", "-name", "prime256v1", "-outform", "DER"]),
    );
    const out = execFileSync("openssl", ["ecparam", "-inform", "PEM", "-outform", "DER"], {
      input: pemEncode("EC PARAMETERS", der),
    });
    assert.deepEqual(new Uint8Array(out), der);
  });
});

describe("pemDecodeAll", () => {
  test("several blocks, in order, with text around and between them", () => {
    const a = derOf(10);
    const b = derOf(100);
    const c = derOf(3);
    const text = `subject=CN=x\n${pemEncode("CERTIFICATE", a)}junk in between\n${pemEncode("X509 CRL", b)}\n\n${pemEncode("PRIVATE KEY", c)}trailer`;
    const blocks = pemDecodeAll(text);
    assert.deepEqual(
      blocks.map((x) => x.label),
      ["CERTIFICATE", "X509 CRL", "PRIVATE KEY"],
    );
    assert.deepEqual(blocks[0]?.der, a);
    assert.deepEqual(blocks[1]?.der, b);
    assert.deepEqual(blocks[2]?.der, c);
  });

  test("CRLF line endings and indentation are fine", () => {
    const der = derOf(90);
    const pem = pemEncode("CERTIFICATE", der)
      .replace(/\n/g, "\r\n")
      .replace(/\r\n(?=[A-Za-z0-9+/])/g, "\r\n  ");
    assert.deepEqual(pemDecodeAll(pem)[0]?.der, der);
  });

  test("no blocks → empty list", () => assert.deepEqual(pemDecodeAll("hello"), []));

  test("a block whose END label differs is not a block", () => {
    assert.deepEqual(pemDecodeAll("-----BEGIN CERTIFICATE-----\nMAA=\n-----END X509 CRL-----\n"), []);
  });

  test("bad base64 → E_BAD_INPUT", () => {
    badInput(
      () => pemDecodeAll("-----BEGIN CERTIFICATE-----\nMII*not+base64!\n-----END CERTIFICATE-----\n"),
      /not base64/,
    );
    badInput(() => pemDecodeAll("-----BEGIN CERTIFICATE-----\nMA==MA==\n-----END CERTIFICATE-----\n"));
    badInput(() => pemDecodeAll("-----BEGIN CERTIFICATE-----\nMA===\n-----END CERTIFICATE-----\n"));
  });

  test("an empty body → E_BAD_INPUT", () => {
    badInput(() => pemDecodeAll("-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n"));
  });

  test("legacy encrypted PEM (Proc-Type/DEK-Info headers) is refused with a hint", () => {
    const legacy = [
      "-----BEGIN EC PRIVATE KEY-----",
      "Proc-Type: 4,ENCRYPTED",
      "DEK-Info: AES-256-CBC,0123456789ABCDEF0123456789ABCDEF",
      "",
      "MHcCAQEEIBx0",
      "-----END EC PRIVATE KEY-----",
      "",
    ].join("\n");
    badInput(() => pemDecodeAll(legacy), /encrypted legacy PEM .*PKCS#8/);
  });

  test("legacy encrypted PEM written by openssl is refused", () => {
    const key = execFileSync("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout"]);
    const legacy = execFileSync("openssl", ["ec", "-aes-256-cbc", "-passout", "pass:secret"], {
      input: key,
      stdio: ["pipe", "pipe", "ignore"],
    }).toString();
    assert.match(legacy, /Proc-Type: 4,ENCRYPTED/);
    badInput(() => pemDecodeAll(legacy), /encrypted legacy PEM/);
  });
});

describe("derBlocks", () => {
  const labels = ["CERTIFICATE", "TRUSTED CERTIFICATE"];

  test("PEM: keeps only the wanted labels", () => {
    const a = derOf(5);
    const b = derOf(6);
    const text =
      pemEncode("PRIVATE KEY", derOf(7)) + pemEncode("CERTIFICATE", a) + pemEncode("TRUSTED CERTIFICATE", b);
    assert.deepEqual(derBlocks(text, labels, "certificate"), [a, b]);
  });

  test("PEM given as bytes works the same", () => {
    const a = derOf(5);
    assert.deepEqual(derBlocks(Buffer.from(pemEncode("CERTIFICATE", a)), labels, "certificate"), [a]);
  });

  test("PEM without a wanted label → E_BAD_INPUT naming the labels", () => {
    badInput(
      () => derBlocks(pemEncode("PRIVATE KEY", derOf(7)), labels, "certificate"),
      /CERTIFICATE or TRUSTED CERTIFICATE/,
    );
  });

  test("DER passes through untouched (same bytes)", () => {
    const der = derOf(40);
    const out = derBlocks(der, labels, "certificate");
    assert.equal(out.length, 1);
    assert.deepEqual(out[0], der);
  });

  test("neither PEM nor DER → E_BAD_INPUT", () => {
    badInput(() => derBlocks("just text", labels, "certificate"), /neither PEM nor DER/);
    badInput(() => derBlocks(new Uint8Array([0x04, 0x00]), labels, "certificate"));
    badInput(() => derBlocks(new Uint8Array(0), labels, "certificate"));
    badInput(() => derBlocks("", labels, "certificate"));
  });

  test("bad base64 inside a wanted block → E_BAD_INPUT", () => {
    badInput(() =>
      derBlocks("-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n", labels, "certificate"),
    );
  });
});

test("toBuffer shares memory with a Uint8Array view and copies an ArrayBuffer", () => {
  const base = new Uint8Array([1, 2, 3, 4]);
  const view = base.subarray(1, 3);
  const buf = toBuffer(view);
  assert.deepEqual([...buf], [2, 3]);
  base[1] = 9;
  assert.equal(buf[0], 9);
  assert.deepEqual([...toBuffer(new Uint8Array([5, 6]).buffer)], [5, 6]);
});
