import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { commitFile, stageFile, writeFileAtomic } from "../config/files.js";
import { MtlsError } from "../errors.js";
import { parseCertificates } from "../pki/certinfo.js";
import { pkcs8Of, privateKeyFromPem, spkiOf } from "../pki/keys.js";
import { pemEncode, toBuffer } from "../pki/pem.js";
import { buildPkcs12 } from "../pki/pkcs12.js";
import type { CertificateAuthority, Issued, IssueRequest } from "./authority.js";

export interface DeliverOptions {
  outDir: string;
  /** Write the certificate to this file instead of OUTDIR/NAME.crt (ca.crt goes beside it). */
  certFile?: string;
  /** Replace existing files. */
  force?: boolean;
  /** Also write NAME.p12 with this password. */
  p12?: { password: string; legacy?: boolean };
  /**
   * Called between the steps, for crash tests: "pending" (row inserted, no file yet), "cert" (the
   * certificate is in place), "key" (the key too), "files" (all files, not yet confirmed).
   */
  onStep?: (step: "pending" | "cert" | "key" | "files") => void;
}

export interface Delivered {
  issued: Issued;
  files: { cert: string; key?: string; p12?: string; ca: string };
}

/**
 * Issues a certificate and writes NAME.crt (leaf + intermediate), NAME.key (0600, when the CA made
 * the key), NAME.p12 and ca.crt into `outDir`, so that no crash leaves a key without its
 * certificate or a certificate missing from the inventory:
 *   1. the record goes into the store as `pending`, with the paths about to be written;
 *   2. the files are staged (temp + fsync) and renamed into place, certificate first;
 *   3. the record becomes `valid` and the issue event is appended to the audit log.
 * A crash between 1 and 3 is repaired by recoverPending() on the next start.
 */
export async function issueToFiles(
  ca: CertificateAuthority,
  req: Omit<IssueRequest, "pending">,
  opts: DeliverOptions,
): Promise<Delivered> {
  const dir = opts.certFile ? dirname(resolve(opts.certFile)) : resolve(opts.outDir);
  const files = {
    cert: opts.certFile ? resolve(opts.certFile) : join(dir, `${req.name}.crt`),
    key: req.spki ? undefined : join(dir, `${req.name}.key`),
    p12: opts.p12 ? join(dir, `${req.name}.p12`) : undefined,
    ca: join(dir, "ca.crt"),
  };
  const targets = [files.cert, files.key, files.p12].filter((f): f is string => f !== undefined);
  if (!opts.force) {
    for (const f of targets) {
      if (existsSync(f)) throw new MtlsError("E_EXISTS", `${f} already exists (use --force to replace it)`);
    }
  }
  if (opts.p12 && req.spki)
    throw new MtlsError("E_USAGE", "a PKCS#12 needs the private key, which a CSR does not give");
  const caPem = ca.rootPem;
  if (existsSync(files.ca) && readFileSync(files.ca, "utf8") !== caPem && !opts.force) {
    throw new MtlsError("E_EXISTS", `${files.ca} holds another CA's certificate (use --force to replace it)`);
  }

  const issued = await ca.issue({
    ...req,
    pending: { certPath: files.cert, keyPath: files.key ?? null, p12Path: files.p12 ?? null },
  });
  const written: string[] = [];
  let staged: string | undefined;
  try {
    opts.onStep?.("pending");
    mkdirSync(dir, { recursive: true });
    // The key goes last: once it is in place, everything is (recoverPending relies on that).
    const plan: [string, string | Uint8Array, number][] = [[files.cert, issued.chainPem, 0o644]];
    if (files.p12 && opts.p12 && issued.privateKey) {
      const p12 = buildPkcs12({
        privateKey: pkcs8Of(issued.privateKey),
        certificates: [issued.certificate.der, ca.intermediate.der],
        friendlyName: req.name,
        password: opts.p12.password,
        legacy: opts.p12.legacy ?? false,
      });
      plan.push([files.p12, p12, 0o600]);
    }
    if (files.key && issued.privateKey) {
      plan.push([files.key, pemEncode("PRIVATE KEY", pkcs8Of(issued.privateKey)), 0o600]);
    }
    for (const [target, data, mode] of plan) {
      // Staged one at a time, so a crash leaves at most one temporary file (which recovery removes).
      staged = stageFile(target, data, mode);
      commitFile(staged, target, opts.force ?? false);
      staged = undefined;
      written.push(target);
      if (target === files.cert) opts.onStep?.("cert");
      if (target === files.key) opts.onStep?.("key");
    }
    opts.onStep?.("files");
    await ca.confirmIssued(issued.record.serial, req.actor);
  } catch (err) {
    for (const f of [...(staged ? [staged] : []), ...written]) rmSync(f, { force: true });
    await ca.abortIssued(issued.record.serial, req.actor, (err as Error).message).catch(() => undefined);
    throw err;
  }
  writeFileAtomic(files.ca, caPem, { overwrite: true });
  return {
    issued,
    files: {
      cert: files.cert,
      ca: files.ca,
      ...(files.key ? { key: files.key } : {}),
      ...(files.p12 ? { p12: files.p12 } : {}),
    },
  };
}

