import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { commitFile, readFileOrThrow, stageFile } from "../config/files.js";
import { MtlsError } from "../errors.js";
import { type CertInfo, parseCertificates } from "../pki/certinfo.js";
import { privateKeyFromPem, spkiOf } from "../pki/keys.js";
import { verifyChain } from "../pki/verify.js";
import { issuedAtFromMtime } from "./schedule.js";

/** The files of one certificate the agent keeps: the chain (leaf first), its key, the CA's root. */
export interface CertFiles {
  cert: string;
  key: string;
  /** Where the root goes (and is read from), when the agent keeps it too. */
  ca?: string;
}

/** What the agent needs to know about the certificate currently in place. */
export interface CurrentCert {
  serial: string;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  /** When it was issued, from the file's modification time (schedule.ts issuedAtFromMtime). */
  issuedAt?: Date;
  /** SHA-256 of the leaf, to tell a changed file from a touched one. */
  fingerprint: string;
  /** The whole file (leaf + intermediates), PEM. */
  chainPem: string;
  keyPem: string;
}

const BEGIN_CERT = "-----BEGIN CERTIFICATE-----";

/**
 * Reads the certificate and key files, checks the key belongs to the certificate and returns both.
 * A renewal interrupted between its two renames (certificate in place, key not yet) is finished
 * first: the new key is still in its staged temporary file beside the key.
 */
export function readCurrent(files: CertFiles): CurrentCert {
  finishInterruptedRekey(files);
  const chainPem = readFileOrThrow(files.cert, "certificate file").toString("utf8");
  const keyPem = readFileOrThrow(files.key, "key file").toString("utf8");
  let leaf: CertInfo;
  try {
    const certs = parseCertificates(chainPem);
    leaf = certs[0] as CertInfo;
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", `${files.cert}: ${(err as Error).message}`, { cause: err });
  }
  if (!keyMatches(keyPem, leaf.spki)) {
    throw new MtlsError(
      "E_BAD_INPUT",
      `the key in ${files.key} does not match the certificate in ${files.cert} (serial ${leaf.serial})`,
    );
  }
  const issuedAt = issuedAtFromMtime(leaf.notBefore, leaf.notAfter, mtimeOf(files.cert));
  return {
    serial: leaf.serial,
    subject: leaf.subject,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    ...(issuedAt ? { issuedAt } : {}),
    fingerprint: leaf.fingerprint,
    chainPem,
    keyPem,
  };
}

function mtimeOf(path: string): Date {
  try {
    return statSync(path).mtime;
  } catch {
    return new Date(0);
  }
}

/** Whether a PEM private key is the key of this SubjectPublicKeyInfo. */
export function keyMatches(keyPem: string, spki: Uint8Array): boolean {
  try {
    return Buffer.from(spkiOf(privateKeyFromPem(keyPem))).equals(Buffer.from(spki));
  } catch {
    return false;
  }
}

/** The staged temporary files of `target` (stageFile names them ".NAME.RANDOM.tmp" beside it). */
function stagedFilesOf(target: string): string[] {
  const dir = dirname(target);
  const prefix = `.${basename(target)}.`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => n.startsWith(prefix) && n.endsWith(".tmp")).map((n) => join(dir, n));
}

/**
 * After a crash between "certificate renamed into place" and "key renamed into place", the key file
 * still holds the old key and a staged temporary file the new one. If the certificate file's key
 * does not match the key file but matches a staged key, that staged key is committed. Stale staged
 * files of the certificate and key are removed either way. Returns whether a key was recovered.
 */
export function finishInterruptedRekey(files: CertFiles): boolean {
  const staged = stagedFilesOf(files.key);
  const stagedCerts = stagedFilesOf(files.cert);
  let recovered = false;
  if (staged.length > 0 && existsSync(files.cert)) {
    try {
      const leaf = parseCertificates(readFileSync(files.cert, "utf8"))[0] as CertInfo;
      const current = existsSync(files.key) ? readFileSync(files.key, "utf8") : "";
      if (!keyMatches(current, leaf.spki)) {
        const match = staged.find((f) => keyMatches(readFileSync(f, "utf8"), leaf.spki));
        if (match) {
          commitFile(match, files.key, true);
          recovered = true;
        }
      }
    } catch {
      // Unreadable files are reported by the caller's own read.
    }
  }
  for (const f of [...staged, ...stagedCerts]) {
    if (existsSync(f)) rmSync(f, { force: true });
  }
  return recovered;
}

/** What a renewal or enrollment writes. */
export interface NewFiles {
  /** Leaf then intermediate, PEM. */
  chainPem: string;
  /** Only when a new key was made (enrollment, rekey). */
  keyPem?: string;
  /** The CA's root, PEM, for `files.ca`. */
  caPem?: string;
}

/**
 * Checks what the CA sent before anything is written: the leaf certifies `expectedSpki` (the key we
 * hold or just made) and chains to the root we trust. A CA that answers with someone else's
 * certificate, or a truncated chain, must not replace working files.
 */
