/**
 * The key store's message protocol (version 1). The page (client) and the key store (host: a
 * dedicated worker, an iframe on another origin, or any MessagePort) exchange structured-clone
 * messages; every request carries {v: 1, id, op, ...} and gets exactly one reply
 * {v: 1, id, ok: true, result} or {v: 1, id, ok: false, error: {code, message}}.
 *
 * There is deliberately no operation that returns a key: a key is created inside the store as a
 * non-extractable CryptoKey and only ever used there (sign).
 *
 * The host trusts nothing it receives: parseRequest checks every field's type and size and refuses
 * unknown fields and operations.
 */
import { ERROR_CODES, type ErrorCode } from "../../errors.js";

export const PROTOCOL_VERSION = 1;

/** Limits the host enforces on every request. */
export const LIMITS = {
  /** Bytes a single sign request may carry (a TLS CertificateVerify input is ~130 bytes, a CSR ~400). */
  signData: 64 * 1024,
  /** Characters of a key's label. */
  label: 200,
  /** Certificates in a chain stored with setCertificate, and bytes of each. */
  chainLength: 10,
  certificateBytes: 64 * 1024,
  /** A request id: a non-negative safe integer, or a string of at most this many characters. */
  idChars: 64,
} as const;

/** Key ids are 128 random bits in lower-case hex. */
export const KEY_ID_RE = /^[0-9a-f]{32}$/;

export type RequestId = number | string;

export type KeyStoreRequest =
  | { v: 1; id: RequestId; op: "generate"; label: string }
  | { v: 1; id: RequestId; op: "list" }
  | { v: 1; id: RequestId; op: "sign"; keyId: string; data: Uint8Array }
  | { v: 1; id: RequestId; op: "delete"; keyId: string }
  | { v: 1; id: RequestId; op: "setCertificate"; keyId: string; chain: Uint8Array[] };

export type KeyStoreOp = KeyStoreRequest["op"];

/** What the store tells about a key (never the key itself). */
export interface KeyInfo {
  keyId: string;
  label: string;
  /** DER SubjectPublicKeyInfo of the key (ECDSA P-256). */
  spki: Uint8Array;
  createdAt: Date;
  /** The certificate chain stored with setCertificate, leaf first, DER; absent before enrollment. */
  chain?: Uint8Array[];
  /** Validity of the leaf certificate, when a chain is stored. */
  notBefore?: Date;
  notAfter?: Date;
}

/** The result type of each operation. */
export interface KeyStoreResults {
  generate: KeyInfo;
  list: KeyInfo[];
  sign: Uint8Array;
  delete: { deleted: true };
  setCertificate: KeyInfo;
}

export interface KeyStoreErrorBody {
  code: ErrorCode;
  message: string;
}

export type KeyStoreReply =
  | { v: 1; id: RequestId | null; ok: true; result: unknown }
  | { v: 1; id: RequestId | null; ok: false; error: KeyStoreErrorBody };

/** Why a request was refused; the host answers it as {ok: false, error: {code: "E_KEYSTORE", message}}. */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
}

const FIELDS: Record<KeyStoreOp, readonly string[]> = {
  generate: ["label"],
  list: [],
  sign: ["keyId", "data"],
  delete: ["keyId"],
  setCertificate: ["keyId", "chain"],
};

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** The request id if `value` carries a valid one, else null (so even a refusal can be matched). */
export function requestIdOf(value: unknown): RequestId | null {
  if (!isPlainObject(value)) return null;
  const id = value.id;
  if (typeof id === "number" && Number.isSafeInteger(id) && id >= 0) return id;
  if (typeof id === "string" && id.length > 0 && id.length <= LIMITS.idChars) return id;
  return null;
}

function keyIdOf(value: unknown): string {
  if (typeof value !== "string" || !KEY_ID_RE.test(value)) {
    throw new ProtocolError("keyId must be 32 lower-case hex digits");
  }
  return value;
}

