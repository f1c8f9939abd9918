import { createHash, createPublicKey, randomBytes } from "node:crypto";
import type * as P11 from "pkcs11js";
import { MtlsError } from "../errors.js";
import type { KeyType } from "../pki/keys.js";
import { type Signer, signatureAlgorithmFor } from "../pki/signer.js";
import { Pkcs11Module, type Pkcs11Session, pkcs11Failure, pkcs11js } from "./pkcs11-module.js";
import { formatPkcs11Uri, type Pkcs11Uri, parsePkcs11Uri } from "./pkcs11-uri.js";

/**
 * Keys inside a PKCS#11 token: found by URI, or generated there (sensitive, never extractable), and
 * a Signer that signs in the token. ECDSA P-256/P-384 sign with CKM_ECDSA over a digest computed
 * here (SoftHSM and most HSMs have no CKM_ECDSA_SHA384), and the raw r||s is turned into the DER
 * ECDSA-Sig-Value X.509 carries; RSA signs with CKM_SHA256_RSA_PKCS (PKCS#1 v1.5).
 */

export interface Pkcs11KeyOptions {
  /** Path of the PKCS#11 module (.so). */
  module: string;
  /** URI naming the token and the key (object= and/or id=); any pin-value is ignored. */
  uri: string | Pkcs11Uri;
  pin: string;
}

export interface Pkcs11Signer extends Signer {
  /** The key's URI without PIN: token, object label, id, type=private. */
  readonly uri: string;
  readonly module: string;
}

const CURVES: Record<string, { type: KeyType; params: Buffer; size: number; hash: string }> = {
  "ec-p256": {
    type: "ec-p256",
    params: Buffer.from("06082a8648ce3d030107", "hex"),
    size: 32,
    hash: "sha256",
  },
  "ec-p384": { type: "ec-p384", params: Buffer.from("06052b81040022", "hex"), size: 48, hash: "sha384" },
};
const SPKI_PREFIX: Record<string, Buffer> = {
  "ec-p256": Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex"),
  "ec-p384": Buffer.from("3076301006072a8648ce3d020106052b81040022036200", "hex"),
};

/** The key types a token key may have for mtls. */
export const PKCS11_KEY_TYPES: readonly KeyType[] = [
  "ec-p256",
  "ec-p384",
  "rsa-2048",
  "rsa-3072",
  "rsa-4096",
];

function asUri(uri: string | Pkcs11Uri): Pkcs11Uri {
  return typeof uri === "string" ? parsePkcs11Uri(uri) : uri;
}

function requireObject(uri: Pkcs11Uri): void {
  if (uri.object === undefined && uri.id === undefined) {
    throw new MtlsError(
      "E_USAGE",
      `the PKCS#11 URI ${formatPkcs11Uri(uri)} names no key: add object=LABEL or id=`,
    );
  }
  if (uri.type !== undefined && uri.type !== "private") {
    throw new MtlsError(
      "E_PKCS11_KEY",
      `the PKCS#11 URI names a ${uri.type} object: a signing key is type=private`,
    );
  }
}

/** The DER ECDSA-Sig-Value of a raw r||s signature. */
export function ecdsaRawToDer(raw: Uint8Array): Uint8Array {
  const half = raw.length / 2;
  const int = (bytes: Uint8Array): Buffer => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++;
    const trimmed = Buffer.from(bytes.subarray(i));
    return (trimmed[0] as number) & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed;
  };
  const r = int(raw.subarray(0, half));
  const s = int(raw.subarray(half));
  const body = Buffer.concat([Buffer.from([0x02, r.length]), r, Buffer.from([0x02, s.length]), s]);
  const len = body.length < 0x80 ? Buffer.from([body.length]) : Buffer.from([0x81, body.length]);
  return new Uint8Array(Buffer.concat([Buffer.from([0x30]), len, body]));
}

function findObjects(lib: P11.PKCS11, session: P11.Handle, template: P11.Template): P11.Handle[] {
  lib.C_FindObjectsInit(session, template);
  try {
    const found: P11.Handle[] = [];
    for (;;) {
      const batch = lib.C_FindObjects(session, 32);
      found.push(...batch);
      if (batch.length < 32) return found;
    }
  } finally {
    lib.C_FindObjectsFinal(session);
  }
}

