import { pemDecodeAll } from "../../pki/pem.js";
import { CertificateError } from "./errors.js";

/** The DER of every CERTIFICATE block in PEM `text`, in order. Throws CertificateError("malformed") if none. */
export function certificatesFromPem(text: string): Uint8Array[] {
  let blocks: ReturnType<typeof pemDecodeAll>;
  try {
    blocks = pemDecodeAll(text);
  } catch (err) {
    throw new CertificateError("malformed", `bad PEM: ${(err as Error).message}`, { cause: err });
  }
  const certs = blocks.filter((b) => b.label === "CERTIFICATE").map((b) => b.der);
  if (certs.length === 0) throw new CertificateError("malformed", "no CERTIFICATE block in the PEM text");
  return certs;
}
