import { type KeyObject, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { commitFile, stageFile } from "../config/files.js";
import { hasCa, type StatePaths, statePaths } from "../config/state.js";
import { MtlsError } from "../errors.js";
import { openOrGeneratePkcs11Key, saveEncryptedKey } from "../keys/index.js";
import { buildCertificate, randomSerial } from "../pki/certificate.js";
import { type CertInfo, certToPem, parseCertificate } from "../pki/certinfo.js";
import { buildCrl, crlToPem } from "../pki/crl.js";
import * as ext from "../pki/extensions.js";
import { generateKeyPair, type KeyType } from "../pki/keys.js";
import { buildName } from "../pki/names.js";
import { keyObjectSigner } from "../pki/signer.js";
import { describePostgresUrl, openSqliteStore, openStore, type Store } from "../store/index.js";
import { type AdminIdentity, ensureAdmin } from "./admin.js";
import {
  BACKDATE_MS,
  CertificateAuthority,
  type Clock,
  CRL_VALIDITY_MS,
  ROOT_CRL_VALIDITY_MS,
  recordFor,
} from "./authority.js";
import { caUrls } from "./profiles.js";
import { validatePublicUrl } from "./settings.js";

export interface InitOptions {
  paths: StatePaths;
  /** Organization name, e.g. "Acme Corp": the O of every certificate and the CN stem of the CA's. */
  name: string;
  keyType?: KeyType;
  publicUrl?: string;
  /**
   * Encrypts the CA keys. When absent, a random one is generated into STATE/passphrase (0600),
   * moved into place together with the new CA.
   */
  passphrase?: string;
  /** Write the root key here (encrypted) instead of into the state directory: an offline root. */
  rootKeyOut?: string;
  /** Replace an existing CA; the old one is moved to STATE/backup-<time>/, never deleted. */
  force?: boolean;
  rootTtlMs?: number;
  intermediateTtlMs?: number;
  /**
   * The first admin of the CA service: a client certificate (default name "admin", client lifetime)
   * issued into STATE/admin/ with a PKCS#12 and its generated password, and `ca.admins` set to it.
   * `false`: none (ensureAdmin() can add one later).
   */
  admin?: false | { name?: string; ttlMs?: number };
  /**
   * Keep the intermediate's key in a PKCS#11 token: the key the URI names is used, or generated there
   * (sensitive, never extractable) when the token has none. No key file is written for it; the URI
   * (without PIN) and the module are recorded in the CA's settings. `keyTypeExplicit`: refuse an
   * existing key of another type than `keyType`.
   */
  caKey?: { module: string; uri: string; pin: string; keyTypeExplicit?: boolean };
  actor: string;
  clock?: Clock;
}

export interface InitResult {
  root: CertInfo;
  intermediate: CertInfo;
  /** When the intermediate's key is in a token: its URI (no PIN) and whether init generated it. */
  intermediateKey?: { uri: string; generated: boolean };
  /** Where an existing CA was moved, when --force replaced one. */
  backup?: string;
  /** Set when the passphrase was generated into this file. */
  generatedPassphraseFile?: string;
  /** The admin certificate and its files, unless `admin: false`. */
  admin?: AdminIdentity;
}

const YEAR = 365 * 86_400_000;

/**
 * Creates the root and the intermediate CA. Everything is first built in a staging folder inside the
 * state directory and moved into place at the end, so a crash leaves either no CA or a whole one.
 */
export async function initCa(opts: InitOptions): Promise<InitResult> {
  const { paths } = opts;
  const clock = opts.clock ?? (() => new Date());
  const now = clock();
  if (opts.publicUrl) validatePublicUrl(opts.publicUrl);
  if (hasCa(paths) && !opts.force) {
    throw new MtlsError(
      "E_EXISTS",
      `a CA already exists in ${paths.dir} (use --force to replace it; the old one is kept as a backup)`,
    );
  }
  if (opts.rootKeyOut && existsSync(opts.rootKeyOut) && !opts.force) {
    throw new MtlsError("E_EXISTS", `${opts.rootKeyOut} already exists (use --force to replace it)`);
  }
  const keyType = opts.keyType ?? "ec-p256";
  const rootTtl = opts.rootTtlMs ?? 10 * YEAR;
  const intermediateTtl = opts.intermediateTtlMs ?? 5 * YEAR;
  if (intermediateTtl > rootTtl) throw new MtlsError("E_TTL", "the intermediate cannot outlive the root");

  const passphrase = opts.passphrase ?? randomBytes(32).toString("base64url");
  const rootKey = generateKeyPair(keyType).privateKey;
  const rootSigner = keyObjectSigner(rootKey);
  const rootName = buildName({ organization: opts.name, commonName: `${opts.name} Root CA` });
  const notBefore = new Date(now.getTime() - BACKDATE_MS);
  const rootDer = await buildCertificate(
    {
      serial: randomSerial(),
      issuer: rootName,
      subject: rootName,
      notBefore,
      notAfter: new Date(now.getTime() + rootTtl),
      spki: rootSigner.spki,
      extensions: [
        ext.basicConstraints(true),
        ext.keyUsage(ext.KEY_USAGE.keyCertSign | ext.KEY_USAGE.cRLSign),
        ext.subjectKeyIdentifier(rootSigner.spki),
      ],
    },
    rootSigner,
  );
  const root = parseCertificate(rootDer);

  const tokenKey = opts.caKey ? openOrGeneratePkcs11Key({ ...opts.caKey, keyType }) : undefined;
  const intKey = tokenKey ? undefined : generateKeyPair(keyType).privateKey;
  const intSigner = tokenKey ?? keyObjectSigner(intKey as KeyObject);
  const intExtensions = [
    ext.basicConstraints(true, 0),
    ext.keyUsage(ext.KEY_USAGE.keyCertSign | ext.KEY_USAGE.cRLSign),
    ext.subjectKeyIdentifier(intSigner.spki),
    ext.authorityKeyIdentifier(root.spki),
  ];
  if (opts.publicUrl) {
    const urls = caUrls(opts.publicUrl);
    intExtensions.push(
      ext.crlDistributionPoints([urls.rootCrl]),
      ext.authorityInfoAccess([], [urls.rootCert]),
    );
  }
  const intDer = await buildCertificate(
    {
      serial: randomSerial(),
      issuer: root.subjectDer,
      subject: buildName({ organization: opts.name, commonName: `${opts.name} Intermediate CA` }),
      notBefore,
      notAfter: new Date(now.getTime() + intermediateTtl),
      spki: intSigner.spki,
      extensions: intExtensions,
    },
    rootSigner,
  );
  const intermediate = parseCertificate(intDer);
  const rootCrl = await buildCrl(
    {
      issuer: root.subjectDer,
      issuerSpki: root.spki,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + ROOT_CRL_VALIDITY_MS),
      crlNumber: 1,
      entries: [],
    },
    rootSigner,
  );
  // The intermediate publishes its first (empty) CRL at once, so relying parties that demand a CRL
  // at every level (OpenSSL with crl_check_all, nginx ssl_crl) accept the chain from day one.
  const intCrl = await buildCrl(
    {
      issuer: intermediate.subjectDer,
      issuerSpki: intermediate.spki,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + CRL_VALIDITY_MS),
      crlNumber: 1,
      entries: [],
    },
    intSigner,
  );

  // Stage: a folder with its own ca/ and database, laid out like the real state directory.
  mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  const stagingDir = join(paths.dir, `.init-${process.pid}-${now.getTime()}`);
  const staged = statePaths(stagingDir);
  mkdirSync(join(stagingDir, "ca"), { recursive: true, mode: 0o700 });
  let backup: string | undefined;
  try {
    writeStaged(staged.rootCert, certToPem(rootDer));
    writeStaged(staged.intermediateCert, certToPem(intDer));
    writeStaged(staged.rootCrl, crlToPem(rootCrl));
    writeStaged(staged.crl, crlToPem(intCrl) + crlToPem(rootCrl));
    if (intKey) saveEncryptedKey(staged.intermediateKey, intKey, passphrase);
    if (!opts.rootKeyOut) saveEncryptedKey(staged.rootKey, rootKey, passphrase);
    if (!opts.passphrase)
      commitFile(stageFile(staged.passphrase, `${passphrase}\n`, 0o600), staged.passphrase);

    // PostgreSQL (--store): the records go straight into the shared database, which must hold no
    // CA yet; with SQLite they go into the staged file, moved into place below.
    const store =
      paths.storeUrl !== undefined ? await openEmptyStore(paths) : await openSqliteStore(staged.database);
    try {
      await store.transaction(async (tx) => {
        await tx.setSetting("ca.name", opts.name);
        if (opts.publicUrl) await tx.setSetting("ca.publicUrl", opts.publicUrl);
        await tx.setSetting("ca.rootKeyOffline", opts.rootKeyOut ? "true" : "false");
        if (tokenKey) {
          await tx.setSetting("ca.keyUri", tokenKey.uri);
          await tx.setSetting("ca.pkcs11Module", tokenKey.module);
        }
        // CRL number 1 went into each of the first CRLs above.
        await tx.nextCounter(`crl:${root.serial}`);
        await tx.nextCounter(`crl:${intermediate.serial}`);
        for (const [cert, profile, name, issuerSerial] of [
          [root, "ca-root", "root", null],
          [intermediate, "ca-intermediate", "intermediate", root.serial],
        ] as const) {
          await tx.insertCertificate(recordFor(cert, { name, profile, issuerSerial, status: "valid", now }));
        }
        await tx.appendAudit({
          at: now,
          actor: opts.actor,
          action: "ca.init",
          subject: intermediate.serial,
          details: {
            name: opts.name,
            keyType,
            root: {
              serial: root.serial,
              fingerprint: root.fingerprint,
              notAfter: root.notAfter.toISOString(),
            },
            intermediate: {
              serial: intermediate.serial,
              fingerprint: intermediate.fingerprint,
              notAfter: intermediate.notAfter.toISOString(),
            },
            rootKeyOffline: Boolean(opts.rootKeyOut),
            ...(tokenKey
              ? {
                  intermediateKey: {
                    uri: tokenKey.uri,
                    module: tokenKey.module,
                    generated: tokenKey.generated,
                  },
                }
              : {}),
            publicUrl: opts.publicUrl ?? null,
          },
        });
      });
    } finally {
      await store.close();
    }
    if (opts.rootKeyOut) saveEncryptedKey(opts.rootKeyOut, rootKey, passphrase, opts.force);

    // Move any old CA aside, then the new one in: ca/ first, the database last (hasCa needs both).
    const oldCa = join(paths.dir, "ca");
    if (existsSync(oldCa) || existsSync(paths.database)) {
      backup = join(paths.dir, `backup-${now.toISOString().replace(/[:.]/g, "-")}`);
      mkdirSync(backup, { mode: 0o700 });
      for (const name of ["ca", "mtls.db", "mtls.db-wal", "mtls.db-shm", "passphrase", "admin"]) {
        if (existsSync(join(paths.dir, name))) renameSync(join(paths.dir, name), join(backup, name));
      }
    }
    renameSync(join(stagingDir, "ca"), oldCa);
    if (!opts.passphrase) renameSync(staged.passphrase, paths.passphrase);
    if (paths.storeUrl === undefined) renameSync(staged.database, paths.database);
  } finally {
    rmSync(stagingDir, { recursive: true, force: true });
  }
  // The CA is complete without its admin: a crash here leaves a CA that ensureAdmin() completes.
  const admin = opts.admin === false ? undefined : await issueFirstAdmin(opts, passphrase, clock);
  return {
    root,
    intermediate,
    ...(tokenKey ? { intermediateKey: { uri: tokenKey.uri, generated: tokenKey.generated } } : {}),
    ...(backup ? { backup } : {}),
    ...(opts.passphrase ? {} : { generatedPassphraseFile: paths.passphrase }),
    ...(admin ? { admin } : {}),
  };
}