function keyTemplate(uri: Pkcs11Uri, klass: number): P11.Template {
  const p11 = pkcs11js();
  const t: P11.Template = [{ type: p11.CKA_CLASS, value: klass }];
  if (uri.object !== undefined) t.push({ type: p11.CKA_LABEL, value: uri.object });
  if (uri.id !== undefined) t.push({ type: p11.CKA_ID, value: Buffer.from(uri.id) });
  return t;
}

interface FoundKey {
  privateKey: P11.Handle;
  keyType: KeyType;
  spki: Uint8Array;
  label: string;
  id: Buffer;
}

function attr(lib: P11.PKCS11, session: P11.Handle, object: P11.Handle, type: number): Buffer | undefined {
  try {
    const [a] = lib.C_GetAttributeValue(session, object, [{ type }]);
    return a?.value as Buffer | undefined;
  } catch {
    return undefined;
  }
}

function curveOf(params: Buffer | undefined): (typeof CURVES)[string] | undefined {
  return Object.values(CURVES).find((c) => params?.equals(c.params));
}

/** An EC point as a token stores it (DER OCTET STRING, or raw in a few old modules) to 04||X||Y. */
function ecPoint(value: Buffer, size: number): Buffer {
  const raw = 1 + 2 * size;
  if (value.length === raw && value[0] === 4) return value;
  if (value[0] === 4 && value.length === raw + 2 && value[1] === raw) return value.subarray(2);
  if (value[0] === 4 && value[1] === 0x81 && value.length === raw + 3) return value.subarray(3);
  throw new MtlsError("E_PKCS11_KEY", "the token's public key has a malformed EC point");
}

function describe(uri: Pkcs11Uri): string {
  return formatPkcs11Uri({ ...uri, type: "private" });
}

/** Finds the private key the URI names and its public half (which gives the SPKI and key type). */
function findKey(session: Pkcs11Session, uri: Pkcs11Uri): FoundKey {
  return session.run("looking up the key", (s, lib) => findKeyIn(lib, s, uri, session.tokenLabel));
}

function findKeyIn(lib: P11.PKCS11, s: P11.Handle, uri: Pkcs11Uri, tokenLabel: string): FoundKey {
  const p11 = pkcs11js();
  const privs = findObjects(lib, s, keyTemplate(uri, p11.CKO_PRIVATE_KEY));
  if (privs.length === 0) {
    throw new MtlsError("E_PKCS11_KEY", `no private key matches ${describe(uri)} on token "${tokenLabel}"`);
  }
  if (privs.length > 1) {
    throw new MtlsError(
      "E_PKCS11_KEY",
      `${privs.length} private keys match ${describe(uri)} on token "${tokenLabel}": add id= to the URI`,
    );
  }
  const privateKey = privs[0] as P11.Handle;
  const label = attr(lib, s, privateKey, p11.CKA_LABEL)?.toString("utf8") ?? "";
  const id = attr(lib, s, privateKey, p11.CKA_ID) ?? Buffer.alloc(0);
  const kt = attr(lib, s, privateKey, p11.CKA_KEY_TYPE)?.readUIntLE(0, 4);
  const canSign = attr(lib, s, privateKey, p11.CKA_SIGN);
  if (canSign && canSign[0] === 0) {
    throw new MtlsError(
      "E_PKCS11_KEY",
      `the key ${describe(uri)} is not allowed to sign (CKA_SIGN is false)`,
    );
  }
  // The public half: same CKA_ID when the key has one, else the same label.
  const pubTemplate = keyTemplate(id.length ? { id } : label ? { object: label } : uri, p11.CKO_PUBLIC_KEY);
  const pub = findObjects(lib, s, pubTemplate)[0];
  if (kt === p11.CKK_EC) {
    const curve = curveOf(attr(lib, s, privateKey, p11.CKA_EC_PARAMS));
    if (!curve) {
      throw new MtlsError(
        "E_PKCS11_KEY",
        `the key ${describe(uri)} is on an unsupported curve: use P-256 or P-384`,
      );
    }
    const point = pub ? attr(lib, s, pub, p11.CKA_EC_POINT) : undefined;
    if (!point) {
      throw new MtlsError(
        "E_PKCS11_KEY",
        `the key ${describe(uri)} has no public key object beside it in the token`,
      );
    }
    const spki = Buffer.concat([SPKI_PREFIX[curve.type] as Buffer, ecPoint(point, curve.size)]);
    return { privateKey, keyType: curve.type, spki: new Uint8Array(spki), label, id };
  }
  if (kt === p11.CKK_RSA) {
    const n =
      attr(lib, s, privateKey, p11.CKA_MODULUS) ?? (pub ? attr(lib, s, pub, p11.CKA_MODULUS) : undefined);
    const e =
      attr(lib, s, privateKey, p11.CKA_PUBLIC_EXPONENT) ??
      (pub ? attr(lib, s, pub, p11.CKA_PUBLIC_EXPONENT) : undefined);
    if (!n || !e) throw new MtlsError("E_PKCS11_KEY", `the RSA key ${describe(uri)} shows no modulus`);
    const bits = n.length * 8;
    if (bits < 2048)
      throw new MtlsError("E_WEAK_KEY", `RSA key of ${bits} bits is too weak: at least 2048 bits`);
    const keyType: KeyType = bits <= 2048 ? "rsa-2048" : bits <= 3072 ? "rsa-3072" : "rsa-4096";
    const spki = createPublicKey({
      key: { kty: "RSA", n: n.toString("base64url"), e: e.toString("base64url") },
      format: "jwk",
    }).export({ format: "der", type: "spki" });
    return { privateKey, keyType, spki: new Uint8Array(spki), label, id };
  }
  throw new MtlsError(
    "E_PKCS11_KEY",
    `the key ${describe(uri)} is of the wrong type (CKK ${kt ?? "unknown"}): mtls signs with EC P-256/P-384 or RSA keys`,
  );
}

