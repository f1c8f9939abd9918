/**
 * PKCS#12 (RFC 7292) files for people: a private key, its certificate and the chain, protected
 * by one password, for browsers, OS key stores, Java and NSS.
 *
 * Layout (as `openssl pkcs12 -export` writes it):
 *   PFX { version 3, authSafe: Data(AuthenticatedSafe), macData }
 *   AuthenticatedSafe = [ EncryptedData(SafeContents of certBags), Data(SafeContents of the
 *                         pkcs8ShroudedKeyBag) ]
 * The key bag and the leaf's cert bag carry the same friendlyName and localKeyID (SHA-1 of the
 * leaf DER); chain certificates carry no attributes.
 *
 * Modern (default): PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for key and certificates, HMAC-SHA256
 * MAC. Legacy: pbeWithSHAAnd3-KeyTripleDES-CBC for both and an HMAC-SHA1 MAC, for older Windows
 * and macOS. The MAC key always comes from the RFC 7292 appendix B KDF; PBES2 uses the UTF-8
 * password, the PKCS#12 KDF a BMPString one.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  hash as cryptoHash,
  randomBytes,
  timingSafeEqual,
  X509Certificate,
} from "node:crypto";
import {
  ContentInfo,
  EncryptedContent,
  EncryptedContentInfo,
  id_data,
  id_encryptedData,
} from "@peculiar/asn1-cms";
import {
  AuthenticatedSafe,
  CertBag,
  id_certBag,
  id_keyBag,
  id_pkcs8ShroudedKeyBag,
  id_x509Certificate,
  MacData,
  PFX,
  PKCS12Attribute,
  SafeBag,
  SafeContents,
} from "@peculiar/asn1-pfx";
import { EncryptedData, EncryptedPrivateKeyInfo } from "@peculiar/asn1-pkcs8";
import { AsnConvert, AsnProp, AsnPropTypes, AsnType, AsnTypeTypes, OctetString } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier } from "@peculiar/asn1-x509";
import { MtlsError } from "../errors.js";
import { describePbes2, isPrivateKeyInfo, OID_PBES2, pbes2Decrypt, pbes2Encrypt } from "./key-encryption.js";

export interface Pkcs12Contents {
  /** PKCS#8 PrivateKeyInfo DER, unencrypted. */
  privateKey?: Uint8Array;
  /** DER certificates, leaf first, in file order otherwise. */
  certificates: Uint8Array[];
  friendlyName?: string;
}

export interface BuildPkcs12Options {
  /** PKCS#8 PrivateKeyInfo DER. */
  privateKey: Uint8Array;
  /** DER certificates: the leaf (matching privateKey) first, then its chain. */
  certificates: Uint8Array[];
  friendlyName: string;
  password: string;
  /** pbeWithSHAAnd3-KeyTripleDES-CBC + SHA-1 MAC instead of PBES2/AES-256 + SHA-256 MAC. */
  legacy?: boolean;
  /** PBKDF2 / PKCS#12 KDF iterations for the key, the certificates and the MAC. */
  iterations?: number;
}

/**
 * 2048: OpenSSL 3's PKCS12_DEFAULT_ITER for `pkcs12 -export`, for encryption and MAC alike, so
 * every reader that takes OpenSSL's files takes ours at the same cost. Raising only the PBES2
 * count would buy nothing: the MAC uses the same password, and an attacker guesses against the
 * cheapest. NSS 3.87 writes 600000, but the MAC (and legacy 3DES) key comes from the RFC 7292 KDF,
 * which has no native implementation here: at 600000 our loop costs ~0.4 s per derivation, paid
 * on every build and parse. A PKCS#12 is a transport wrapper; callers wanting more pass `iterations`.
 */
const DEFAULT_ITERATIONS = 2048;
const MAX_ITERATIONS = 10_000_000; // refuse files that would keep us busy for minutes

const OID_FRIENDLY_NAME = "1.2.840.113549.1.9.20";
const OID_LOCAL_KEY_ID = "1.2.840.113549.1.9.21";
const OID_SHA1 = "1.3.14.3.2.26";
const OID_SHA256 = "2.16.840.1.101.3.4.2.1";

