import assert from "node:assert/strict";
import { createPublicKey, verify } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { createSoftHsm, hasSoftHsm, pkcs11Tool, type SoftHsm } from "../../test/fixtures/softhsm.js";
import { isMtlsError } from "../errors.js";
import { keyTypeOf } from "../pki/keys.js";
import {
  ecdsaRawToDer,
  generatePkcs11Key,
  listPkcs11,
  openOrGeneratePkcs11Key,
  openPkcs11Signer,
} from "./pkcs11.js";
import { Pkcs11Module, pkcs11Failure, requirePin, resolveModulePath, resolvePin } from "./pkcs11-module.js";
import { parsePkcs11Uri } from "./pkcs11-uri.js";

const PIN = "user-1234";

describe("ecdsaRawToDer", () => {
  it("encodes r||s as a DER ECDSA-Sig-Value, with sign bytes and without leading zeros", () => {
    const raw = new Uint8Array(64);
    raw[0] = 0x80; // r needs a 00 sign byte
    raw[63] = 0x05; // s is 5 after its leading zeros
    const der = Buffer.from(ecdsaRawToDer(raw));
    assert.equal(der.toString("hex"), `3026022100${"80".padEnd(64, "0")}020105`);
  });
});

describe("PIN and module resolution", () => {
  it("takes the PIN from --pin-file, then MTLS_PKCS11_PIN, never from a URI", () => {
    assert.equal(resolvePin({ env: { MTLS_PKCS11_PIN: "1234" } }), "1234");
    assert.equal(resolvePin({ env: {} }), undefined);
    assert.throws(
      () => requirePin({ env: {} }),
      (e: unknown) => isMtlsError(e, "E_PKCS11_PIN"),
    );
    assert.throws(
      () => resolvePin({ env: {} }, parsePkcs11Uri("pkcs11:object=a?pin-value=1234")),
      (e: unknown) => isMtlsError(e, "E_USAGE") && !e.message.includes("1234"),
    );
    assert.throws(
      () => resolvePin({ file: "/nonexistent/pin", env: {} }),
      (e: unknown) => isMtlsError(e, "E_PKCS11_PIN"),
    );
    assert.throws(
      () => resolveModulePath(undefined, undefined, {}),
      (e: unknown) => isMtlsError(e, "E_PKCS11_MODULE"),
    );
    assert.equal(resolveModulePath(undefined, undefined, { MTLS_PKCS11_MODULE: "/x.so" }), "/x.so");
  });

  it("maps PKCS#11 return values to codes a person can act on", () => {
    const ckr = (name: string) => Object.assign(new Error(name));
    assert.equal(pkcs11Failure(ckr("CKR_PIN_INCORRECT"), "login").code, "E_PKCS11_PIN");
    assert.equal(pkcs11Failure(ckr("CKR_PIN_LOCKED"), "login").code, "E_PKCS11_LOCKED");
    assert.equal(pkcs11Failure(ckr("CKR_KEY_FUNCTION_NOT_PERMITTED"), "signing").code, "E_PKCS11_KEY");
    assert.equal(pkcs11Failure(ckr("CKR_DEVICE_ERROR"), "signing").code, "E_PKCS11_TOKEN");
  });

  it("refuses a module that does not exist or is not a PKCS#11 library", () => {
    assert.throws(
      () => Pkcs11Module.load("/nonexistent/libpkcs11.so"),
      (e: unknown) => isMtlsError(e, "E_PKCS11_MODULE"),
    );
    assert.throws(
      () => Pkcs11Module.load("/etc/hostname"),
      (e: unknown) => isMtlsError(e, "E_PKCS11_MODULE"),
    );
  });
});

