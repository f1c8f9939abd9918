import assert from "node:assert/strict";
import { hostname } from "node:os";
import { describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import { formatSan } from "../pki/names.js";
import { parseHostSan, wantedServerSans } from "./server-cert.js";

const names = (...args: Parameters<typeof wantedServerSans>) => wantedServerSans(...args).map(formatSan);

describe("the API certificate's names", () => {
  it("a loopback listener answers as localhost and its address", () => {
    assert.deepEqual(names(["127.0.0.1"], []), ["dns:localhost", "ip:127.0.0.1"]);
    assert.deepEqual(names(["::1"], []), ["dns:localhost", "ip:::1"]);
    assert.deepEqual(names(["localhost"], []), ["dns:localhost", "ip:127.0.0.1"]);
  });

  it("adds the public URL's host and --san names, once each", () => {
    assert.deepEqual(
      names(["127.0.0.1"], ["ca.acme.test", "ip:10.0.0.5", "dns:localhost"], "http://CA.acme.test:8080/x"),
      ["dns:localhost", "ip:127.0.0.1", "dns:ca.acme.test", "ip:10.0.0.5"],
    );
    assert.deepEqual(names(["ca.acme.test"], []), ["dns:ca.acme.test"]);
  });

  it("a wildcard listener answers as this machine and loopback", () => {
    const got = names(["0.0.0.0"], []);
    assert.ok(got.includes("dns:localhost") && got.includes("ip:127.0.0.1"));
    if (hostname().includes(".")) assert.ok(got.includes(`dns:${hostname().toLowerCase()}`));
  });

  it("--san takes hosts and addresses, not e-mail or URIs", () => {
    assert.deepEqual(parseHostSan("[::1]"), { type: "ip", value: "::1" });
    assert.deepEqual(parseHostSan("192.0.2.1"), { type: "ip", value: "192.0.2.1" });
    assert.throws(
      () => parseHostSan("email:a@b.test"),
      (e) => isMtlsError(e, "E_USAGE"),
    );
    assert.throws(
      () => parseHostSan("bad name"),
      (e) => isMtlsError(e, "E_BAD_SAN"),
    );
  });
});
