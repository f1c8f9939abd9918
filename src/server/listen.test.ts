import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import { formatListen, parseListen, urlFor } from "./listen.js";

describe("parseListen", () => {
  it("reads host:port, [v6]:port, :port and a bare port", () => {
    assert.deepEqual(parseListen("127.0.0.1:8443"), { host: "127.0.0.1", port: 8443 });
    assert.deepEqual(parseListen("[::1]:8443"), { host: "::1", port: 8443 });
    assert.deepEqual(parseListen("localhost:0"), { host: "localhost", port: 0 });
    assert.deepEqual(parseListen(":8080"), { host: "127.0.0.1", port: 8080 });
    assert.deepEqual(parseListen("8080"), { host: "127.0.0.1", port: 8080 });
  });

  it("refuses what is not an address", () => {
    for (const bad of ["", "host", "host:", "1.2.3.4:99999", "::1:80", "a:b"])
      assert.throws(
        () => parseListen(bad),
        (e) => isMtlsError(e, "E_USAGE"),
        bad,
      );
  });

  it("formats and makes URLs (a wildcard host is reached on loopback)", () => {
    assert.equal(formatListen({ host: "::1", port: 1 }), "[::1]:1");
    assert.equal(urlFor("https", { host: "0.0.0.0", port: 8443 }), "https://127.0.0.1:8443");
    assert.equal(urlFor("http", { host: "::", port: 80 }), "http://[::1]:80");
  });
});
