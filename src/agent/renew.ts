import { readFileOrThrow } from "../config/files.js";
import { MtlsError } from "../errors.js";
import { buildCsrPem } from "../pki/csr-builder.js";
import { generateKeyPair, keyTypeOf, pkcs8Of, privateKeyFromPem, spkiOf } from "../pki/keys.js";
import { pemEncode } from "../pki/pem.js";
import { keyObjectSigner } from "../pki/signer.js";
import { CaClient } from "./client.js";
import { type CertFiles, type CurrentCert, checkIssuedChain, readCurrent, writeCertFiles } from "./files.js";
import { dueAt, isDue, isExpired } from "./schedule.js";

/** One certificate to renew: its files and the CA that renews it. */
export interface RenewTarget {
  name: string;
  files: CertFiles;
  caUrl: string;
  /** The CA's root (file): the only trust anchor for the API. */
  caCert: string;
}

export interface RenewOptions {
  /** A new key (same type as the old one) with a CSR, instead of the same key. */
  rekey?: boolean;
  timeoutMs?: number;
  clock?: () => Date;
  /** For tests: called after each file is committed. */
  onStep?: (step: "cert" | "key" | "ca") => void;
}

export interface RenewResult {
  previousSerial: string;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  rekeyed: boolean;
}

/** The message for a certificate that expired: it can no longer prove who it is to the CA. */
export function expiredError(name: string, notAfter: Date): MtlsError {
  return new MtlsError(
    "E_EXPIRED",
    `the certificate "${name}" expired at ${notAfter.toISOString()} and can no longer renew itself: enroll again (mtls token create, then mtls enroll)`,
  );
}

/**
 * Renews one certificate: authenticates to the CA with the current certificate and key over mTLS,
 * POST /v1/renew (with a CSR for a new key when `rekey`), checks the answer certifies our key and
 * chains to the trusted root, then writes the new certificate (and key) atomically. Any failure
 * before the write leaves the old files as they were.
 */
export async function renewCertificate(target: RenewTarget, opts: RenewOptions = {}): Promise<RenewResult> {
  const clock = opts.clock ?? (() => new Date());
  const current = readCurrent(target.files);
  if (isExpired(current, clock())) throw expiredError(target.name, current.notAfter);
  const rootPem = readFileOrThrow(target.caCert, "CA certificate").toString("utf8");
  const client = new CaClient({
    url: target.caUrl,
    ca: rootPem,
    cert: current.chainPem,
    key: current.keyPem,
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
  });

  let keyPem: string | undefined;
  let csr: string | undefined;
  let spki: Uint8Array;
  const oldKey = privateKeyFromPem(current.keyPem);
  if (opts.rekey) {
    const { privateKey } = generateKeyPair(keyTypeOf(oldKey));
    keyPem = pemEncode("PRIVATE KEY", pkcs8Of(privateKey));
    spki = spkiOf(privateKey);
    csr = await buildCsrPem({ subject: { commonName: target.name } }, keyObjectSigner(privateKey));
  } else {
    spki = spkiOf(oldKey);
  }
  const issued = await client.renew(csr);
  const leaf = await checkIssuedChain(issued.chain, rootPem, spki, clock());
  writeCertFiles(
    target.files,
    { chainPem: issued.chain, ...(keyPem ? { keyPem } : {}) },
    {
      overwrite: true,
      previousChainPem: current.chainPem,
      ...(opts.onStep ? { onStep: opts.onStep } : {}),
    },
  );
  return {
    previousSerial: current.serial,
    serial: leaf.serial,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    rekeyed: keyPem !== undefined,
  };
}

export type IfDueDecision =
  | { action: "skip"; current: CurrentCert; dueAt: Date }
  | { action: "renew"; current: CurrentCert }
  | { action: "expired"; current: CurrentCert };

/**
 * `mtls renew --if-due`: whether to contact the CA at all. Not due (less than 2/3 of the lifetime
 * passed): skip; due: renew; expired: an error (it can no longer renew itself).
 */
export function ifDue(files: CertFiles, now: Date): IfDueDecision {
  const current = readCurrent(files);
  if (isExpired(current, now)) return { action: "expired", current };
  if (!isDue(current, now)) return { action: "skip", current, dueAt: new Date(dueAt(current)) };
  return { action: "renew", current };
}
