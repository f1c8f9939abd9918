import type { KeyObject } from "node:crypto";
import { readFileOrThrow, writeFileAtomic } from "../config/files.js";
import { decryptPrivateKey, encryptPrivateKey } from "../pki/key-encryption.js";
import { pkcs8Of, privateKeyFromPkcs8 } from "../pki/keys.js";
import { keyObjectSigner, type Signer } from "../pki/signer.js";

/** Writes a private key encrypted at rest (PKCS#8, PBES2 scrypt + AES-256-CBC), mode 0600, atomically. */
export function saveEncryptedKey(path: string, key: KeyObject, passphrase: string, overwrite = false): void {
  writeFileAtomic(path, encryptPrivateKey(pkcs8Of(key), passphrase), { mode: 0o600, overwrite });
}

export function loadEncryptedKey(path: string, passphrase: string): KeyObject {
  const pem = readFileOrThrow(path, "encrypted key").toString("utf8");
  return privateKeyFromPkcs8(decryptPrivateKey(pem, passphrase));
}

/** A Signer over an encrypted key file: decrypted once, held in memory for the life of the process. */
export function loadSoftwareSigner(path: string, passphrase: string): Signer {
  return keyObjectSigner(loadEncryptedKey(path, passphrase));
}
