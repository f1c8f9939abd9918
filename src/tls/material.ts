import { createHash, createPrivateKey, type KeyObject, randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { type FSWatcher, watch as fsWatch } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import { createSecureContext, type SecureContext, type SecureContextOptions } from "node:tls";
import { ioError } from "../config/files.js";
import { isMtlsError, MtlsError } from "../errors.js";
import { engineFailure, isPkcs11Uri, type TokenTlsKeyOptions, tokenTlsKey } from "../keys/index.js";
import { type CertInfo, certToPem, parseCertificates } from "../pki/certinfo.js";
import { spkiOf } from "../pki/keys.js";
import { toBuffer } from "../pki/pem.js";
import { verifyChain } from "../pki/verify.js";
import type { TlsFiles, TlsMaterial } from "./types.js";

export interface LoadTlsOptions {
  /** For an encrypted PKCS#8 key file. */
  passphrase?: string;
  /** The time validity is checked at (default: now). */
  clock?: () => Date;
  /**
   * More options for every context built (ciphers, sessionTimeout, ticketKeys to share session
   * tickets between processes, ...). cert, key, ca and passphrase come from the files.
   */
  contextOptions?: Omit<SecureContextOptions, "cert" | "key" | "ca" | "passphrase" | "pfx">;
  /**
   * When `files.key` is a PKCS#11 URI (`pkcs11:token=...;object=...`): module, PIN and engine (else
   * MTLS_PKCS11_MODULE, MTLS_PKCS11_PIN / MTLS_PKCS11_PIN_FILE, MTLS_PKCS11_ENGINE). See keys/pkcs11-tls.ts.
   */
  pkcs11?: TokenTlsKeyOptions;
}

/** Quiet time after the last file event before reloading: a renewal replaces several files. */
const DEBOUNCE_MS = 100;

/**
 * The cipher suites offered: TLS 1.3's three (Node's order), and for TLS 1.2 only ECDHE with an
 * AEAD (GCM, ChaCha20-Poly1305), so no CBC (SHA-1 or SHA-2 MAC), CCM-8, ARIA, static RSA or
 * unauthenticated suite is ever accepted.
 */
export const DEFAULT_CIPHERS = [
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
  "TLS_AES_128_GCM_SHA256",
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

interface Loaded {
  hash: string;
  certificate: CertInfo;
  chain: CertInfo[];
  anchors: CertInfo[];
  options: SecureContextOptions;
  context: SecureContext;
}

/**
 * Loads an endpoint's certificate, key and trust anchors, checks them (the key matches the
 * certificate, which chains to an anchor and is within its validity) and builds a TLS 1.2+ context.
 * Throws an MtlsError when they do not pass; later reloads that do not pass are refused and the
 * material in force stays.
 */
export async function loadTlsMaterial(files: TlsFiles, opts: LoadTlsOptions = {}): Promise<TlsMaterial> {
  const ticketKeys = opts.contextOptions?.ticketKeys ?? randomBytes(48);
  const read = await readAll(files);
  const loaded = await build(files, read, { ...opts, ticketKeys });
  return new ReloadableMaterial(files, loaded, { ...opts, ticketKeys });
}

interface FileContents {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  hash: string;
}

async function readAll(files: TlsFiles): Promise<FileContents> {
  const [cert, key, ca] = await Promise.all([
    readOne(files.cert, "certificate file"),
    // A key in a PKCS#11 token is named by its URI: nothing to read, the URI itself is the content.
    isPkcs11Uri(files.key) ? Promise.resolve(Buffer.from(files.key)) : readOne(files.key, "key file"),
    readOne(files.ca, "CA file"),
  ]);
  const h = createHash("sha256");
  for (const b of [cert, key, ca]) h.update(`${b.length}:`).update(b);
  return { cert, key, ca, hash: h.digest("hex") };
}

async function readOne(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new MtlsError("E_NOT_FOUND", `${what} not found: ${path}`, { cause: err });
    if (code === "EISDIR") throw new MtlsError("E_BAD_INPUT", `${path} is a directory, not a ${what}`);
    throw ioError(`cannot read ${what} ${path}`, err);
  }
}

/** Rewraps an error about one of the files so the message says which. */
function about(path: string, err: unknown, fallback: MtlsError["code"] = "E_BAD_INPUT"): MtlsError {
  if (isMtlsError(err)) return new MtlsError(err.code, `${path}: ${err.message}`, { cause: err });
  return new MtlsError(fallback, `${path}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

function parseKey(files: TlsFiles, pem: Buffer, passphrase: string | undefined): KeyObject {
  try {
    return createPrivateKey({ key: pem, format: "pem", ...(passphrase !== undefined ? { passphrase } : {}) });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    // Without a passphrase OpenSSL 3 reports an encrypted key as "interrupted or cancelled".
    const encrypted =
      e.code === "ERR_MISSING_PASSPHRASE" ||
      e.code === "ERR_OSSL_CRYPTO_INTERRUPTED_OR_CANCELLED" ||
      pem.includes("-----BEGIN ENCRYPTED PRIVATE KEY-----");
    if (passphrase === undefined && encrypted) {
      throw new MtlsError("E_PASSPHRASE", `${files.key} is encrypted: a passphrase is needed`, {
        cause: err,
      });
    }
    if (passphrase !== undefined && (e.code === "ERR_OSSL_BAD_DECRYPT" || /bad decrypt/i.test(e.message))) {
      throw new MtlsError("E_PASSPHRASE", `wrong passphrase for ${files.key}`, { cause: err });
    }
    throw new MtlsError("E_BAD_INPUT", `${files.key}: not a PEM private key (${e.message})`, { cause: err });
  }
}

async function build(
  files: TlsFiles,
  read: FileContents,
  opts: LoadTlsOptions & { ticketKeys: Buffer },
): Promise<Loaded> {
  let certs: CertInfo[];
  let anchors: CertInfo[];
  try {
    certs = parseCertificates(read.cert);
  } catch (err) {
    throw about(files.cert, err);
  }
  try {
    anchors = parseCertificates(read.ca);
  } catch (err) {
    throw about(files.ca, err);
  }
  const [certificate, ...chain] = certs as [CertInfo, ...CertInfo[]];
  const tokenKey = isPkcs11Uri(files.key) ? tokenTlsKey(files.key, opts.pkcs11) : undefined;
  const key = tokenKey ? undefined : parseKey(files, read.key, opts.passphrase);
  const keySpki = tokenKey ? tokenKey.spki : spkiOf(key as KeyObject);
  if (!toBuffer(keySpki).equals(toBuffer(certificate.spki))) {
    throw new MtlsError(
      "E_BAD_INPUT",
      `the key in ${files.key} does not match the certificate in ${files.cert} (${certificate.subject}, serial ${certificate.serial})`,
    );
  }
  const at = (opts.clock ?? (() => new Date()))();
  try {
    await verifyChain({ leaf: certificate, intermediates: chain, anchors, at, purpose: "any" });
  } catch (err) {
    throw about(files.cert, err, "E_UNTRUSTED");
  }
  const options: SecureContextOptions = {
    minVersion: "TLSv1.2",
    ciphers: DEFAULT_CIPHERS,
    ...opts.contextOptions,
    ticketKeys: opts.ticketKeys,
    // Re-encoded from what was parsed: PEM even when a file held DER, and nothing but certificates.
    cert: certs.map((c) => certToPem(c.der)).join(""),
    // A token key signs inside the token, through OpenSSL's pkcs11 engine; the PIN rides in the
    // identifier, in memory only.
    ...(tokenKey
      ? { privateKeyEngine: tokenKey.engine, privateKeyIdentifier: tokenKey.identifier }
      : { key: (key as KeyObject).export({ type: "pkcs8", format: "pem" }) as string }),
    ca: anchors.map((c) => certToPem(c.der)).join(""),
  };
  let context: SecureContext;
  try {
    context = createSecureContext(options);
  } catch (err) {
    throw tokenKey ? engineFailure(err, tokenKey) : about(files.cert, err);
  }
  return { hash: read.hash, certificate, chain, anchors, options, context };
}

class ReloadableMaterial extends EventEmitter implements TlsMaterial {
  private loaded: Loaded;
  /** Content (or failure) last refused, so a bad file is reported once, not on every poll. */
  private refused: string | undefined;
  private queue: Promise<boolean> = Promise.resolve(false);
  private watchers: FSWatcher[] = [];
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly files: TlsFiles,
    loaded: Loaded,
    private readonly opts: LoadTlsOptions & { ticketKeys: Buffer },
  ) {
    super();
    this.loaded = loaded;
  }

  current(): SecureContext {
    return this.loaded.context;
  }

  contextOptions(): SecureContextOptions {
    return { ...this.loaded.options };
  }

  get certificate(): CertInfo {
    return this.loaded.certificate;
  }

  get anchors(): CertInfo[] {
    return this.loaded.anchors;
  }

  get chain(): CertInfo[] {
    return this.loaded.chain;
  }

  reload(): Promise<boolean> {
    // One reload at a time: a file event, a poll and SIGHUP may all ask at once.
    this.queue = this.queue.then(
      () => this.reloadNow(),
      () => this.reloadNow(),
    );
    return this.queue;
  }

  private async reloadNow(): Promise<boolean> {
    let read: FileContents;
    try {
      read = await readAll(this.files);
    } catch (err) {
      return this.refuse(`read:${(err as Error).message}`, err);
    }
    if (read.hash === this.loaded.hash) {
      this.refused = undefined; // back to what is in force: a later bad file is news again
      return false;
    }
    if (read.hash === this.refused) return false;
    let next: Loaded;
    try {
      next = await build(this.files, read, this.opts);
    } catch (err) {
      return this.refuse(read.hash, err);
    }
    this.loaded = next;
    this.refused = undefined;
    this.emit("reload", next.certificate);
    return true;
  }

  private refuse(key: string, err: unknown): false {
    if (key === this.refused) return false;
    this.refused = key;
    const error = isMtlsError(err)
      ? err
      : new MtlsError("E_BAD_INPUT", (err as Error)?.message ?? String(err), { cause: err });
    this.emit("reloadError", error);
    return false;
  }

  watch(opts: { intervalMs?: number } = {}): void {
    if (this.closed) return;
    if (this.watchers.length === 0) {
      const paths = [this.files.cert, this.files.key, this.files.ca].map((p) => resolve(p));
      const names = new Set(paths.map((p) => basename(p)));
      // Watch the folders, not the files: an atomic replacement (temp file + rename, as editors,
      // cert-manager, certbot and mtls itself do) leaves a file watch on the old, unlinked inode.
      for (const dir of new Set(paths.map((p) => dirname(p)))) {
        try {
          const watcher = fsWatch(dir, { persistent: false }, (_event, filename) => {
            // Kubernetes secret volumes swap a "..data" symlink; other names are unrelated files.
            const name = filename?.toString();
            if (name === undefined || names.has(name) || name.startsWith("..")) this.scheduleReload();
          });
          watcher.on("error", (err) => {
            this.emit("reloadError", ioError(`cannot watch ${dir}`, err));
            watcher.close();
          });
          this.watchers.push(watcher);
        } catch (err) {
          this.emit("reloadError", ioError(`cannot watch ${dir}`, err));
        }
      }
    }
    if (opts.intervalMs && opts.intervalMs > 0) {
      if (this.pollTimer) clearInterval(this.pollTimer);
      this.pollTimer = setInterval(() => void this.reload(), opts.intervalMs);
      this.pollTimer.unref();
    }
  }

  private scheduleReload(): void {
    if (this.closed) return;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      if (!this.closed) void this.reload();
    }, DEBOUNCE_MS);
    this.debounceTimer.unref();
  }

  close(): void {
    this.closed = true;
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.pollTimer = undefined;
    this.debounceTimer = undefined;
  }
}
