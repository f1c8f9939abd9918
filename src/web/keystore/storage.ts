/**
 * Where the key store keeps its keys. A record holds the non-extractable CryptoKey itself:
 * IndexedDB stores CryptoKey objects by structured clone, which keeps them non-extractable (the
 * browser stores the key material but never hands it to script). memoryStorage keeps the same
 * records in a Map for an ephemeral store (tests in Node, a private-browsing fallback).
 */
import { MtlsError } from "../../errors.js";

export interface KeyRecord {
  keyId: string;
  label: string;
  createdAt: Date;
  /** The ECDSA P-256 private key, extractable: false, usages ["sign"]. */
  privateKey: CryptoKey;
  /** DER SubjectPublicKeyInfo of the key. */
  spki: Uint8Array;
  /** Certificate chain (leaf first, DER), once set. */
  chain?: Uint8Array[];
  notBefore?: Date;
  notAfter?: Date;
}

export interface KeyStorage {
  get(keyId: string): Promise<KeyRecord | undefined>;
  /** Every record, oldest first. */
  list(): Promise<KeyRecord[]>;
  /** Inserts or replaces the record with this keyId. */
  put(record: KeyRecord): Promise<void>;
  /** True when a record was removed. */
  delete(keyId: string): Promise<boolean>;
  close(): void;
}

const byCreation = (a: KeyRecord, b: KeyRecord) =>
  a.createdAt.getTime() - b.createdAt.getTime() || (a.keyId < b.keyId ? -1 : 1);

/** An in-memory store: keys live as long as this object (the worker or the test). */
export function memoryStorage(): KeyStorage {
  const records = new Map<string, KeyRecord>();
  const copy = (r: KeyRecord): KeyRecord => ({
    ...r,
    spki: r.spki.slice(),
    ...(r.chain ? { chain: r.chain.map((c) => c.slice()) } : {}),
  });
  return {
    async get(keyId) {
      const r = records.get(keyId);
      return r && copy(r);
    },
    async list() {
      return [...records.values()].map(copy).sort(byCreation);
    },
    async put(record) {
      records.set(record.keyId, copy(record));
    },
    async delete(keyId) {
      return records.delete(keyId);
    },
    close() {
      records.clear();
    },
  };
}

/** The database the worker (worker.ts) keeps its keys in; object store "keys", keyPath "keyId". */
export const KEYSTORE_DB_NAME = "mtls-keystore";

const STORE = "keys";
const DB_VERSION = 1;

function failure(what: string, cause: unknown): MtlsError {
  const detail = cause instanceof Error ? `: ${cause.message}` : "";
  return new MtlsError("E_KEYSTORE", `IndexedDB ${what} failed${detail}`, { cause });
}

function request<T>(req: IDBRequest<T>, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(failure(what, req.error));
  });
}

/** Settles when the transaction commits; rejects when it aborts or fails. */
function done(tx: IDBTransaction, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(failure(what, tx.error));
    tx.onabort = () => reject(failure(what, tx.error ?? new Error("transaction aborted")));
  });
}

/** What IndexedDB gives back, checked before it is believed (another script of the origin may have written it). */
function toRecord(value: unknown): KeyRecord {
  const r = value as Partial<KeyRecord> | undefined;
  if (
    !r ||
    typeof r.keyId !== "string" ||
    typeof r.label !== "string" ||
    !(r.createdAt instanceof Date) ||
    !(r.spki instanceof Uint8Array) ||
    typeof r.privateKey !== "object" ||
    r.privateKey === null ||
    (r.chain !== undefined && !(Array.isArray(r.chain) && r.chain.every((c) => c instanceof Uint8Array)))
  ) {
    throw new MtlsError("E_KEYSTORE", "IndexedDB holds a malformed key record");
  }
  return r as KeyRecord;
}

/**
 * Keys in the IndexedDB database `dbName` (object store "keys", keyPath "keyId"). The database is
 * opened on first use; every write resolves only once its transaction has committed. A newer
 * version of the database opened elsewhere closes this connection (it reopens on the next call).
 */
export function indexedDbStorage(dbName: string): KeyStorage {
  let opening: Promise<IDBDatabase> | undefined;

  const open = (): Promise<IDBDatabase> => {
    if (opening) return opening;
    const idb = (globalThis as { indexedDB?: IDBFactory }).indexedDB;
    if (!idb) return Promise.reject(new MtlsError("E_KEYSTORE", "IndexedDB is not available here"));
    const attempt = new Promise<IDBDatabase>((resolve, reject) => {
      let req: IDBOpenDBRequest;
      try {
        req = idb.open(dbName, DB_VERSION);
      } catch (err) {
        reject(failure("open", err));
        return;
      }
      req.onupgradeneeded = () => {
        const db = req.result;
        if (!db.objectStoreNames.contains(STORE)) db.createObjectStore(STORE, { keyPath: "keyId" });
      };
      req.onblocked = () =>
        reject(new MtlsError("E_KEYSTORE", "IndexedDB open is blocked by another connection"));
      req.onerror = () => reject(failure("open", req.error));
      req.onsuccess = () => {
        const db = req.result;
        db.onversionchange = () => {
          db.close();
          opening = undefined;
        };
        db.onclose = () => {
          opening = undefined;
        };
        resolve(db);
      };
    });
    opening = attempt;
    attempt.catch(() => {
      if (opening === attempt) opening = undefined;
    });
    return attempt;
  };

  /** Runs `fn` in one transaction and resolves with its request's result once the transaction commits. */
  const run = async <T>(
    mode: IDBTransactionMode,
    what: string,
    fn: (store: IDBObjectStore) => IDBRequest<T>,
  ): Promise<T> => {
    const db = await open();
    let tx: IDBTransaction;
    let req: IDBRequest<T>;
    try {
      tx = db.transaction(STORE, mode);
      req = fn(tx.objectStore(STORE));
    } catch (err) {
      throw failure(what, err);
    }
    const [result] = await Promise.all([request(req, what), done(tx, what)]);
    return result;
  };

  return {
    async get(keyId) {
      const value = await run("readonly", "read", (s) => s.get(keyId));
      return value === undefined ? undefined : toRecord(value);
    },
    async list() {
      const values = await run("readonly", "read", (s) => s.getAll());
      return values.map(toRecord).sort(byCreation);
    },
    async put(record) {
      await run("readwrite", "write", (s) => s.put(record));
    },
    async delete(keyId) {
      // One transaction: the count and the delete see the same state.
      let found = 0;
      await run("readwrite", "delete", (s) => {
        const count = s.count(keyId);
        count.onsuccess = () => {
          found = count.result;
        };
        return s.delete(keyId);
      });
      return found > 0;
    },
    close() {
      const current = opening;
      opening = undefined;
      current?.then((db) => db.close()).catch(() => undefined);
    },
  };
}