/** MAC digests; `block` is the hash's input block size, the KDF's `v` (RFC 7292 B.2). */
const HASHES: Record<string, { name: string; label: string; block: number }> = {
  [OID_SHA1]: { name: "sha1", label: "SHA-1", block: 64 },
  "2.16.840.1.101.3.4.2.4": { name: "sha224", label: "SHA-224", block: 64 },
  [OID_SHA256]: { name: "sha256", label: "SHA-256", block: 64 },
  "2.16.840.1.101.3.4.2.2": { name: "sha384", label: "SHA-384", block: 128 },
  "2.16.840.1.101.3.4.2.3": { name: "sha512", label: "SHA-512", block: 128 },
};

/** PKCS#12 password-based encryption schemes (RFC 7292 appendix C), all with SHA-1 in the KDF. */
const OID_PBE_3DES = "1.2.840.113549.1.12.1.3";
const PKCS12_PBES: Record<string, { label: string; cipher: string; keyLength: number }> = {
  [OID_PBE_3DES]: { label: "pbeWithSHAAnd3-KeyTripleDES-CBC", cipher: "des-ede3-cbc", keyLength: 24 },
  "1.2.840.113549.1.12.1.5": { label: "pbeWithSHAAnd128BitRC2-CBC", cipher: "rc2-cbc", keyLength: 16 },
  "1.2.840.113549.1.12.1.6": { label: "pbeWithSHAAnd40BitRC2-CBC", cipher: "rc2-40-cbc", keyLength: 5 },
};

/** pkcs-12PbeParams ::= SEQUENCE { salt OCTET STRING, iterations INTEGER } */
class Pkcs12PbeParams {
  @AsnProp({ type: OctetString }) salt = new OctetString();
  @AsnProp({ type: AsnPropTypes.Integer }) iterations: number | string = 0;
}

/** CMS EncryptedData (RFC 5652 §8), which @peculiar/asn1-cms does not provide. */
class CmsEncryptedData {
  @AsnProp({ type: AsnPropTypes.Integer }) version = 0;
  @AsnProp({ type: EncryptedContentInfo }) encryptedContentInfo = new EncryptedContentInfo();
}

/** A bare BMPString, the friendlyName attribute value. */
@AsnType({ type: AsnTypeTypes.Choice })
class BmpString {
  @AsnProp({ type: AsnPropTypes.BmpString }) value = "";
}

/** An OCTET STRING that may be BER constructed (some writers chunk them); asn1-schema's reads those as empty. */
class AnyOctetString extends OctetString {
  override fromASN(asn: Parameters<OctetString["fromASN"]>[0]): this {
    this.buffer = asn.getValue();
    return this;
  }
}

