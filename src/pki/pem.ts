import { MtlsError } from "../errors.js";
import { base64Decode, base64Encode, latin1Decode } from "./base64.js";

/** One PEM block: its label ("CERTIFICATE", "X509 CRL", ...) and the DER it carries. */
export interface PemBlock {
  label: string;
  der: Uint8Array;
}

const PEM_RE = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

export function pemEncode(label: string, der: Uint8Array): string {
  const b64 = base64Encode(der);
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** Every PEM block in `text`, in order. Throws E_BAD_INPUT on a block whose body is not base64. */
export function pemDecodeAll(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(PEM_RE)) {
    const label = m[1] as string;
    const body = (m[2] as string).replace(/\s+/g, "");
    if (body.includes(":")) {
      throw new MtlsError(
        "E_BAD_INPUT",
        `encrypted legacy PEM (${label}) is not supported; convert it to PKCS#8`,
      );
    }
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length === 0) {
      throw new MtlsError("E_BAD_INPUT", `malformed PEM block "${label}": the body is not base64`);
    }
    blocks.push({ label, der: base64Decode(body) });
  }
  return blocks;
}

/** The DER blocks with one of `labels`, from PEM text or (when `data` is not PEM) the raw DER itself. */
export function derBlocks(data: Uint8Array | string, labels: string[], what: string): Uint8Array[] {
  const text = typeof data === "string" ? data : latin1Decode(data);
  if (text.includes("-----BEGIN ")) {
    const found = pemDecodeAll(text).filter((b) => labels.includes(b.label));
    if (found.length === 0) {
      throw new MtlsError(
        "E_BAD_INPUT",
        `no ${what} found (expected a PEM block labelled ${labels.join(" or ")})`,
      );
    }
    return found.map((b) => b.der);
  }
  if (typeof data === "string" || data.length === 0 || data[0] !== 0x30) {
    throw new MtlsError("E_BAD_INPUT", `not a ${what}: neither PEM nor DER`);
  }
  return [data];
}

/** Node callers only (uses the Buffer global when called; browsers never call it). */
export function toBuffer(data: Uint8Array | ArrayBuffer): Buffer {
  return data instanceof ArrayBuffer
    ? Buffer.from(data)
    : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
