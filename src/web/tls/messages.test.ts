import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TlsAlertError } from "./alerts.js";
import { Writer } from "./bytes.js";
import {
  decodeCertificate,
  decodeCertificateRequest,
  decodeEncryptedExtensions,
  decodeKeyUpdate,
  Ext,
  HandshakeBuffer,
  handshakeMessage,
} from "./messages.js";

function alertOf(fn: () => unknown): number {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof TlsAlertError, String(err));
    return err.alert;
  }
  assert.fail("no alert");
}

const exts = (...list: Array<[number, Uint8Array]>) =>
  new Writer()
    .vector(2, (w) => {
      for (const [t, d] of list) w.u16(t).vector(2, (x) => x.bytes(d));
    })
    .finish();

describe("handshake messages", () => {
  it("reassembles messages from 1-byte fragments and splits coalesced ones", () => {
    const a = handshakeMessage(8, new Uint8Array(300).fill(1));
    const b = handshakeMessage(20, new Uint8Array(32).fill(2));
    const hs = new HandshakeBuffer();
    const wire = Buffer.concat([a, b]);
    const got: number[] = [];
    for (const byte of wire) {
      hs.push(new Uint8Array([byte]));
      for (let m = hs.next(); m; m = hs.next()) got.push(m.type, m.body.length);
    }
    assert.deepEqual(got, [8, 300, 20, 32]);
    assert.equal(hs.pending, false);
    assert.equal(
      alertOf(() => hs.push(new Uint8Array(0))),
      10,
    );
  });

  it("EncryptedExtensions: ALPN must be offered, unoffered extensions and misplaced ones are refused", () => {
    const alpn = (name: string) =>
      new Writer().vector(2, (l) => l.vector(1, (n) => n.bytes(new TextEncoder().encode(name)))).finish();
    const offered = new Set<number>([Ext.alpn, Ext.supported_groups, Ext.key_share, Ext.supported_versions]);
    assert.deepEqual(decodeEncryptedExtensions(exts([Ext.alpn, alpn("h2")]), offered, ["h2"]), {
      alpn: "h2",
    });
    assert.equal(
      alertOf(() => decodeEncryptedExtensions(exts([Ext.alpn, alpn("x")]), offered, ["h2"])),
      47,
    );
    assert.equal(
      alertOf(() => decodeEncryptedExtensions(exts([Ext.server_name, new Uint8Array(0)]), offered, [])),
      110,
    );
    assert.equal(
      alertOf(() => decodeEncryptedExtensions(exts([Ext.key_share, new Uint8Array(0)]), offered, [])),
      47,
    );
    assert.equal(
      alertOf(() =>
        decodeEncryptedExtensions(exts([Ext.alpn, alpn("h2")], [Ext.alpn, alpn("h2")]), offered, ["h2"]),
      ),
      47,
    );
    assert.equal(
      alertOf(() => decodeEncryptedExtensions(new Uint8Array([0, 5, 0]), offered, [])),
      50,
    );
  });

  it("CertificateRequest needs signature_algorithms; Certificate entries may carry no unrequested extension", () => {
    const sigs = new Writer().vector(2, (l) => l.u16(0x0403)).finish();
    const cr = new Writer()
      .vector(1, () => {})
      .bytes(exts([Ext.signature_algorithms, sigs]))
      .finish();
    assert.deepEqual(decodeCertificateRequest(cr).signatureSchemes, [0x0403]);
    const noSigs = new Writer()
      .vector(1, () => {})
      .bytes(exts())
      .finish();
    assert.equal(
      alertOf(() => decodeCertificateRequest(noSigs)),
      109,
    );
    const cert = (entryExts: Uint8Array) =>
      new Writer()
        .vector(1, () => {})
        .vector(3, (l) => l.vector(3, (c) => c.bytes(new Uint8Array([0x30, 0]))).bytes(entryExts))
        .finish();
    assert.equal(decodeCertificate(cert(exts())).certificates.length, 1);
    assert.equal(
      alertOf(() => decodeCertificate(cert(exts([Ext.status_request, new Uint8Array(3)])))),
      110,
    );
  });

  it("KeyUpdate is exactly one byte, 0 or 1", () => {
    assert.equal(decodeKeyUpdate(new Uint8Array([1])), true);
    assert.equal(decodeKeyUpdate(new Uint8Array([0])), false);
    assert.equal(
      alertOf(() => decodeKeyUpdate(new Uint8Array([2]))),
      47,
    );
    assert.equal(
      alertOf(() => decodeKeyUpdate(new Uint8Array([0, 0]))),
      50,
    );
  });
});