/**
 * How old a pending delivery must be before a CA sharing its store with other nodes (PostgreSQL)
 * repairs it: a delivery takes milliseconds, but the one still pending may be another node's, in
 * progress, with its files on another machine.
 */
export const SHARED_STORE_PENDING_GRACE_MS = 10 * 60_000;

/**
 * Finishes or undoes deliveries a crash interrupted. A pending certificate whose files are all in
 * place (the certificate file holds this very certificate, the key file its key) is confirmed;
 * otherwise the files it left are removed (only if they are its own) and the record is aborted.
 * `startedBefore`: only deliveries that began before then (see SHARED_STORE_PENDING_GRACE_MS).
 */
export async function recoverPending(
  ca: CertificateAuthority,
  opts: { startedBefore?: Date } = {},
): Promise<{ confirmed: string[]; aborted: string[] }> {
  const confirmed: string[] = [];
  const aborted: string[] = [];
  for (const rec of await ca.store.findCertificates({ status: "pending" })) {
    if (opts.startedBefore !== undefined && rec.createdAt >= opts.startedBefore) continue;
    const certOk = rec.certPath !== null && fileHoldsCert(rec.certPath, rec.fingerprint);
    const keyOk = rec.keyPath === null || (certOk && fileHoldsKeyOf(rec.keyPath, rec.pem));
    const p12Ok = rec.p12Path === null || writtenSince(rec.p12Path, rec.createdAt);
    const paths = [rec.certPath, rec.keyPath, rec.p12Path].filter((p): p is string => p !== null);
    for (const p of paths) removeStagedFiles(p);
    if (certOk && keyOk && p12Ok) {
      await ca.confirmIssued(rec.serial, "system:recovery");
      confirmed.push(rec.serial);
      continue;
    }
    if (rec.certPath && fileHoldsCert(rec.certPath, rec.fingerprint)) rmSync(rec.certPath, { force: true });
    if (rec.keyPath && fileHoldsKeyOf(rec.keyPath, rec.pem)) rmSync(rec.keyPath, { force: true });
    // A PKCS#12 cannot be read without its password: it is this delivery's if written since it began.
    if (rec.p12Path && writtenSince(rec.p12Path, rec.createdAt)) rmSync(rec.p12Path, { force: true });
    await ca.abortIssued(rec.serial, "system:recovery", "interrupted before its files were written");
    aborted.push(rec.serial);
  }
  return { confirmed, aborted };
}

/** Temporary files stageFile() left for `target` (".NAME.<random>.tmp" beside it). */
function removeStagedFiles(target: string): void {
  const prefix = `.${basename(target)}.`;
  let names: string[];
  try {
    names = readdirSync(dirname(target));
  } catch {
    return;
  }
  for (const n of names) {
    if (n.startsWith(prefix) && n.endsWith(".tmp")) rmSync(join(dirname(target), n), { force: true });
  }
}

function writtenSince(path: string, since: Date): boolean {
  try {
    // Allow for coarse filesystem timestamps.
    return statSync(path).mtimeMs >= since.getTime() - 2_000;
  } catch {
    return false;
  }
}

function fileHoldsCert(path: string, fingerprint: string): boolean {
  try {
    return parseCertificates(readFileSync(path))[0]?.fingerprint === fingerprint;
  } catch {
    return false;
  }
}

function fileHoldsKeyOf(path: string, certPem: string): boolean {
  try {
    const key = privateKeyFromPem(readFileSync(path, "utf8"));
    const cert = parseCertificates(certPem)[0];
    return cert !== undefined && toBuffer(spkiOf(key)).equals(toBuffer(cert.spki));
  } catch {
    return false;
  }
}
