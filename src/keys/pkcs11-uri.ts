import { MtlsError } from "../errors.js";

/**
 * A PKCS#11 URI (RFC 7512) as mtls uses it to name a key: which token (label, serial, slot...), which
 * object (label and/or CKA_ID, and its type), and optionally where the module and the PIN are. Pure:
 * parsing and printing only.
 */
export interface Pkcs11Uri {
  token?: string;
  manufacturer?: string;
  serial?: string;
  model?: string;
  libraryManufacturer?: string;
  libraryDescription?: string;
  libraryVersion?: string;
  slotDescription?: string;
  slotManufacturer?: string;
  slotId?: number;
  /** CKA_LABEL of the object. */
  object?: string;
  /** CKA_ID of the object (bytes). */
  id?: Uint8Array;
  type?: Pkcs11ObjectType;
  /** Query attributes. */
  pinValue?: string;
  pinSource?: string;
  modulePath?: string;
  moduleName?: string;
}

export const PKCS11_OBJECT_TYPES = ["public", "private", "cert", "secret-key", "data"] as const;
export type Pkcs11ObjectType = (typeof PKCS11_OBJECT_TYPES)[number];

type TextKey = Exclude<keyof Pkcs11Uri, "id" | "slotId" | "type">;

// RFC 7512 section 2.3: path attribute names, and the query attribute names, to our field names.
const PATH_TEXT: Record<string, TextKey> = {
  token: "token",
  manufacturer: "manufacturer",
  serial: "serial",
  model: "model",
  "library-manufacturer": "libraryManufacturer",
  "library-description": "libraryDescription",
  "library-version": "libraryVersion",
  "slot-description": "slotDescription",
  "slot-manufacturer": "slotManufacturer",
  object: "object",
};
const QUERY_TEXT: Record<string, TextKey> = {
  "pin-value": "pinValue",
  "pin-source": "pinSource",
  "module-path": "modulePath",
  "module-name": "moduleName",
};

export function isPkcs11Uri(value: string): boolean {
  return /^pkcs11:/i.test(value);
}

function bad(uri: string, why: string): MtlsError {
  // Never echo a URI that may carry a PIN: show it with any pin-value masked.
  const shown = uri.replace(/(pin-value=)[^&]*/gi, "$1***");
  return new MtlsError("E_BAD_INPUT", `invalid PKCS#11 URI "${shown}": ${why}`);
}

function decodeBytes(uri: string, raw: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x25) {
      const hex = raw.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw bad(uri, `bad percent-encoding near "${raw.slice(i, i + 3)}"`);
      out.push(Number.parseInt(hex, 16));
      i += 2;
    } else {
      for (const b of Buffer.from(raw[i] as string, "utf8")) out.push(b);
    }
  }
  return new Uint8Array(out);
}

function decodeText(uri: string, raw: string): string {
  const bytes = decodeBytes(uri, raw);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw bad(uri, "an attribute is not valid UTF-8");
  }
}

/** Parses `pkcs11:token=mtls;object=intermediate;type=private?pin-source=file:/run/pin`. */
export function parsePkcs11Uri(uri: string): Pkcs11Uri {
  if (!isPkcs11Uri(uri)) throw bad(uri, 'it must start with "pkcs11:"');
  const body = uri.slice("pkcs11:".length);
  if (body.includes("#")) throw bad(uri, "a fragment (#) is not allowed");
  const q = body.indexOf("?");
  const path = q === -1 ? body : body.slice(0, q);
  const query = q === -1 ? "" : body.slice(q + 1);
  const result: Pkcs11Uri = {};
  const seen = new Set<string>();
  const each = (part: string, sep: string, apply: (name: string, value: string) => void) => {
    if (part === "") return;
    for (const attr of part.split(sep)) {
      const eq = attr.indexOf("=");
      if (eq <= 0) throw bad(uri, `"${attr}" is not name=value`);
      const name = attr.slice(0, eq).toLowerCase();
      if (seen.has(name)) throw bad(uri, `attribute "${name}" appears twice`);
      seen.add(name);
      apply(name, attr.slice(eq + 1));
    }
  };
  each(path, ";", (name, value) => {
    const field = PATH_TEXT[name];
    if (field) result[field] = decodeText(uri, value);
    else if (name === "id") result.id = decodeBytes(uri, value);
    else if (name === "type") {
      const type = decodeText(uri, value);
      if (!(PKCS11_OBJECT_TYPES as readonly string[]).includes(type))
        throw bad(uri, `unknown object type "${type}" (${PKCS11_OBJECT_TYPES.join(", ")})`);
      result.type = type as Pkcs11ObjectType;
    } else if (name === "slot-id") {
      const text = decodeText(uri, value);
      if (!/^\d{1,10}$/.test(text)) throw bad(uri, `slot-id "${text}" is not a number`);
      result.slotId = Number(text);
    } else if (!name.startsWith("x-")) throw bad(uri, `unknown attribute "${name}"`);
  });
  each(query, "&", (name, value) => {
    const field = QUERY_TEXT[name];
    if (field) result[field] = decodeText(uri, value);
    else if (!name.startsWith("x-")) throw bad(uri, `unknown query attribute "${name}"`);
  });
  return result;
}

// Characters RFC 7512 lets stand unencoded in a path or query value (unreserved plus a few of pchar).
const PLAIN = /[A-Za-z0-9\-._~:[\]@!$'()*+,]/;

function encodeText(value: string): string {
  let out = "";
  for (const ch of value) {
    if (PLAIN.test(ch)) out += ch;
    else for (const b of Buffer.from(ch, "utf8")) out += `%${b.toString(16).padStart(2, "0")}`;
  }
  return out;
}

function encodeBytes(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => `%${b.toString(16).padStart(2, "0")}`).join("");
}

/**
 * Prints a URI back. The PIN (pin-value) is left out unless `withPin`: what is stored, logged or
 * shown never carries it.
 */
export function formatPkcs11Uri(uri: Pkcs11Uri, opts: { withPin?: boolean } = {}): string {
  const path: string[] = [];
  for (const [name, field] of Object.entries(PATH_TEXT)) {
    const v = uri[field];
    if (v !== undefined) path.push(`${name}=${encodeText(v)}`);
  }
  if (uri.slotId !== undefined) path.push(`slot-id=${uri.slotId}`);
  if (uri.id !== undefined) path.push(`id=${encodeBytes(uri.id)}`);
  if (uri.type !== undefined) path.push(`type=${uri.type}`);
  const query: string[] = [];
  for (const [name, field] of Object.entries(QUERY_TEXT)) {
    const v = uri[field];
    if (v === undefined || (field === "pinValue" && !opts.withPin)) continue;
    query.push(`${name}=${encodeText(v)}`);
  }
  return `pkcs11:${path.join(";")}${query.length ? `?${query.join("&")}` : ""}`;
}

/** The URI without its PIN, for state records, logs and messages. */
export function redactPkcs11Uri(uri: string): string {
  return formatPkcs11Uri(parsePkcs11Uri(uri));
}