describe("keys in a SoftHSM token", { skip: !hasSoftHsm() && "softhsm2 is not installed" }, () => {
  let hsm: SoftHsm;
  let module: string;
  before(() => {
    hsm = createSoftHsm();
    // SoftHSM reads SOFTHSM2_CONF at C_Initialize, the first time this process loads the module.
    process.env.SOFTHSM2_CONF = hsm.conf;
    hsm.initToken("mtls", PIN);
    hsm.initToken("other", PIN);
    hsm.initToken("fresh", PIN);
    module = hsm.module;
  });
  after(() => hsm?.cleanup());

  const verifies = (spki: Uint8Array, hash: string, data: Buffer, sig: Uint8Array) =>
    verify(hash, data, createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" }), sig);

  for (const [keyType, hash] of [
    ["ec-p256", "sha256"],
    ["ec-p384", "sha384"],
    ["rsa-2048", "sha256"],
  ] as const) {
    it(`generates a ${keyType} key that signs in the token and never leaves it`, async () => {
      const uri = `pkcs11:token=mtls;object=key-${keyType}`;
      const signer = generatePkcs11Key({ module, uri, pin: PIN, keyType });
      assert.equal(signer.keyType, keyType);
      assert.equal(
        keyTypeOf(createPublicKey({ key: Buffer.from(signer.spki), format: "der", type: "spki" })),
        keyType,
      );
      assert.match(
        signer.uri,
        new RegExp(`^pkcs11:token=mtls;object=key-${keyType};id=(%[0-9a-f]{2}){8};type=private$`),
      );
      const data = Buffer.from(`to be signed by ${keyType}`);
      const sig = await signer.sign(data);
      assert.equal(verifies(signer.spki, hash, data, sig), true);
      assert.equal(verifies(signer.spki, hash, Buffer.from("other data"), sig), false);

      const again = openPkcs11Signer({ module, uri: signer.uri, pin: PIN });
      assert.deepEqual(again.spki, signer.spki);
      assert.equal(verifies(again.spki, hash, data, await again.sign(data)), true);

      const listed = listPkcs11(module, PIN, parsePkcs11Uri("pkcs11:token=mtls"))
        .flatMap((s) => s.objects ?? [])
        .find((o) => o.class === "private" && o.label === `key-${keyType}`);
      assert.deepEqual(
        { keyType: listed?.keyType, sensitive: listed?.sensitive, extractable: listed?.extractable },
        { keyType, sensitive: true, extractable: false },
      );
    });
  }

  it("pkcs11-tool sees the generated key as sensitive and never extractable", () => {
    generatePkcs11Key({ module, uri: "pkcs11:token=mtls;object=checked", pin: PIN, keyType: "ec-p256" });
    const text = pkcs11Tool(hsm, [
      "--token-label",
      "mtls",
      "--login",
      "--pin",
      PIN,
      "-O",
      "--label",
      "checked",
    ]);
    const priv = text.slice(text.indexOf("Private Key Object"));
    assert.match(priv, /Access:\s+sensitive, always sensitive, never extractable/);
  });

  it("uses an existing key, or generates one when the URI names none", () => {
    const first = openOrGeneratePkcs11Key({
      module,
      uri: "pkcs11:token=mtls;object=ca",
      pin: PIN,
      keyType: "ec-p384",
    });
    assert.equal(first.generated, true);
    const second = openOrGeneratePkcs11Key({
      module,
      uri: "pkcs11:token=mtls;object=ca",
      pin: PIN,
      keyType: "ec-p256",
    });
    assert.equal(second.generated, false);
    assert.equal(second.keyType, "ec-p384");
    assert.deepEqual(second.spki, first.spki);
    assert.throws(
      () =>
        openOrGeneratePkcs11Key({
          module,
          uri: "pkcs11:token=mtls;object=ca",
          pin: PIN,
          keyType: "ec-p256",
          keyTypeExplicit: true,
        }),
      (e: unknown) => isMtlsError(e, "E_PKCS11_KEY") && /is ec-p384, not the ec-p256/.test(e.message),
    );
  });

  it("refuses keys of the wrong type and URIs that name no key or no token", () => {
    pkcs11Tool(hsm, [
      "--token-label",
      "mtls",
      "--login",
      "--pin",
      PIN,
      "--keypairgen",
      "--key-type",
      "EC:secp256k1",
      "--label",
      "k1",
    ]);
    assert.throws(
      () => openPkcs11Signer({ module, uri: "pkcs11:token=mtls;object=k1", pin: PIN }),
      (e: unknown) => isMtlsError(e, "E_PKCS11_KEY") && /unsupported curve/.test(e.message),
    );
    assert.throws(
      () => openPkcs11Signer({ module, uri: "pkcs11:token=mtls;object=absent", pin: PIN }),
      (e: unknown) => isMtlsError(e, "E_PKCS11_KEY") && /no private key matches/.test(e.message),
    );
    assert.throws(
      () => openPkcs11Signer({ module, uri: "pkcs11:token=mtls", pin: PIN }),
      (e: unknown) => isMtlsError(e, "E_USAGE"),
    );
    assert.throws(
      () => openPkcs11Signer({ module, uri: "pkcs11:token=missing;object=ca", pin: PIN }),
      (e: unknown) =>
        isMtlsError(e, "E_PKCS11_TOKEN") && /no initialized token matches token="missing"/.test(e.message),
    );
    assert.throws(
      () => openPkcs11Signer({ module, uri: "pkcs11:object=ca", pin: PIN }),
      (e: unknown) => isMtlsError(e, "E_PKCS11_TOKEN") && /3 tokens match/.test(e.message),
    );
  });

  it("refuses a wrong PIN with E_PKCS11_PIN", () => {
    assert.throws(
      () => openPkcs11Signer({ module, uri: "pkcs11:token=fresh;object=ca", pin: "wrong-pin" }),
      (e: unknown) =>
        isMtlsError(e, "E_PKCS11_PIN") &&
        /wrong PIN on token "fresh" \(CKR_PIN_INCORRECT\)/.test(e.message) &&
        !e.message.includes("wrong-pin"),
    );
    // "other" is logged in already: another PIN is still refused.
    generatePkcs11Key({ module, uri: "pkcs11:token=other;object=ca", pin: PIN, keyType: "ec-p256" });
    assert.throws(
      () => openPkcs11Signer({ module, uri: "pkcs11:token=other;object=ca", pin: "wrong-pin" }),
      (e: unknown) =>
        isMtlsError(e, "E_PKCS11_PIN") &&
        /wrong PIN on token "other"/.test(e.message) &&
        !e.message.includes("wrong-pin"),
    );
    const listing = listPkcs11(module, "wrong-pin").find((s) => s.token?.label === "other");
    assert.equal(listing?.error?.code, "E_PKCS11_PIN");
  });

  it("signs many requests at once, one operation at a time on the session", async () => {
    const signer = generatePkcs11Key({
      module,
      uri: "pkcs11:token=mtls;object=busy",
      pin: PIN,
      keyType: "ec-p256",
    });
    const messages = Array.from({ length: 64 }, (_, i) => Buffer.from(`message ${i}`));
    const sigs = await Promise.all(messages.map((m) => signer.sign(m)));
    sigs.forEach((sig, i) => {
      assert.equal(verifies(signer.spki, "sha256", messages[i] as Buffer, sig), true, `signature ${i}`);
    });
  });

  it("logs in once per process and token, and reopens the session once when the token resets", async () => {
    const signer = generatePkcs11Key({
      module,
      uri: "pkcs11:token=mtls;object=reset",
      pin: PIN,
      keyType: "ec-p256",
    });
    const mod = Pkcs11Module.load(module);
    const session = mod.session(parsePkcs11Uri("pkcs11:token=mtls"), PIN);
    assert.equal(openPkcs11Signer({ module, uri: signer.uri, pin: PIN }) !== undefined, true);
    assert.equal(mod.session(parsePkcs11Uri("pkcs11:token=mtls"), PIN), session, "one session per token");
    const before = session.generation;
    // Every session of the slot goes away, as when a token is reset or pulled and put back.
    mod.lib.C_CloseAllSessions(mod.findSlot(parsePkcs11Uri("pkcs11:token=mtls")).slot);
    const data = Buffer.from("after the reset");
    assert.equal(verifies(signer.spki, "sha256", data, await signer.sign(data)), true);
    assert.equal(session.generation, before + 1);
  });
});
