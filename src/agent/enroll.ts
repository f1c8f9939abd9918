import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { readFileOrThrow } from "../config/files.js";
import { MtlsError } from "../errors.js";
import { buildCsrPem } from "../pki/csr-builder.js";
import { generateKeyPair, type KeyType, pkcs8Of, spkiOf } from "../pki/keys.js";
import type { San } from "../pki/names.js";
import { pemEncode } from "../pki/pem.js";
import { keyObjectSigner } from "../pki/signer.js";
import { CaClient } from "./client.js";
import { checkIssuedChain, writeCertFiles } from "./files.js";

export interface EnrollOptions {
  /** Base URL of the CA service (https://127.0.0.1:8443). */
  caUrl: string;
  /** The CA's root certificate file: the only trust anchor for the API, written out as ca.crt. */
  caCert: string;
  /** The one-time enrollment token (`mtls token create`). */
  token: string;
  /** The certificate's name (the token's; the CA takes the CN from the token). */
  name: string;
  /** Folder for NAME.key, NAME.crt and ca.crt. */
  outDir: string;
  keyType?: KeyType;
  /** SANs to ask for (a subset of what the token allows); none: what the CA gives by default. */
  sans?: San[];
  /** Replace existing NAME.crt/NAME.key. */
  force?: boolean;
  timeoutMs?: number;
  clock?: () => Date;
  /** For tests: called after each file is committed. */
  onStep?: (step: "cert" | "key" | "ca") => void;
}

export interface EnrollResult {
  serial: string;
  name: string;
  profile: string;
  notBefore: Date;
  notAfter: Date;
  files: { cert: string; key: string; ca: string };
}

/**
 * Enrolls with a one-time token, like `step ca certificate`: the key is generated here and never
 * leaves the machine (the CA sees a CSR), then NAME.crt (leaf + intermediate), NAME.key (0600) and
 * ca.crt are written atomically, certificate first, so no failure leaves a key without its
 * certificate. Existing files are refused before the token is spent, unless `force`.
 */
export async function enrollCertificate(opts: EnrollOptions): Promise<EnrollResult> {
  const clock = opts.clock ?? (() => new Date());
  const dir = resolve(opts.outDir);
  const files = {
    cert: join(dir, `${opts.name}.crt`),
    key: join(dir, `${opts.name}.key`),
    ca: join(dir, "ca.crt"),
  };
  if (!opts.force) {
    for (const f of [files.cert, files.key]) {
      if (existsSync(f)) throw new MtlsError("E_EXISTS", `${f} already exists (use --force to replace it)`);
    }
  }
  const rootPem = readFileOrThrow(resolve(opts.caCert), "CA certificate").toString("utf8");
  if (!opts.force && existsSync(files.ca) && readFileSync(files.ca, "utf8") !== rootPem) {
    throw new MtlsError("E_EXISTS", `${files.ca} holds another CA's certificate (use --force to replace it)`);
  }
  const client = new CaClient({
    url: opts.caUrl,
    ca: rootPem,
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
  });
  if (!/^mtls_[0-9a-f]{16}\.[A-Za-z0-9_-]{20,}$/.test(opts.token)) {
    throw new MtlsError("E_TOKEN_INVALID", "malformed enrollment token (expected mtls_<id>.<secret>)");
  }

  const { privateKey } = generateKeyPair(opts.keyType ?? "ec-p256");
  const spki = spkiOf(privateKey);
  const csr = await buildCsrPem(
    { subject: { commonName: opts.name }, ...(opts.sans?.length ? { sans: opts.sans } : {}) },
    keyObjectSigner(privateKey),
  );
  const issued = await client.enroll(opts.token, csr);
  const leaf = await checkIssuedChain(issued.chain, rootPem, spki, clock());

  mkdirSync(dir, { recursive: true });
  const keyPem = pemEncode("PRIVATE KEY", pkcs8Of(privateKey));
  // ca.crt is the root this machine trusted, not whatever the answer says (they are the same CA:
  // the chain was just verified against it).
  const caPem = existsSync(files.ca) && readFileSync(files.ca, "utf8") === rootPem ? undefined : rootPem;
  writeCertFiles(
    files,
    { chainPem: issued.chain, keyPem, ...(caPem ? { caPem } : {}) },
    { overwrite: opts.force ?? false, ...(opts.onStep ? { onStep: opts.onStep } : {}) },
  );
  return {
    serial: leaf.serial,
    name: issued.name,
    profile: issued.profile,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    files,
  };
}