async function issueFirstAdmin(opts: InitOptions, passphrase: string, clock: Clock): Promise<AdminIdentity> {
  const adminOpts = opts.admin || {};
  const store = await openStore(opts.paths);
  try {
    const ca = await CertificateAuthority.open(opts.paths, store, {
      passphrase: () => passphrase,
      clock,
      ...(opts.caKey ? { pin: () => opts.caKey?.pin as string } : {}),
    });
    return await ensureAdmin(ca, {
      actor: opts.actor,
      ...(adminOpts.name ? { name: adminOpts.name } : {}),
      ...(adminOpts.ttlMs ? { ttlMs: adminOpts.ttlMs } : {}),
    });
  } catch (err) {
    const e = err as MtlsError;
    throw new MtlsError(
      e.code ?? "E_IO",
      `the CA was created in ${opts.paths.dir}, but its admin certificate was not: ${e.message}`,
      { cause: err },
    );
  } finally {
    await store.close();
  }
}

/**
 * The PostgreSQL store of a new CA. It must be empty: one database (or schema) holds one CA, and
 * --force cannot move a database aside the way it moves a SQLite file.
 */
async function openEmptyStore(paths: StatePaths): Promise<Store> {
  const store = await openStore(paths);
  try {
    const [existing] = await store.findCertificates({ profile: "ca-intermediate" });
    if (existing) {
      throw new MtlsError(
        "E_EXISTS",
        `the store ${describePostgresUrl(paths.storeUrl ?? "")} already holds a CA (${existing.subject}); use another database or schema`,
      );
    }
    return store;
  } catch (err) {
    await store.close();
    throw err;
  }
}

function writeStaged(path: string, content: string): void {
  commitFile(stageFile(path, content), path);
}