export function buildPkcs12(opts: BuildPkcs12Options): Uint8Array {
  const { privateKey, certificates, password, friendlyName } = opts;
  const iterations = opts.iterations ?? DEFAULT_ITERATIONS;
  const legacy = opts.legacy ?? false;
  if (!Number.isSafeInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new MtlsError("E_BAD_INPUT", `PKCS#12 iterations must be 1..${MAX_ITERATIONS}, got ${iterations}`);
  }
  const leaf = certificates[0];
  if (!leaf) throw new MtlsError("E_BAD_INPUT", "a PKCS#12 needs at least the leaf certificate");
  if (!isPrivateKeyInfo(privateKey)) throw new MtlsError("E_BAD_INPUT", "not a PKCS#8 private key (DER)");
  for (const der of certificates) {
    try {
      new X509Certificate(der);
    } catch (err) {
      throw new MtlsError("E_BAD_INPUT", "not a DER X.509 certificate", { cause: err });
    }
  }
  if (!keyMatches(leaf, privateKey)) {
    throw new MtlsError("E_BAD_INPUT", "the private key does not belong to the first (leaf) certificate");
  }

  const encrypt = (data: Uint8Array) =>
    legacy
      ? pkcs12PbeEncrypt(data, password, iterations)
      : pbes2Encrypt(data, password, { kdf: "pbkdf2", iterations });
  const attributes = bagAttributes(friendlyName, createHash("sha1").update(leaf).digest());

  const certBags = certificates.map((der, i) => {
    const bag = new CertBag({
      certId: id_x509Certificate,
      certValue: AsnConvert.serialize(new OctetString(der)),
    });
    return new SafeBag({
      bagId: id_certBag,
      bagValue: AsnConvert.serialize(bag),
      bagAttributes: i === 0 ? attributes : undefined,
    });
  });
  const certs = encrypt(new Uint8Array(AsnConvert.serialize(new SafeContents(certBags))));
  const certSafe = new ContentInfo({
    contentType: id_encryptedData,
    content: AsnConvert.serialize(
      Object.assign(new CmsEncryptedData(), {
        encryptedContentInfo: new EncryptedContentInfo({
          contentType: id_data,
          contentEncryptionAlgorithm: certs.algorithm,
          encryptedContent: new EncryptedContent({ value: new OctetString(certs.ciphertext) }),
        }),
      }),
    ),
  });

  const key = encrypt(privateKey);
  const shrouded = new EncryptedPrivateKeyInfo({
    encryptionAlgorithm: key.algorithm,
    encryptedData: new EncryptedData(key.ciphertext),
  });
  const keyBag = new SafeBag({
    bagId: id_pkcs8ShroudedKeyBag,
    bagValue: AsnConvert.serialize(shrouded),
    bagAttributes: attributes,
  });
  const keySafe = dataContentInfo(new Uint8Array(AsnConvert.serialize(new SafeContents([keyBag]))));

  const authSafe = new Uint8Array(AsnConvert.serialize(new AuthenticatedSafe([certSafe, keySafe])));
  const macOid = legacy ? OID_SHA1 : OID_SHA256;
  const macSalt = randomBytes(8); // OpenSSL's PKCS12_SALT_LEN
  const macData = new MacData({ macSalt: new OctetString(macSalt), iterations });
  // Digest algorithm parameters NULL, as OpenSSL writes them.
  macData.mac.digestAlgorithm = new AlgorithmIdentifier({ algorithm: macOid, parameters: null });
  macData.mac.digest = new OctetString(computeMac(macOid, authSafe, password, macSalt, iterations));

  const pfx = new PFX({ version: 3, authSafe: dataContentInfo(authSafe), macData });
  return new Uint8Array(AsnConvert.serialize(pfx));
}

