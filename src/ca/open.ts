import { requirePassphrase } from "../config/passphrase.js";
import { requireCa, type StatePaths } from "../config/state.js";
import { openSqliteStore } from "../store/index.js";
import { CertificateAuthority, type Clock } from "./authority.js";
import { recoverPending } from "./deliver.js";

export interface OpenCaOptions {
  /** --passphrase-file; else MTLS_PASSPHRASE; else STATE/passphrase. Read only when a key is needed. */
  passphraseFile?: string;
  env?: NodeJS.ProcessEnv;
  clock?: Clock;
}

/** Opens the CA of a state directory and repairs any delivery a crash interrupted. */
export async function openCa(paths: StatePaths, opts: OpenCaOptions = {}): Promise<CertificateAuthority> {
  requireCa(paths);
  const store = await openSqliteStore(paths.database);
  try {
    const ca = await CertificateAuthority.open(paths, store, {
      passphrase: () =>
        requirePassphrase(
          { ...(opts.passphraseFile ? { file: opts.passphraseFile } : {}), env: opts.env ?? process.env },
          paths.passphrase,
        ),
      ...(opts.clock ? { clock: opts.clock } : {}),
    });
    await recoverPending(ca);
    return ca;
  } catch (err) {
    await store.close();
    throw err;
  }
}
