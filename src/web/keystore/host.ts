/**
 * The key store's side of the protocol: answers generate / list / sign / delete / setCertificate
 * on any MessagePort-like endpoint. The same code serves
 *   - a dedicated Worker: serveKeyStore(self, storage) (worker.ts);
 *   - an iframe on a separate origin: serveKeyStore(window, storage, { allowedOrigins: [...] }),
 *     answering each allowed window through event.source with its origin as targetOrigin. Put it
 *     on the same site (keys.example.com for app.example.com, or another port): a cross-site
 *     iframe's IndexedDB is third-party storage, which Chromium refuses ("user denied permission")
 *     and other browsers partition or block;
 *   - a MessageChannel port (tests, or a port handed over once by an iframe).
 * Keys are created here as non-extractable ECDSA P-256 CryptoKeys and never leave: no operation
 * returns one, and replies carry only public data and signatures.
 */
import { isMtlsError, MtlsError } from "../../errors.js";
import { canonicalSpki, leafFacts, sameBytes } from "./cert.js";
import {
  type KeyInfo,
  type KeyStoreReply,
  type KeyStoreRequest,
  ProtocolError,
  parseRequest,
  type RequestId,
  requestIdOf,
} from "./protocol.js";
import type { KeyRecord, KeyStorage } from "./storage.js";

/** Anything that takes messages and delivers "message" events: Worker scope, Window, MessagePort. */
export interface MessageEndpoint {
  postMessage(message: unknown): void;
  /** "message" events carry the protocol; the client also listens for a Worker's "error". */
  addEventListener(type: "message" | "error", listener: (event: MessageEvent) => void): void;
  removeEventListener?(type: "message" | "error", listener: (event: MessageEvent) => void): void;
  /** MessagePort needs start() when listened to with addEventListener. */
  start?(): void;
}

export interface ServeOptions {
  /**
   * Origins allowed to use the store when it serves a window (iframe on its own origin). Messages
   * that carry an origin (window messages) are answered only when it is listed; without this
   * option only origin-less messages (Worker, MessagePort) are served.
   */
  allowedOrigins?: string[];
  /** Most keys the store holds (default 100); generate is refused beyond it. */
  maxKeys?: number;
}

export interface KeyStoreHost {
  /** Stops answering (the storage stays open; close it separately). */
  close(): void;
}

const EC_P256: EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };
const ECDSA_SHA256: EcdsaParams = { name: "ECDSA", hash: "SHA-256" };

function keystoreError(message: string): MtlsError {
  return new MtlsError("E_KEYSTORE", message);
}

function randomKeyId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function infoOf(r: KeyRecord): KeyInfo {
  return {
    keyId: r.keyId,
    label: r.label,
    spki: r.spki.slice(),
    createdAt: new Date(r.createdAt.getTime()),
    ...(r.chain ? { chain: r.chain.map((c) => c.slice()) } : {}),
    ...(r.notBefore ? { notBefore: new Date(r.notBefore.getTime()) } : {}),
    ...(r.notAfter ? { notAfter: new Date(r.notAfter.getTime()) } : {}),
  };
}