export function parsePkcs12(
  der: Uint8Array,
  password: string,
): Pkcs12Contents & { macAlgorithm: string; encryption: string } {
  const pfx = parseAsn(der, PFX, "PKCS#12 file");
  if (Number(pfx.version) !== 3)
    throw new MtlsError("E_BAD_INPUT", `unsupported PKCS#12 version ${pfx.version}`);
  if (pfx.authSafe.contentType !== id_data) {
    throw new MtlsError("E_BAD_INPUT", "unsupported PKCS#12: public-key integrity (signed) mode");
  }
  const authSafe = readOctets(pfx.authSafe.content, "PKCS#12 authSafe");

  // Integrity first: a wrong password is reported as such, before any decryption is tried.
  // asn1-schema leaves a default, empty MacData when the file has none.
  let macAlgorithm = "none";
  const macOid = pfx.macData?.mac.digestAlgorithm.algorithm;
  if (pfx.macData && macOid) {
    const hash = HASHES[macOid];
    if (!hash) throw new MtlsError("E_BAD_INPUT", `unsupported PKCS#12 MAC digest ${macOid}`);
    const iterations = checkIterations(pfx.macData.iterations);
    const expected = computeMac(
      macOid,
      authSafe,
      password,
      new Uint8Array(pfx.macData.macSalt.buffer),
      iterations,
    );
    const actual = new Uint8Array(pfx.macData.mac.digest.buffer);
    if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) {
      throw new MtlsError("E_PASSPHRASE", "wrong PKCS#12 password");
    }
    macAlgorithm = hash.label;
  }

  // Collect every SafeBag with the encryption that protected it.
  const bags: { bag: SafeBag; encryption: string }[] = [];
  for (const info of parseAsn(authSafe, AuthenticatedSafe, "PKCS#12 AuthenticatedSafe")) {
    if (info.contentType === id_data) {
      const safe = parseAsn(
        readOctets(info.content, "PKCS#12 SafeContents"),
        SafeContents,
        "PKCS#12 SafeContents",
      );
      for (const bag of safe) bags.push({ bag, encryption: "none" });
    } else if (info.contentType === id_encryptedData) {
      const eci = parseAsn(info.content, CmsEncryptedData, "PKCS#12 EncryptedData").encryptedContentInfo;
      const content = eci.encryptedContent;
      const parts = content?.value ? [content.value] : (content?.constructedValue ?? []);
      const ciphertext = Buffer.concat(parts.map((p) => new Uint8Array(p.buffer)));
      const plain = decrypt(eci.contentEncryptionAlgorithm, ciphertext, password);
      const safe = parseAsn(plain, SafeContents, "PKCS#12 SafeContents");
      const encryption = describe(eci.contentEncryptionAlgorithm);
      for (const bag of safe) bags.push({ bag, encryption });
    } else {
      throw new MtlsError(
        "E_BAD_INPUT",
        `unsupported PKCS#12 content type ${info.contentType} (public-key encrypted?)`,
      );
    }
  }

  let key: { der: Uint8Array; name?: string; id?: Uint8Array; encryption: string } | undefined;
  const certs: { der: Uint8Array; name?: string; id?: Uint8Array; encryption: string }[] = [];
  for (const { bag, encryption } of bags) {
    const attrs = readAttributes(bag);
    if (bag.bagId === id_pkcs8ShroudedKeyBag && !key) {
      const shrouded = parseAsn(bag.bagValue, EncryptedPrivateKeyInfo, "PKCS#12 shrouded key bag");
      const plain = decrypt(
        shrouded.encryptionAlgorithm,
        new Uint8Array(shrouded.encryptedData.buffer),
        password,
      );
      if (!isPrivateKeyInfo(plain)) throw new MtlsError("E_PASSPHRASE", "wrong PKCS#12 password");
      key = { der: plain, ...attrs, encryption: describe(shrouded.encryptionAlgorithm) };
    } else if (bag.bagId === id_keyBag && !key) {
      const plain = new Uint8Array(bag.bagValue);
      if (!isPrivateKeyInfo(plain)) throw new MtlsError("E_BAD_INPUT", "malformed PKCS#12 key bag");
      key = { der: plain, ...attrs, encryption };
    } else if (bag.bagId === id_certBag) {
      const cert = parseAsn(bag.bagValue, CertBag, "PKCS#12 certificate bag");
      if (cert.certId !== id_x509Certificate) continue; // SDSI certificates: not ours to read
      certs.push({ der: readOctets(cert.certValue, "PKCS#12 certificate"), ...attrs, encryption });
    }
    // CRL, secret and nested SafeContents bags are ignored.
  }

  // The leaf: the certificate sharing the key's localKeyID, else the one whose public key matches.
  const keyId = key?.id;
  const keyDer = key?.der;
  let leaf = keyId ? certs.findIndex((c) => c.id !== undefined && Buffer.from(c.id).equals(keyId)) : -1;
  if (leaf < 0 && keyDer) leaf = certs.findIndex((c) => keyMatches(c.der, keyDer));
  if (leaf > 0) certs.unshift(...certs.splice(leaf, 1));

  const keyEncryption = key?.encryption ?? "none";
  const certEncryption = [...new Set(certs.map((c) => c.encryption))].join(", ") || "none";
  const friendlyName = key?.name ?? (leaf >= 0 ? certs[0]?.name : undefined);
  return {
    ...(key ? { privateKey: key.der } : {}),
    certificates: certs.map((c) => c.der),
    ...(friendlyName !== undefined ? { friendlyName } : {}),
    macAlgorithm,
    encryption:
      keyEncryption === certEncryption
        ? keyEncryption
        : `key: ${keyEncryption}; certificates: ${certEncryption}`,
  };
}

/**
 * The PKCS#12 key derivation function (RFC 7292 appendix B.2). `id` 1 derives key material, 2 an
 * IV, 3 a MAC key. The password is already BMPString-encoded with its two zero bytes.
 */
