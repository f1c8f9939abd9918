import { existsSync, mkdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { MtlsError } from "../errors.js";

/** Where everything of one CA lives. `--state DIR`, else MTLS_STATE, else ./.mtls. */
export interface StatePaths {
  dir: string;
  database: string;
  passphrase: string;
  rootCert: string;
  rootKey: string;
  rootCrl: string;
  intermediateCert: string;
  intermediateKey: string;
  /** The latest CRL bundle (intermediate then root), rewritten on every revocation. */
  crl: string;
  /** The delegated OCSP responder's certificate and its key (encrypted like the CA keys). */
  ocspCert: string;
  ocspKey: string;
}

export function resolveStateDir(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return resolve(flag ?? env.MTLS_STATE ?? ".mtls");
}

export function statePaths(dir: string): StatePaths {
  const ca = join(dir, "ca");
  return {
    dir,
    database: join(dir, "mtls.db"),
    passphrase: join(dir, "passphrase"),
    rootCert: join(ca, "root.crt"),
    rootKey: join(ca, "root.key"),
    rootCrl: join(ca, "root.crl"),
    intermediateCert: join(ca, "intermediate.crt"),
    intermediateKey: join(ca, "intermediate.key"),
    crl: join(ca, "crl.pem"),
    ocspCert: join(ca, "ocsp.crt"),
    ocspKey: join(ca, "ocsp.key"),
  };
}

export function ensureStateDirs(paths: StatePaths): void {
  try {
    mkdirSync(join(paths.dir, "ca"), { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new MtlsError("E_IO", `cannot create state directory ${paths.dir}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

export function hasCa(paths: StatePaths): boolean {
  return existsSync(paths.intermediateCert) && existsSync(paths.database);
}

export function requireCa(paths: StatePaths): void {
  if (!hasCa(paths)) {
    throw new MtlsError("E_NO_CA", `no CA in ${paths.dir} (run \`mtls init\` or pass --state)`);
  }
  if (!statSync(paths.dir).isDirectory()) throw new MtlsError("E_NO_CA", `${paths.dir} is not a directory`);
}
