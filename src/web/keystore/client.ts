/**
 * The page's side of the key store protocol. KeyStoreClient.connect(endpoint) takes the Worker (or
 * a MessagePort, or windowEndpoint(...) for an iframe on another origin) and offers generate /
 * list / sign / delete / setCertificate, plus identity(keyId): the ClientIdentity the TLS client
 * authenticates with. The page never sees a key, only public keys, certificates and signatures.
 */
import { MtlsError } from "../../errors.js";
import type { ClientIdentity } from "../tls/index.js";
import type { MessageEndpoint } from "./host.js";
import { type KeyInfo, type KeyStoreResults, LIMITS, parseReply, type RequestId } from "./protocol.js";

/** TLS SignatureScheme ecdsa_secp256r1_sha256. */
export const ECDSA_P256_SHA256 = 0x0403;

export interface KeyStoreClientOptions {
  /** How long one request may take before it fails with E_KEYSTORE (default 30 s). */
  timeoutMs?: number;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

const isDate = (v: unknown): v is Date => v instanceof Date && !Number.isNaN(v.getTime());
const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;

/** A reply's KeyInfo, checked: the client believes a store only as far as the types go. */
function keyInfo(value: unknown): KeyInfo {
  const v = value as Partial<KeyInfo> | null;
  if (
    !v ||
    typeof v.keyId !== "string" ||
    typeof v.label !== "string" ||
    !isBytes(v.spki) ||
    !isDate(v.createdAt) ||
    (v.chain !== undefined && !(Array.isArray(v.chain) && v.chain.every(isBytes))) ||
    (v.notBefore !== undefined && !isDate(v.notBefore)) ||
    (v.notAfter !== undefined && !isDate(v.notAfter))
  ) {
    throw new MtlsError("E_KEYSTORE", "the key store answered with a malformed key description");
  }
  return v as KeyInfo;
}

export class KeyStoreClient {
  #endpoint: MessageEndpoint;
  #pending = new Map<RequestId, Pending>();
  #nextId = 1;
  #timeoutMs: number;
  #closed = false;
  #listener = (event: MessageEvent) => this.#onMessage(event);
  /** A Worker whose script fails (to load, or at the top level) fires "error": fail fast, not by timeout. */
  #onError = (event: Event) => {
    const detail = (event as ErrorEvent).message;
    this.#failAll(
      `the key store failed${typeof detail === "string" && detail ? `: ${detail.slice(0, 200)}` : ""}`,
    );
  };

  private constructor(endpoint: MessageEndpoint, options: KeyStoreClientOptions) {
    this.#endpoint = endpoint;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    endpoint.addEventListener("message", this.#listener);
    endpoint.addEventListener("error", this.#onError);
    endpoint.start?.();
  }

  /** A client talking to the key store behind `endpoint` (a Worker, a MessagePort, windowEndpoint()). */
  static connect(endpoint: MessageEndpoint, options: KeyStoreClientOptions = {}): KeyStoreClient {
    return new KeyStoreClient(endpoint, options);
  }

  /** Creates a non-extractable ECDSA P-256 key in the store. */
  async generate(label = ""): Promise<KeyInfo> {
    return keyInfo(await this.#call("generate", { label }));
  }

  /** Every key in the store (public data only), oldest first. */
  async list(): Promise<KeyInfo[]> {
    const result = await this.#call("list", {});
    if (!Array.isArray(result))
      throw new MtlsError("E_KEYSTORE", "the key store answered list with a non-array");
    return result.map(keyInfo);
  }

  /** The key's description, or E_KEYSTORE when the store holds no such key. */
  async get(keyId: string): Promise<KeyInfo> {
    const found = (await this.list()).find((k) => k.keyId === keyId);
    if (!found) throw new MtlsError("E_KEYSTORE", `the key store holds no key ${keyId}`);
    return found;
  }

  /** ECDSA P-256 with SHA-256 over `data` (at most 64 KiB); the raw r||s WebCrypto produces (64 bytes). */
  async sign(keyId: string, data: Uint8Array): Promise<Uint8Array> {
    if (data.byteLength > LIMITS.signData) {
      throw new MtlsError("E_KEYSTORE", `the key store signs at most ${LIMITS.signData} bytes`);
    }
    const sig = await this.#call("sign", { keyId, data });
    if (!isBytes(sig) || sig.length !== 64) {
      throw new MtlsError("E_KEYSTORE", "the key store answered sign with a malformed signature");
    }
    return sig;
  }

  async delete(keyId: string): Promise<void> {
    await this.#call("delete", { keyId });
  }

  /** Stores the issued chain (leaf first, DER) beside the key; the leaf must certify this key. */
  async setCertificate(keyId: string, chain: Uint8Array[]): Promise<KeyInfo> {
    return keyInfo(await this.#call("setCertificate", { keyId, chain }));
  }

  /** The key as a TLS client identity: its stored chain and a signer (scheme 0x0403). */
  async identity(keyId: string): Promise<ClientIdentity> {
    const info = await this.get(keyId);
    if (!info.chain?.length) {
      throw new MtlsError("E_KEYSTORE", `key ${keyId} has no certificate yet (enroll it first)`);
    }
    return {
      chain: info.chain,
      scheme: ECDSA_P256_SHA256,
      sign: (data) => this.sign(keyId, data),
    };
  }

  /** Stops listening; requests still waiting fail with E_KEYSTORE. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#endpoint.removeEventListener?.("message", this.#listener);
    this.#endpoint.removeEventListener?.("error", this.#onError);
    this.#failAll("the key store client was closed");
  }

  #failAll(message: string): void {
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new MtlsError("E_KEYSTORE", message));
      this.#pending.delete(id);
    }
  }

  #call<Op extends keyof KeyStoreResults>(op: Op, fields: Record<string, unknown>): Promise<unknown> {
    if (this.#closed) return Promise.reject(new MtlsError("E_KEYSTORE", "the key store client is closed"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new MtlsError("E_KEYSTORE", `the key store did not answer ${op} within ${this.#timeoutMs} ms`),
        );
      }, this.#timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      try {
        this.#endpoint.postMessage({ v: 1, id, op, ...fields });
      } catch (err) {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(new MtlsError("E_KEYSTORE", `could not send ${op} to the key store`, { cause: err }));
      }
    });
  }

  #onMessage(event: MessageEvent): void {
    const reply = parseReply(event.data);
    if (!reply || reply.id === null) return;
    const pending = this.#pending.get(reply.id);
    if (!pending) return;
    this.#pending.delete(reply.id);
    clearTimeout(pending.timer);
    if (reply.ok) pending.resolve(reply.result);
    else pending.reject(new MtlsError(reply.error.code, reply.error.message));
  }
}

/**
 * An endpoint for a key store served in an iframe on another origin: requests go to `target` (the
 * iframe's contentWindow) with `targetOrigin`, and only messages from that window and origin are
 * taken as replies. `self` is the page's own window.
 */
export function windowEndpoint(target: Window, targetOrigin: string, self: Window): MessageEndpoint {
  const wrapped = new Map<(event: MessageEvent) => void, (event: MessageEvent) => void>();
  return {
    postMessage: (message) => target.postMessage(message, targetOrigin),
    addEventListener(type, listener) {
      // Only the protocol's messages: the page's own "error" events are none of the store's.
      if (type !== "message") return;
      const filter = (event: MessageEvent) => {
        if (event.source === target && event.origin === targetOrigin) listener(event);
      };
      wrapped.set(listener, filter);
      self.addEventListener("message", filter);
    },
    removeEventListener(type, listener) {
      if (type !== "message") return;
      const filter = wrapped.get(listener);
      if (filter) self.removeEventListener("message", filter);
      wrapped.delete(listener);
    },
  };
}