export async function checkIssuedChain(
  chainPem: string,
  rootPem: string,
  expectedSpki: Uint8Array,
  now: Date,
): Promise<CertInfo> {
  let certs: CertInfo[];
  let anchors: CertInfo[];
  try {
    certs = parseCertificates(chainPem);
    anchors = parseCertificates(rootPem);
  } catch (err) {
    throw new MtlsError(
      "E_BAD_INPUT",
      `the CA's answer holds a malformed certificate: ${(err as Error).message}`,
    );
  }
  const leaf = certs[0] as CertInfo;
  if (!Buffer.from(leaf.spki).equals(Buffer.from(expectedSpki))) {
    throw new MtlsError("E_BAD_INPUT", "the CA returned a certificate for another key; nothing was written");
  }
  // At a moment every certificate of the chain is valid (the CA may backdate notBefore a little).
  const at = new Date(Math.min(Math.max(now.getTime(), leaf.notBefore.getTime()), leaf.notAfter.getTime()));
  await verifyChain({ leaf, intermediates: certs.slice(1), anchors, at, purpose: "any" });
  return leaf;
}

/** The mode an existing file has, so a renewal keeps what an operator chose (else `fallback`). */
function modeOf(path: string, fallback: number): number {
  try {
    return statSync(path).mode & 0o777;
  } catch {
    return fallback;
  }
}

export interface WriteOptions {
  /** Replace existing files (renewal); without it an existing file is an E_EXISTS error. */
  overwrite: boolean;
  /**
   * The certificate file as it was (renewal): put back if the key cannot be put in place after
   * the certificate was, so the pair on disk always matches.
   */
  previousChainPem?: string;
  /** For tests: called after each file is committed ("cert", "key", "ca"). */
  onStep?: (step: "cert" | "key" | "ca") => void;
}

/**
 * Writes a new certificate (and key, and root) so that no failure leaves a key without its
 * certificate or a half-written file:
 *   1. everything is staged first (temp file beside the target, final mode, fsync);
 *   2. the certificate is renamed into place, then the key: between the two a reader sees the new
 *      certificate with the old key, which mtls tunnels refuse as a mismatch and keep the old pair,
 *      then take the pair at the key's rename; a crash in between is finished by readCurrent()
 *      (finishInterruptedRekey);
 *   3. the root last (it does not change on a renewal).
 * A failure before step 2 removes the staged files and leaves the old files untouched.
 */
export function writeCertFiles(files: CertFiles, next: NewFiles, opts: WriteOptions): void {
  if (!opts.overwrite) {
    for (const f of [files.cert, ...(next.keyPem ? [files.key] : [])]) {
      if (existsSync(f)) throw new MtlsError("E_EXISTS", `${f} already exists (use --force to replace it)`);
    }
  }
  if (!next.chainPem.includes(BEGIN_CERT)) throw new MtlsError("E_BAD_INPUT", "no certificate to write");
  const staged: string[] = [];
  const written: string[] = [];
  try {
    const certTmp = stageFile(files.cert, next.chainPem, modeOf(files.cert, 0o644));
    staged.push(certTmp);
    const keyTmp = next.keyPem ? stageFile(files.key, next.keyPem, 0o600) : undefined;
    if (keyTmp) staged.push(keyTmp);
    const caChanged =
      files.ca !== undefined &&
      next.caPem !== undefined &&
      (!existsSync(files.ca) || readFileSync(files.ca, "utf8") !== next.caPem);
    const caTmp = caChanged ? stageFile(files.ca as string, next.caPem as string, 0o644) : undefined;
    if (caTmp) staged.push(caTmp);

    commitFile(certTmp, files.cert, opts.overwrite);
    staged.splice(staged.indexOf(certTmp), 1);
    written.push(files.cert);
    opts.onStep?.("cert");
    if (keyTmp) {
      commitFile(keyTmp, files.key, opts.overwrite);
      staged.splice(staged.indexOf(keyTmp), 1);
      written.push(files.key);
      opts.onStep?.("key");
    }
    if (caTmp) {
      commitFile(caTmp, files.ca as string, true);
      staged.splice(staged.indexOf(caTmp), 1);
      opts.onStep?.("ca");
    }
  } catch (err) {
    for (const f of staged) rmSync(f, { force: true });
    if (!opts.overwrite) {
      // A fresh enrollment takes back what it wrote.
      for (const f of written) rmSync(f, { force: true });
    } else if (next.keyPem && written.includes(files.cert) && !written.includes(files.key)) {
      // A rekey whose key could not follow its certificate: the old certificate goes back.
      if (opts.previousChainPem !== undefined) {
        commitFile(stageFile(files.cert, opts.previousChainPem, modeOf(files.cert, 0o644)), files.cert, true);
      }
    }
    throw err;
  }
}

/** The certificate's own validity from a PEM file, without the key (for --if-due and status). */
export function certValidity(path: string): {
  notBefore: Date;
  notAfter: Date;
  issuedAt?: Date;
  serial: string;
} {
  const pem = readFileOrThrow(path, "certificate file").toString("utf8");
  try {
    const leaf = parseCertificates(pem)[0] as CertInfo;
    const issuedAt = issuedAtFromMtime(leaf.notBefore, leaf.notAfter, mtimeOf(path));
    return {
      notBefore: leaf.notBefore,
      notAfter: leaf.notAfter,
      ...(issuedAt ? { issuedAt } : {}),
      serial: leaf.serial,
    };
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", `${path}: ${(err as Error).message}`, { cause: err });
  }
}