function pkcs12Kdf(
  hashOid: string,
  password: Uint8Array,
  salt: Uint8Array,
  iterations: number,
  id: 1 | 2 | 3,
  n: number,
) {
  const hash = HASHES[hashOid];
  if (!hash) throw new MtlsError("E_BAD_INPUT", `unsupported PKCS#12 KDF digest ${hashOid}`);
  const v = hash.block;
  // Repeat `data` to fill a whole number of v-byte blocks (empty stays empty).
  const fill = (data: Uint8Array, length = v * Math.ceil(data.length / v)) => {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i++) out[i] = data[i % data.length] ?? 0;
    return out;
  };
  const d = Buffer.alloc(v, id);
  const i = Buffer.concat([fill(salt), fill(password)]);
  const out: Buffer[] = [];
  for (let produced = 0; produced < n; ) {
    let a = createHash(hash.name).update(d).update(i).digest();
    // One-shot crypto.hash: this loop is all of the cost, and there is no native PKCS#12 KDF.
    for (let r = 1; r < iterations; r++) a = cryptoHash(hash.name, a, "buffer");
    out.push(a);
    produced += a.length;
    // I_j = (I_j + B + 1) mod 2^(8v) for every v-byte block I_j of I, with B = A repeated to v bytes.
    const b = fill(a, v);
    for (let j = 0; j < i.length; j += v) {
      let carry = 1;
      for (let k = v - 1; k >= 0; k--) {
        const sum = (i[j + k] ?? 0) + (b[k] ?? 0) + carry;
        i[j + k] = sum & 0xff;
        carry = sum >> 8;
      }
    }
  }
  return Buffer.concat(out).subarray(0, n);
}

/** The password as the PKCS#12 KDF wants it: BMPString (UTF-16BE) plus two zero bytes. */
function bmpPassword(password: string): Buffer {
  return Buffer.from(`${password}\0`, "utf16le").swap16();
}

function computeMac(
  hashOid: string,
  data: Uint8Array,
  password: string,
  salt: Uint8Array,
  iterations: number,
) {
  const hash = HASHES[hashOid];
  if (!hash) throw new MtlsError("E_BAD_INPUT", `unsupported PKCS#12 MAC digest ${hashOid}`);
  const macKeyLength = createHash(hash.name).digest().length;
  const key = pkcs12Kdf(hashOid, bmpPassword(password), salt, iterations, 3, macKeyLength);
  return createHmac(hash.name, key).update(data).digest();
}

function pkcs12PbeEncrypt(data: Uint8Array, password: string, iterations: number) {
  const salt = randomBytes(8); // as OpenSSL; PBES2 salts (key-encryption.ts) are 16 bytes
  const pass = bmpPassword(password);
  const key = pkcs12Kdf(OID_SHA1, pass, salt, iterations, 1, 24);
  const iv = pkcs12Kdf(OID_SHA1, pass, salt, iterations, 2, 8);
  const c = createCipheriv("des-ede3-cbc", key, iv);
  const params = Object.assign(new Pkcs12PbeParams(), { salt: new OctetString(salt), iterations });
  return {
    algorithm: new AlgorithmIdentifier({ algorithm: OID_PBE_3DES, parameters: AsnConvert.serialize(params) }),
    ciphertext: Buffer.concat([c.update(data), c.final()]),
  };
}

