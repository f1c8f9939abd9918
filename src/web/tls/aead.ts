/**
 * The AEAD a cipher suite protects records with, as a small interface so an implementation outside
 * WebCrypto (e.g. a pure-TS ChaCha20-Poly1305) can be plugged in. AES-GCM comes from WebCrypto.
 */

/** WebCrypto wants ArrayBuffer-backed views; every buffer this client makes or receives is one. */
export function bs(u: Uint8Array): Uint8Array<ArrayBuffer> {
  return u as Uint8Array<ArrayBuffer>;
}

export interface Aead {
  /** Returns ciphertext || tag. */
  seal(nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array>;
  /** Returns the plaintext, or null if the tag does not verify. */
  open(nonce: Uint8Array, aad: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array | null>;
}

export interface AeadAlgorithm {
  keyLength: number;
  /** Authentication tag length in bytes (16 for every TLS 1.3 suite). */
  tagLength: number;
  create(key: Uint8Array): Promise<Aead>;
}

function aesGcm(keyLength: 16 | 32): AeadAlgorithm {
  return {
    keyLength,
    tagLength: 16,
    async create(rawKey) {
      const key = await globalThis.crypto.subtle.importKey("raw", bs(rawKey), { name: "AES-GCM" }, false, [
        "encrypt",
        "decrypt",
      ]);
      return {
        async seal(nonce, aad, plaintext) {
          const out = await globalThis.crypto.subtle.encrypt(
            { name: "AES-GCM", iv: bs(nonce), additionalData: bs(aad), tagLength: 128 },
            key,
            bs(plaintext),
          );
          return new Uint8Array(out);
        },
        async open(nonce, aad, ciphertext) {
          try {
            const out = await globalThis.crypto.subtle.decrypt(
              { name: "AES-GCM", iv: bs(nonce), additionalData: bs(aad), tagLength: 128 },
              key,
              bs(ciphertext),
            );
            return new Uint8Array(out);
          } catch {
            return null;
          }
        },
      };
    },
  };
}

export const AES_128_GCM = aesGcm(16);
export const AES_256_GCM = aesGcm(32);