/** The operations themselves, independent of messaging (serveKeyStore wraps them). */
export function keyStoreOperations(storage: KeyStorage, options: { maxKeys?: number } = {}) {
  const maxKeys = options.maxKeys ?? 100;
  // Writes run one after another so a setCertificate cannot resurrect a key deleted meanwhile.
  let writes: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = writes.then(fn, fn);
    writes = next.catch(() => undefined);
    return next;
  };
  const mustGet = async (keyId: string): Promise<KeyRecord> => {
    const r = await storage.get(keyId);
    if (!r) throw keystoreError(`the key store holds no key ${keyId}`);
    return r;
  };

  return {
    generate: (label: string): Promise<KeyInfo> =>
      serial(async () => {
        const existing = await storage.list();
        if (existing.length >= maxKeys) {
          throw keystoreError(`the key store is full (${maxKeys} keys); delete keys first`);
        }
        // Strictly after every key there (generations one at a time): "oldest first" stays the order
        // of generation even for keys made within one millisecond.
        const newest = existing.reduce((t, r) => Math.max(t, r.createdAt.getTime()), 0);
        const pair = await crypto.subtle.generateKey(EC_P256, false, ["sign", "verify"]);
        if (pair.privateKey.extractable) throw keystoreError("the platform made an extractable key");
        const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
        const record: KeyRecord = {
          keyId: randomKeyId(),
          label,
          createdAt: new Date(Math.max(Date.now(), newest + 1)),
          privateKey: pair.privateKey,
          spki,
        };
        await storage.put(record);
        return infoOf(record);
      }),

    list: async (): Promise<KeyInfo[]> => (await storage.list()).map(infoOf),

    sign: async (keyId: string, data: Uint8Array): Promise<Uint8Array> => {
      const r = await mustGet(keyId);
      return new Uint8Array(await crypto.subtle.sign(ECDSA_SHA256, r.privateKey, data as BufferSource));
    },

    delete: (keyId: string): Promise<{ deleted: true }> =>
      serial(async () => {
        if (!(await storage.delete(keyId))) throw keystoreError(`the key store holds no key ${keyId}`);
        return { deleted: true as const };
      }),

    setCertificate: (keyId: string, chain: Uint8Array[]): Promise<KeyInfo> =>
      serial(async () => {
        const r = await mustGet(keyId);
        const leaf = leafFacts(chain[0] as Uint8Array);
        for (const cert of chain.slice(1)) leafFacts(cert); // each must be a certificate
        if (!sameBytes(leaf.spki, canonicalSpki(r.spki))) {
          throw keystoreError(`the certificate's public key is not the public key of key ${keyId}`);
        }
        const updated: KeyRecord = { ...r, chain, notBefore: leaf.notBefore, notAfter: leaf.notAfter };
        await storage.put(updated);
        return infoOf(updated);
      }),
  };
}

export type KeyStoreOperations = ReturnType<typeof keyStoreOperations>;

async function perform(ops: KeyStoreOperations, req: KeyStoreRequest): Promise<unknown> {
  switch (req.op) {
    case "generate":
      return ops.generate(req.label);
    case "list":
      return ops.list();
    case "sign":
      return ops.sign(req.keyId, req.data);
    case "delete":
      return ops.delete(req.keyId);
    case "setCertificate":
      return ops.setCertificate(req.keyId, req.chain);
  }
}

function errorReply(id: RequestId | null, err: unknown): KeyStoreReply {
  if (isMtlsError(err)) return { v: 1, id, ok: false, error: { code: err.code, message: err.message } };
  if (err instanceof ProtocolError) {
    return { v: 1, id, ok: false, error: { code: "E_KEYSTORE", message: `bad request: ${err.message}` } };
  }
  const detail = err instanceof Error ? `: ${err.name}: ${err.message}` : "";
  return { v: 1, id, ok: false, error: { code: "E_KEYSTORE", message: `the key store failed${detail}` } };
}

/** Answers key store requests arriving on `endpoint` with keys kept in `storage`. */
export function serveKeyStore(
  endpoint: MessageEndpoint,
  storage: KeyStorage,
  options: ServeOptions = {},
): KeyStoreHost {
  const ops = keyStoreOperations(storage, options.maxKeys === undefined ? {} : { maxKeys: options.maxKeys });
  const allowed = options.allowedOrigins ? new Set(options.allowedOrigins) : undefined;
  let closed = false;

  const listener = (event: MessageEvent) => {
    if (closed) return;
    const origin = typeof event.origin === "string" ? event.origin : "";
    let reply: (message: KeyStoreReply) => void;
    if (allowed) {
      // A window: only listed origins, answered to the very window that asked, at its origin.
      const source = event.source as { postMessage?: unknown } | null;
      if (!allowed.has(origin) || !source || typeof source.postMessage !== "function") return;
      reply = (message) => (source as Window).postMessage(message, origin);
    } else {
      if (origin !== "") return; // a window message, and no origin was allowed
      reply = (message) => endpoint.postMessage(message);
    }
    const data: unknown = event.data;
    let req: KeyStoreRequest;
    try {
      req = parseRequest(data);
    } catch (err) {
      reply(errorReply(requestIdOf(data), err));
      return;
    }
    perform(ops, req).then(
      (result) => {
        if (!closed) reply({ v: 1, id: req.id, ok: true, result });
      },
      (err) => {
        if (!closed) reply(errorReply(req.id, err));
      },
    );
  };

  endpoint.addEventListener("message", listener);
  endpoint.start?.();
  return {
    close() {
      closed = true;
      endpoint.removeEventListener?.("message", listener);
    },
  };
}
