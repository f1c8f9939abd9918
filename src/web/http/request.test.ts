import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isMtlsError } from "../../errors.js";
import { prepareRequest } from "./request.js";

const text = (b: Uint8Array) => new TextDecoder("latin1").decode(b);
const badInput = (err: unknown) => isMtlsError(err, "E_BAD_INPUT");

describe("prepareRequest", () => {
  it("writes the request line, Host and framing headers", () => {
    const r = prepareRequest("https://api.example:8443/a/b?x=1#frag", {
      method: "post",
      headers: { "X-Trace": "abc", accept: "*/*" },
      body: "héllo",
    });
    assert.equal(r.method, "POST");
    assert.equal(r.originKey, "https://api.example:8443");
    assert.equal(
      text(r.head),
      "POST /a/b?x=1 HTTP/1.1\r\nhost: api.example:8443\r\naccept: */*\r\nx-trace: abc\r\ncontent-length: 6\r\n\r\n",
    );
    assert.equal(r.idempotent, false);
    assert.equal(r.replayable, true);
  });

  it("omits the default port, sends content-length 0 for an empty POST, chunked for streams", () => {
    assert.match(
      text(prepareRequest("https://h.example/").head),
      /^GET \/ HTTP\/1\.1\r\nhost: h\.example\r\n\r\n$/,
    );
    assert.match(text(prepareRequest("http://h.example/", { method: "POST" }).head), /content-length: 0\r\n/);
    const s = prepareRequest("http://h.example/", { method: "PUT", body: new ReadableStream() });
    assert.match(text(s.head), /transfer-encoding: chunked\r\n\r\n$/);
    assert.doesNotMatch(text(s.head), /content-length/);
    assert.equal(s.replayable, false);
    assert.equal(s.idempotent, true);
  });

  it("rejects header injection and invalid names", () => {
    assert.throws(() => prepareRequest("http://h/", { headers: { "x-a": "1\r\nx-b: 2" } }), badInput);
    assert.throws(() => prepareRequest("http://h/", { headers: { "x-a": "1\nx" } }), badInput);
    assert.throws(() => prepareRequest("http://h/", { headers: { "x-a": "1\u0000" } }), badInput);
    assert.throws(() => prepareRequest("http://h/", { headers: { "bad name": "1" } }), badInput);
    assert.throws(() => prepareRequest("http://h/", { headers: { "x(y)": "1" } }), badInput);
    assert.throws(() => prepareRequest("http://h/", { headers: { "x-a": "\u0100" } }), badInput);
  });

  it("allows framing headers only when consistent", () => {
    assert.throws(() => prepareRequest("http://h.example/", { headers: { host: "evil.example" } }), badInput);
    assert.doesNotThrow(() => prepareRequest("http://h.example:81/", { headers: { host: "H.example:81" } }));
    assert.throws(
      () => prepareRequest("http://h/", { method: "POST", body: "abc", headers: { "content-length": "4" } }),
      badInput,
    );
    assert.doesNotThrow(() =>
      prepareRequest("http://h/", { method: "POST", body: "abc", headers: { "content-length": "3" } }),
    );
    assert.throws(
      () =>
        prepareRequest("http://h/", {
          method: "POST",
          body: "abc",
          headers: { "transfer-encoding": "chunked" },
        }),
      badInput,
    );
    assert.throws(
      () =>
        prepareRequest("http://h/", {
          method: "POST",
          body: new ReadableStream(),
          headers: { "transfer-encoding": "gzip, chunked" },
        }),
      badInput,
    );
    assert.throws(
      () =>
        prepareRequest("http://h/", {
          method: "POST",
          body: new ReadableStream(),
          headers: { "content-length": "3" },
        }),
      badInput,
    );
    assert.throws(() => prepareRequest("http://h/", { headers: { connection: "upgrade" } }), badInput);
    assert.throws(() => prepareRequest("http://h/", { headers: { upgrade: "websocket" } }), badInput);
    assert.throws(() => prepareRequest("http://h/", { headers: { expect: "something" } }), badInput);
    const c = prepareRequest("http://h/", { headers: { connection: "Close" } });
    assert.equal(c.wantsClose, true);
    assert.equal(text(c.head).match(/connection/gi)?.length, 1);
  });

  it("rejects bad methods, bodies on GET/HEAD, odd URLs and body types", () => {
    assert.throws(() => prepareRequest("http://h/", { method: "GE T" }), badInput);
    assert.throws(() => prepareRequest("http://h/", { method: "CONNECT" }), badInput);
    assert.throws(() => prepareRequest("http://h/", { body: "x" }), badInput);
    assert.throws(() => prepareRequest("http://h/", { method: "HEAD", body: "x" }), badInput);
    assert.throws(() => prepareRequest("ftp://h/"), badInput);
    assert.throws(() => prepareRequest("http://u:p@h/"), badInput);
    assert.throws(() => prepareRequest("not a url"), badInput);
    assert.throws(
      () => prepareRequest("http://h/", { method: "POST", body: 42 as unknown as string }),
      badInput,
    );
  });
});