function signerFor(session: Pkcs11Session, module: string, uri: Pkcs11Uri, found: FoundKey): Pkcs11Signer {
  const p11 = pkcs11js();
  const keyUri: Pkcs11Uri = {
    ...(uri.token !== undefined ? { token: uri.token } : { token: session.tokenLabel }),
    ...(uri.serial !== undefined ? { serial: uri.serial } : {}),
    ...(found.label ? { object: found.label } : {}),
    ...(found.id.length ? { id: new Uint8Array(found.id) } : {}),
    type: "private",
  };
  const alg = signatureAlgorithmFor(found.keyType);
  const curve = CURVES[found.keyType];
  let handle = found.privateKey;
  let generation = session.generation;
  const size = curve ? 2 * curve.size : found.spki.length; // RSA: the SPKI is longer than the signature
  const mechanism = curve ? p11.CKM_ECDSA : p11.CKM_SHA256_RSA_PKCS;
  return {
    keyType: found.keyType,
    spki: found.spki,
    algorithmDer: alg.der,
    uri: formatPkcs11Uri(keyUri),
    module,
    async sign(data) {
      const input = curve ? createHash(curve.hash).update(data).digest() : Buffer.from(data);
      // Off the main thread (a real HSM takes milliseconds per signature), one at a time per session.
      const out = await session.runAsync("signing", async (s, lib) => {
        // After a reopen the old object handle may be stale: find the key again.
        if (generation !== session.generation) {
          handle = findKeyIn(lib, s, keyUri, session.tokenLabel).privateKey;
          generation = session.generation;
        }
        lib.C_SignInit(s, { mechanism }, handle);
        return lib.C_SignAsync(s, input, Buffer.alloc(size));
      });
      return curve ? ecdsaRawToDer(out) : new Uint8Array(out);
    },
  };
}

/** Opens the key the URI names (E_PKCS11_KEY when there is none, or it cannot sign). */
export function openPkcs11Signer(opts: Pkcs11KeyOptions): Pkcs11Signer {
  const uri = asUri(opts.uri);
  requireObject(uri);
  const session = Pkcs11Module.load(opts.module).session(uri, opts.pin);
  return signerFor(session, opts.module, uri, findKey(session, uri));
}

