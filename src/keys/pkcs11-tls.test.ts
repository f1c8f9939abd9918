import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createSoftHsm, hasSoftHsm, type SoftHsm } from "../../test/fixtures/softhsm.js";
import { isMtlsError } from "../errors.js";
import { generatePkcs11Key } from "./pkcs11.js";
import { engineFailure, engineOpenSslConfig, tokenTlsKey } from "./pkcs11-tls.js";

const PIN = "tls-pin-4321";

describe("engine configuration and failures", () => {
  const key = {
    spki: new Uint8Array(),
    engine: "pkcs11",
    identifier: "x",
    uri: "pkcs11:token=t;object=k;type=private",
  };

  it("writes a nodejs_conf section that loads the engine with the module, and no PIN", () => {
    const conf = engineOpenSslConfig(
      "/usr/lib/softhsm/libsofthsm2.so",
      "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so",
    );
    assert.match(conf, /^nodejs_conf = mtls_node_init$/m);
    assert.match(conf, /^engine_id = pkcs11$/m);
    assert.match(conf, /^dynamic_path = \/usr\/lib\/x86_64-linux-gnu\/engines-3\/pkcs11\.so$/m);
    assert.match(conf, /^MODULE_PATH = \/usr\/lib\/softhsm\/libsofthsm2\.so$/m);
    assert.doesNotMatch(conf, /pin/i);
  });

  it("names an unregistered engine E_PKCS11_MODULE and never repeats the identifier's PIN", () => {
    const dso = Object.assign(
      new Error("error:12800067:DSO support routines::could not load the shared library"),
      {
        opensslErrorStack: ["error:13000084:engine routines::dso not found"],
      },
    );
    const e1 = engineFailure(dso, key);
    assert.equal(e1.code, "E_PKCS11_MODULE");
    assert.match(e1.message, /not registered in this process: start mtls with OPENSSL_CONF/);
    const other = engineFailure(new Error("cannot load pkcs11:token=t;object=k?pin-value=secret-pin"), key);
    assert.equal(other.code, "E_PKCS11_KEY");
    assert.ok(!other.message.includes("secret-pin"), other.message);
  });
});

describe("TLS keys in a SoftHSM token", { skip: !hasSoftHsm() && "softhsm2 is not installed" }, () => {
  let hsm: SoftHsm;
  before(() => {
    hsm = createSoftHsm();
    process.env.SOFTHSM2_CONF = hsm.conf;
    hsm.initToken("tls", PIN);
  });
  after(() => hsm?.cleanup());

  it("checks the key through pkcs11js and hands OpenSSL an identifier with the PIN, in memory only", () => {
    const made = generatePkcs11Key({
      module: hsm.module,
      uri: "pkcs11:token=tls;object=server",
      pin: PIN,
      keyType: "ec-p256",
    });
    const env = { MTLS_PKCS11_MODULE: hsm.module, MTLS_PKCS11_PIN: PIN };
    const key = tokenTlsKey("pkcs11:token=tls;object=server", { env });
    assert.deepEqual(key.spki, made.spki);
    assert.equal(key.engine, "pkcs11");
    assert.equal(key.uri, made.uri);
    assert.ok(key.identifier.startsWith(`${made.uri}?pin-value=`));
    assert.ok(key.identifier.endsWith(PIN));
    assert.ok(!key.uri.includes(PIN));
    assert.equal(
      tokenTlsKey("pkcs11:token=tls;object=server", { env: { ...env, MTLS_PKCS11_ENGINE: "other" } }).engine,
      "other",
    );
    assert.throws(
      () => tokenTlsKey("pkcs11:token=tls;object=server", { env: { MTLS_PKCS11_MODULE: hsm.module } }),
      (e: unknown) => isMtlsError(e, "E_PKCS11_PIN"),
    );
    assert.throws(
      () => tokenTlsKey("pkcs11:token=tls;object=nothing", { env }),
      (e: unknown) => isMtlsError(e, "E_PKCS11_KEY"),
    );
  });
});
