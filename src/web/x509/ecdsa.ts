/**
 * ECDSA signature formats: WebCrypto speaks raw r||s (each integer left-padded to the curve's size),
 * TLS and X.509 carry Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } in DER.
 */

import { children, concat, encodeTlv, MalformedDer, readOnly, unsignedInteger } from "./der.js";
import { CertificateError } from "./errors.js";

function derPositive(magnitude: Uint8Array): Uint8Array {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  const body = (trimmed[0] as number) & 0x80 ? concat(new Uint8Array([0]), trimmed) : trimmed;
  return encodeTlv(0x02, body);
}

/** Raw r||s (as WebCrypto's ECDSA sign returns it) to DER; the halves are equal in length. */
export function ecdsaRawToDer(raw: Uint8Array): Uint8Array {
  if (raw.length === 0 || raw.length % 2 !== 0 || raw.length > 264) {
    throw new CertificateError("malformed", `raw ECDSA signature of odd or bad length ${raw.length}`);
  }
  const half = raw.length / 2;
  return encodeTlv(0x30, concat(derPositive(raw.subarray(0, half)), derPositive(raw.subarray(half))));
}

/**
 * DER Ecdsa-Sig-Value to raw r||s, `size` bytes for each of r and s (32 for P-256, 48 for P-384,
 * 66 for P-521), so the result is 2 * size bytes. Strict DER: a bad length, trailing bytes, a negative,
 * zero, non-minimal or too large integer throws CertificateError("malformed").
 */
export function ecdsaDerToRaw(der: Uint8Array, size: number): Uint8Array {
  if (!Number.isInteger(size) || size <= 0 || size > 132) {
    throw new CertificateError("malformed", `bad ECDSA integer size ${size}`);
  }
  try {
    const seq = readOnly(der, 0x30);
    const parts = children(seq.value);
    if (parts.length !== 2) throw new MalformedDer("Ecdsa-Sig-Value must hold exactly two INTEGERs");
    const out = new Uint8Array(size * 2);
    parts.forEach((part, i) => {
      if (part.tag !== 0x02) throw new MalformedDer("Ecdsa-Sig-Value part is not an INTEGER");
      const magnitude = unsignedInteger(part.value);
      if (magnitude.length > size) throw new MalformedDer("ECDSA integer larger than the curve");
      if (magnitude.every((b) => b === 0)) throw new MalformedDer("ECDSA integer is zero");
      out.set(magnitude, i * size + size - magnitude.length);
    });
    return out;
  } catch (err) {
    if (err instanceof MalformedDer) {
      throw new CertificateError("malformed", `malformed ECDSA signature: ${err.message}`, { cause: err });
    }
    throw err;
  }
}