function bytesOf(value: unknown, what: string, max: number, allowEmpty: boolean): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new ProtocolError(`${what} must be a Uint8Array`);
  if (value.byteLength > max) throw new ProtocolError(`${what} is larger than ${max} bytes`);
  if (!allowEmpty && value.byteLength === 0) throw new ProtocolError(`${what} is empty`);
  // A private copy: the caller's buffer (or a SharedArrayBuffer view) cannot change under us.
  return new Uint8Array(value);
}

/**
 * Checks an incoming message and returns it as a typed request; throws ProtocolError otherwise.
 * Refused: anything but a plain object, another protocol version, a bad id, an unknown op, a
 * missing or extra field, a wrong type, data over 64 KiB, a label over 200 characters, a chain of
 * more than 10 certificates or a certificate over 64 KiB.
 */
export function parseRequest(message: unknown): KeyStoreRequest {
  if (!isPlainObject(message)) throw new ProtocolError("a request must be a plain object");
  if (message.v !== PROTOCOL_VERSION) {
    throw new ProtocolError(`unsupported protocol version ${String(message.v).slice(0, 20)} (expected 1)`);
  }
  const id = requestIdOf(message);
  if (id === null) throw new ProtocolError("id must be a non-negative integer or a short string");
  const op = message.op;
  if (typeof op !== "string" || !Object.hasOwn(FIELDS, op)) {
    throw new ProtocolError(`unknown operation "${String(op).slice(0, 40)}"`);
  }
  const allowed = new Set(["v", "id", "op", ...(FIELDS[op as KeyStoreOp] ?? [])]);
  for (const key of Object.keys(message)) {
    if (!allowed.has(key)) throw new ProtocolError(`unexpected field "${key.slice(0, 40)}" in ${op}`);
  }
  switch (op as KeyStoreOp) {
    case "generate": {
      const label = message.label;
      if (typeof label !== "string") throw new ProtocolError("label must be a string");
      if (label.length > LIMITS.label)
        throw new ProtocolError(`label is longer than ${LIMITS.label} characters`);
      return { v: 1, id, op: "generate", label };
    }
    case "list":
      return { v: 1, id, op: "list" };
    case "sign":
      return {
        v: 1,
        id,
        op: "sign",
        keyId: keyIdOf(message.keyId),
        data: bytesOf(message.data, "data", LIMITS.signData, true),
      };
    case "delete":
      return { v: 1, id, op: "delete", keyId: keyIdOf(message.keyId) };
    case "setCertificate": {
      const chain = message.chain;
      if (!Array.isArray(chain) || chain.length === 0 || chain.length > LIMITS.chainLength) {
        throw new ProtocolError(`chain must be an array of 1 to ${LIMITS.chainLength} certificates`);
      }
      return {
        v: 1,
        id,
        op: "setCertificate",
        keyId: keyIdOf(message.keyId),
        chain: chain.map((c, i) => bytesOf(c, `chain[${i}]`, LIMITS.certificateBytes, false)),
      };
    }
  }
  throw new ProtocolError(`unknown operation "${op}"`);
}

/** Checks a reply's envelope (the client side); returns null for anything that is not a v1 reply. */
export function parseReply(message: unknown): KeyStoreReply | null {
  if (!isPlainObject(message) || message.v !== PROTOCOL_VERSION) return null;
  const id = message.id === null ? null : requestIdOf(message);
  if (id === null && message.id !== null) return null;
  if (message.ok === true && Object.hasOwn(message, "result")) {
    return { v: 1, id, ok: true, result: message.result };
  }
  if (message.ok === false && isPlainObject(message.error)) {
    const { code, message: text } = message.error;
    const known = typeof code === "string" && Object.hasOwn(ERROR_CODES, code);
    return {
      v: 1,
      id,
      ok: false,
      error: {
        code: known ? (code as ErrorCode) : "E_KEYSTORE",
        message: typeof text === "string" ? text.slice(0, 500) : "the key store failed",
      },
    };
  }
  return null;
}