/** Decrypts with PBES2 or a PKCS#12 PBE; bad padding means the password does not fit. */
function decrypt(algorithm: AlgorithmIdentifier, data: Uint8Array, password: string): Uint8Array {
  let plain: Uint8Array | null;
  if (algorithm.algorithm === OID_PBES2) {
    plain = pbes2Decrypt(algorithm, data, password);
  } else {
    const pbe = PKCS12_PBES[algorithm.algorithm];
    if (!pbe) throw new MtlsError("E_BAD_INPUT", `unsupported PKCS#12 encryption ${algorithm.algorithm}`);
    const params = parseAsn(algorithm.parameters ?? undefined, Pkcs12PbeParams, "PKCS#12 PBE parameters");
    const iterations = checkIterations(params.iterations);
    const salt = new Uint8Array(params.salt.buffer);
    const pass = bmpPassword(password);
    const key = pkcs12Kdf(OID_SHA1, pass, salt, iterations, 1, pbe.keyLength);
    const iv = pkcs12Kdf(OID_SHA1, pass, salt, iterations, 2, 8);
    let d: ReturnType<typeof createDecipheriv>;
    try {
      d = createDecipheriv(pbe.cipher, key, iv);
    } catch (err) {
      // RC2 lives in OpenSSL 3's legacy provider, which Node does not load by default.
      throw new MtlsError(
        "E_BAD_INPUT",
        `unsupported encryption ${pbe.cipher} (${pbe.label}) in this PKCS#12: RC2 is only in OpenSSL 3's legacy ` +
          "provider, which Node does not load; re-export the file without -legacy (or with -certpbe PBE-SHA1-3DES), " +
          "or run node with --openssl-legacy-provider",
        { cause: err },
      );
    }
    try {
      plain = Buffer.concat([d.update(data), d.final()]);
    } catch {
      plain = null;
    }
  }
  if (!plain) throw new MtlsError("E_PASSPHRASE", "wrong PKCS#12 password");
  return plain;
}

function describe(algorithm: AlgorithmIdentifier): string {
  if (algorithm.algorithm === OID_PBES2) return describePbes2(algorithm);
  return PKCS12_PBES[algorithm.algorithm]?.label ?? algorithm.algorithm;
}

/** friendlyName + localKeyID, in DER SET OF order (sorted by encoding) as OpenSSL writes them. */
function bagAttributes(friendlyName: string, localKeyId: Uint8Array): PKCS12Attribute[] {
  // PKCS12Attribute's constructor ignores its argument (asn1-pfx 2.11), hence the assigns.
  const attribute = (attrId: string, value: ArrayBuffer) =>
    Object.assign(new PKCS12Attribute(), { attrId, attrValues: [value] });
  const attrs = [
    attribute(
      OID_FRIENDLY_NAME,
      AsnConvert.serialize(Object.assign(new BmpString(), { value: friendlyName })),
    ),
    attribute(OID_LOCAL_KEY_ID, AsnConvert.serialize(new OctetString(localKeyId))),
  ];
  const encoded = (a: PKCS12Attribute) => Buffer.from(AsnConvert.serialize(a));
  return attrs.sort((a, b) => Buffer.compare(encoded(a), encoded(b)));
}

function readAttributes(bag: SafeBag): { name?: string; id?: Uint8Array } {
  const out: { name?: string; id?: Uint8Array } = {};
  for (const attr of bag.bagAttributes ?? []) {
    const value = attr.attrValues[0];
    if (!value) continue;
    if (attr.attrId === OID_FRIENDLY_NAME) out.name = parseAsn(value, BmpString, "friendlyName").value;
    if (attr.attrId === OID_LOCAL_KEY_ID) out.id = readOctets(value, "localKeyID");
  }
  return out;
}

function dataContentInfo(data: Uint8Array): ContentInfo {
  return new ContentInfo({ contentType: id_data, content: AsnConvert.serialize(new OctetString(data)) });
}

/** True when the certificate's public key is the private key's. */
function keyMatches(certDer: Uint8Array, pkcs8Der: Uint8Array): boolean {
  try {
    const fromCert = new X509Certificate(certDer).publicKey.export({ type: "spki", format: "der" });
    const fromKey = createPublicKey(
      createPrivateKey({ key: Buffer.from(pkcs8Der), format: "der", type: "pkcs8" }),
    );
    return fromCert.equals(fromKey.export({ type: "spki", format: "der" }));
  } catch {
    return false;
  }
}

function checkIterations(value: number | string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_ITERATIONS) {
    throw new MtlsError("E_BAD_INPUT", `PKCS#12 iteration count out of range: ${value}`);
  }
  return n;
}

function readOctets(data: ArrayBuffer, what: string): Uint8Array {
  return new Uint8Array(parseAsn(data, AnyOctetString, what).buffer);
}

function parseAsn<T>(data: ArrayBuffer | Uint8Array | undefined, type: new () => T, what: string): T {
  if (!data) throw new MtlsError("E_BAD_INPUT", `malformed ${what}: missing`);
  try {
    return AsnConvert.parse(data, type);
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", `malformed ${what}`, { cause: err });
  }
}
