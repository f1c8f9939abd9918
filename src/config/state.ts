import { existsSync, mkdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { MtlsError } from "../errors.js";

/** Where everything of one CA lives. `--state DIR`, else MTLS_STATE, else ./.mtls. */
export interface StatePaths {
  dir: string;
  /** The SQLite database, STATE/mtls.db: the store unless `storeUrl` names another. */
  database: string;
  /** The PostgreSQL URL `--store`/MTLS_STORE names; when set, the store is there and `database` unused. */
  storeUrl?: string;
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

/** Where the store is: `--store`, else MTLS_STORE (a `postgres://` URL); undefined means STATE/mtls.db. */
export function resolveStore(flag?: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const value = flag ?? env.MTLS_STORE;
  return value === undefined || value === "" ? undefined : value;
}

const POSTGRES_URL = /^postgres(ql)?:\/\//i;

export function statePaths(dir: string, store: string | undefined = resolveStore()): StatePaths {
  const ca = join(dir, "ca");
  if (store !== undefined && !POSTGRES_URL.test(store)) {
    throw new MtlsError(
      "E_USAGE",
      "--store (or MTLS_STORE) takes a postgres:// URL; the SQLite database is STATE/mtls.db (choose the directory with --state)",
    );
  }
  return {
    dir,
    database: join(dir, "mtls.db"),
    ...(store !== undefined ? { storeUrl: store } : {}),
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
  return existsSync(paths.intermediateCert) && (paths.storeUrl !== undefined || existsSync(paths.database));
}

export function requireCa(paths: StatePaths): void {
  if (!hasCa(paths)) {
    throw new MtlsError("E_NO_CA", `no CA in ${paths.dir} (run \`mtls init\` or pass --state)`);
  }
  if (!statSync(paths.dir).isDirectory()) throw new MtlsError("E_NO_CA", `${paths.dir} is not a directory`);
}
