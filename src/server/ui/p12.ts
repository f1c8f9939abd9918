import { type KeyObject, randomInt } from "node:crypto";
import { pkcs8Of } from "../../pki/keys.js";
import { buildPkcs12 } from "../../pki/pkcs12.js";

/** Letters and digits nobody confuses when reading them off a screen (no 0/O, 1/l/I). */
const ALPHABET = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/**
 * A password to read off the screen and type once: 20 characters from 55 (~115 bits), in groups of
 * four joined by dashes so it can be typed on a phone without losing one's place.
 */
export function generateP12Password(): string {
  const chars = Array.from({ length: 20 }, () => ALPHABET[randomInt(ALPHABET.length)]);
  return [0, 4, 8, 12, 16].map((i) => chars.slice(i, i + 4).join("")).join("-");
}

export interface PersonalP12 {
  privateKey: KeyObject;
  /** The leaf first, then the intermediate (PKI-PROFILE.md "PKCS#12 for people"). */
  certificates: Uint8Array[];
  name: string;
  password: string;
  /** 3DES + SHA-1 MAC, for older Windows and macOS (PKI-PROFILE.md); else AES-256 + SHA-256. */
  legacy: boolean;
}

/** The .p12 a person installs: key, leaf, intermediate, friendlyName and localKeyID. */
export function personalP12(p: PersonalP12): Uint8Array {
  return buildPkcs12({
    privateKey: pkcs8Of(p.privateKey),
    certificates: p.certificates,
    friendlyName: p.name,
    password: p.password,
    legacy: p.legacy,
  });
}

export const P12_TYPE = "application/x-pkcs12";
