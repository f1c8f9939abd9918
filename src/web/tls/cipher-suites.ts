/**
 * TLS 1.3 cipher suites: AEAD + HKDF hash. AES-GCM runs in WebCrypto; ChaCha20-Poly1305 has no
 * WebCrypto algorithm and runs in our own TypeScript (chacha20-poly1305.ts: 140-240 MB/s on 16 KiB
 * records, `node --import tsx bench/web-aead.ts`), so it is offered after the AES-GCM suites.
 */
import { AES_128_GCM, AES_256_GCM, type AeadAlgorithm } from "./aead.js";
import { CHACHA20_POLY1305, CHACHA20_POLY1305_AVAILABLE } from "./chacha20-poly1305.js";

export type CipherSuiteName =
  | "TLS_AES_128_GCM_SHA256"
  | "TLS_AES_256_GCM_SHA384"
  | "TLS_CHACHA20_POLY1305_SHA256";

export interface CipherSuite {
  id: number;
  name: CipherSuiteName;
  hash: "SHA-256" | "SHA-384";
  hashLength: number;
  aead: AeadAlgorithm;
}

const suites = new Map<CipherSuiteName, CipherSuite>([
  [
    "TLS_AES_128_GCM_SHA256",
    { id: 0x1301, name: "TLS_AES_128_GCM_SHA256", hash: "SHA-256", hashLength: 32, aead: AES_128_GCM },
  ],
  [
    "TLS_AES_256_GCM_SHA384",
    { id: 0x1302, name: "TLS_AES_256_GCM_SHA384", hash: "SHA-384", hashLength: 48, aead: AES_256_GCM },
  ],
]);
// Only on little-endian hosts (every browser platform in use): the implementation reads words in place.
if (CHACHA20_POLY1305_AVAILABLE) {
  const name = "TLS_CHACHA20_POLY1305_SHA256";
  suites.set(name, { id: 0x1303, name, hash: "SHA-256", hashLength: 32, aead: CHACHA20_POLY1305 });
}

export function cipherSuiteByName(name: string): CipherSuite | undefined {
  return suites.get(name as CipherSuiteName);
}

export function cipherSuiteById(id: number): CipherSuite | undefined {
  for (const s of suites.values()) if (s.id === id) return s;
  return undefined;
}

export const DEFAULT_CIPHER_SUITES: CipherSuiteName[] = [
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  ...(CHACHA20_POLY1305_AVAILABLE ? (["TLS_CHACHA20_POLY1305_SHA256"] as const) : []),
];