/**
 * Generates a key pair in the token under the URI's label (and id, else a random one): the private
 * half is sensitive and never extractable, so it can sign but never leave the token.
 */
export function generatePkcs11Key(opts: Pkcs11KeyOptions & { keyType: KeyType }): Pkcs11Signer {
  const p11 = pkcs11js();
  const uri = asUri(opts.uri);
  requireObject(uri);
  if (!PKCS11_KEY_TYPES.includes(opts.keyType)) {
    throw new MtlsError(
      "E_PKCS11_KEY",
      `key type ${opts.keyType} cannot be generated in a token (${PKCS11_KEY_TYPES.join(", ")})`,
    );
  }
  const session = Pkcs11Module.load(opts.module).session(uri, opts.pin);
  const id = uri.id ? Buffer.from(uri.id) : randomBytes(8);
  const named = { ...uri, id: new Uint8Array(id) };
  const common: P11.Template = [
    { type: p11.CKA_TOKEN, value: true },
    { type: p11.CKA_ID, value: id },
    ...(uri.object !== undefined ? [{ type: p11.CKA_LABEL, value: uri.object }] : []),
  ];
  const curve = CURVES[opts.keyType];
  session.run("generating a key", (s, lib) => {
    lib.C_GenerateKeyPair(
      s,
      { mechanism: curve ? p11.CKM_EC_KEY_PAIR_GEN : p11.CKM_RSA_PKCS_KEY_PAIR_GEN },
      [
        ...common,
        { type: p11.CKA_CLASS, value: p11.CKO_PUBLIC_KEY },
        { type: p11.CKA_PRIVATE, value: false },
        { type: p11.CKA_VERIFY, value: true },
        ...(curve
          ? [{ type: p11.CKA_EC_PARAMS, value: curve.params }]
          : [
              { type: p11.CKA_MODULUS_BITS, value: Number(opts.keyType.slice(4)) },
              { type: p11.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
            ]),
      ],
      [
        ...common,
        { type: p11.CKA_CLASS, value: p11.CKO_PRIVATE_KEY },
        { type: p11.CKA_PRIVATE, value: true },
        { type: p11.CKA_SENSITIVE, value: true },
        { type: p11.CKA_EXTRACTABLE, value: false },
        { type: p11.CKA_SIGN, value: true },
      ],
    );
  });
  return signerFor(session, opts.module, named, findKey(session, named));
}

/** Whether a private key matching the URI exists in the token. */
export function hasPkcs11Key(opts: Pkcs11KeyOptions): boolean {
  const p11 = pkcs11js();
  const uri = asUri(opts.uri);
  requireObject(uri);
  const session = Pkcs11Module.load(opts.module).session(uri, opts.pin);
  return session.run(
    "looking up the key",
    (s, lib) => findObjects(lib, s, keyTemplate(uri, p11.CKO_PRIVATE_KEY)).length > 0,
  );
}

/**
 * The key the URI names if the token has one (its type must match `keyType` when given), else a new
 * one generated there: what `mtls init --ca-key pkcs11:...` does.
 */
export function openOrGeneratePkcs11Key(
  opts: Pkcs11KeyOptions & { keyType: KeyType; keyTypeExplicit?: boolean },
): Pkcs11Signer & { generated: boolean } {
  if (!hasPkcs11Key(opts)) return { ...generatePkcs11Key(opts), generated: true };
  const signer = openPkcs11Signer(opts);
  if (opts.keyTypeExplicit && signer.keyType !== opts.keyType) {
    throw new MtlsError(
      "E_PKCS11_KEY",
      `the token's key ${signer.uri} is ${signer.keyType}, not the ${opts.keyType} asked for with --key-type`,
    );
  }
  return Object.assign(signer, { generated: false });
}

export interface Pkcs11ObjectInfo {
  class: "private" | "public" | "cert";
  label: string;
  id: string;
  keyType?: string;
  sensitive?: boolean;
  extractable?: boolean;
  uri: string;
}

export interface Pkcs11SlotListing {
  slotId: number;
  description: string;
  token?: {
    label: string;
    manufacturer: string;
    model: string;
    serial: string;
    initialized: boolean;
    loginRequired: boolean;
    pinLocked: boolean;
    pinFinalTry: boolean;
  };
  /** Objects, when a PIN was given and the token logged in (public objects only without one). */
  objects?: Pkcs11ObjectInfo[];
  /** Why objects are missing (e.g. wrong PIN), so one bad token does not hide the others. */
  error?: { code: string; message: string };
}

function keyTypeName(lib: P11.PKCS11, s: P11.Handle, obj: P11.Handle): string {
  const p11 = pkcs11js();
  const kt = attr(lib, s, obj, p11.CKA_KEY_TYPE)?.readUIntLE(0, 4);
  if (kt === p11.CKK_EC) return curveOf(attr(lib, s, obj, p11.CKA_EC_PARAMS))?.type ?? "ec (other curve)";
  if (kt === p11.CKK_RSA) {
    const n = attr(lib, s, obj, p11.CKA_MODULUS);
    return n ? `rsa-${n.length * 8}` : "rsa";
  }
  return kt === undefined ? "unknown" : `CKK 0x${kt.toString(16)}`;
}

/** Slots, tokens and (with a PIN) keys of a module: what `mtls hsm list` shows. */
export function listPkcs11(module: string, pin?: string, only?: Pkcs11Uri): Pkcs11SlotListing[] {
  const p11 = pkcs11js();
  const mod = Pkcs11Module.load(module);
  const trim = (s: string) => s.replace(/[\s\0]+$/, "");
  const listing: Pkcs11SlotListing[] = [];
  for (const entry of mod.slots()) {
    const t = entry.token;
    const item: Pkcs11SlotListing = {
      slotId: entry.slotId,
      description: trim(entry.slotInfo.slotDescription),
    };
    if (t) {
      item.token = {
        label: trim(t.label),
        manufacturer: trim(t.manufacturerID),
        model: trim(t.model),
        serial: trim(t.serialNumber),
        initialized: (t.flags & p11.CKF_TOKEN_INITIALIZED) !== 0,
        loginRequired: (t.flags & p11.CKF_LOGIN_REQUIRED) !== 0,
        pinLocked: (t.flags & p11.CKF_USER_PIN_LOCKED) !== 0,
        pinFinalTry: (t.flags & p11.CKF_USER_PIN_FINAL_TRY) !== 0,
      };
    }
    listing.push(item);
    if (!item.token?.initialized || pin === undefined) continue;
    if (only?.token !== undefined && only.token !== item.token.label) continue;
    try {
      const session = mod.session({ serial: item.token.serial, slotId: entry.slotId }, pin);
      item.objects = session.run("listing objects", (s, lib) => {
        const objects: Pkcs11ObjectInfo[] = [];
        for (const [klass, name] of [
          [p11.CKO_PRIVATE_KEY, "private"],
          [p11.CKO_PUBLIC_KEY, "public"],
          [p11.CKO_CERTIFICATE, "cert"],
        ] as const) {
          for (const obj of findObjects(lib, s, [{ type: p11.CKA_CLASS, value: klass }])) {
            const label = attr(lib, s, obj, p11.CKA_LABEL)?.toString("utf8") ?? "";
            const id = attr(lib, s, obj, p11.CKA_ID) ?? Buffer.alloc(0);
            const info: Pkcs11ObjectInfo = {
              class: name,
              label,
              id: id.toString("hex"),
              uri: formatPkcs11Uri({
                token: item.token?.label ?? "",
                ...(label ? { object: label } : {}),
                ...(id.length ? { id: new Uint8Array(id) } : {}),
                type: name,
              }),
            };
            if (name !== "cert") info.keyType = keyTypeName(lib, s, obj);
            if (name === "private") {
              info.sensitive = attr(lib, s, obj, p11.CKA_SENSITIVE)?.[0] === 1;
              info.extractable = attr(lib, s, obj, p11.CKA_EXTRACTABLE)?.[0] === 1;
            }
            objects.push(info);
          }
        }
        return objects;
      });
    } catch (err) {
      const e = pkcs11Failure(err, "listing objects", item.token.label);
      item.error = { code: e.code, message: e.message };
    }
  }
  return listing;
}

export { pkcs11Failure };
