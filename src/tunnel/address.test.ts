import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import {
  connectOptions,
  formatAddress,
  isHostName,
  isLoopback,
  listenOptions,
  parseAddress,
} from "./address.js";

describe("parseAddress", () => {
  it("parses host:port, [v6]:port, :port and unix:/path", () => {
    assert.deepEqual(parseAddress("127.0.0.1:5900"), { kind: "tcp", host: "127.0.0.1", port: 5900 });
    assert.deepEqual(parseAddress("[::1]:443"), { kind: "tcp", host: "::1", port: 443 });
    assert.deepEqual(parseAddress("VNC.Acme.test:5901"), { kind: "tcp", host: "vnc.acme.test", port: 5901 });
    assert.deepEqual(parseAddress(":5901", "--listen", { allowAnyHost: true }), {
      kind: "tcp",
      host: "",
      port: 5901,
    });
    assert.deepEqual(parseAddress("unix:/run/app.sock"), { kind: "unix", path: "/run/app.sock" });
    assert.deepEqual(parseAddress("127.0.0.1:0", "--listen", { allowPortZero: true }).kind, "tcp");
  });

  it("refuses malformed addresses with a usage error naming the flag", () => {
    for (const bad of [
      "",
      "5900",
      "host",
      "::1:5900",
      "[::1]",
      "[127.0.0.1]:80",
      "host:port",
      "host:70000",
      "host:0",
      ":5900",
      "unix:",
      "bad_host!:80",
      "host:-1",
    ]) {
      assert.throws(
        () => parseAddress(bad, "--target"),
        (err) => isMtlsError(err, "E_USAGE") && err.message.includes("--target"),
        bad,
      );
    }
  });

  it("formats back to the same text", () => {
    for (const t of ["127.0.0.1:5900", "[::1]:443", "unix:/tmp/x.sock", "example.test:80"]) {
      assert.equal(formatAddress(parseAddress(t)), t);
    }
  });
});

describe("isLoopback", () => {
  it("knows loopback from the rest", () => {
    const yes = ["127.0.0.1:1", "127.8.9.10:1", "[::1]:1", "localhost:1", "[::ffff:127.0.0.1]:1", "unix:/x"];
    const no = ["10.0.0.1:1", "[::2]:1", "example.test:1", "[::ffff:10.0.0.1]:1", "0.0.0.0:1", "[::]:1"];
    for (const t of yes) assert.equal(isLoopback(parseAddress(t)), true, t);
    for (const t of no) assert.equal(isLoopback(parseAddress(t)), false, t);
    assert.equal(isLoopback(parseAddress(":1", "x", { allowAnyHost: true })), false);
  });
});

describe("socket options", () => {
  it("maps to net listen and connect options", () => {
    assert.deepEqual(listenOptions(parseAddress(":80", "x", { allowAnyHost: true })), { port: 80 });
    assert.deepEqual(listenOptions(parseAddress("[::1]:80")), { host: "::1", port: 80 });
    assert.deepEqual(listenOptions(parseAddress("unix:/s")), { path: "/s" });
    assert.deepEqual(connectOptions(parseAddress("a.test:80")), { host: "a.test", port: 80 });
    assert.deepEqual(connectOptions(parseAddress("unix:/s")), { path: "/s" });
    assert.equal(isHostName(parseAddress("a.test:80")), true);
    assert.equal(isHostName(parseAddress("10.1.1.1:80")), false);
  });
});
