import { requirePassphrase } from "../config/passphrase.js";
import { requireCa, type StatePaths } from "../config/state.js";
import { requirePin } from "../keys/index.js";
import { openStore } from "../store/index.js";
import { CertificateAuthority, type Clock } from "./authority.js";
import { recoverPending, SHARED_STORE_PENDING_GRACE_MS } from "./deliver.js";

export interface OpenCaOptions {
  /** --passphrase-file; else MTLS_PASSPHRASE; else STATE/passphrase. Read only when a key is needed. */
  passphraseFile?: string;
  /** --pin-file, for a CA key in a PKCS#11 token; else MTLS_PKCS11_PIN / MTLS_PKCS11_PIN_FILE. */
  pinFile?: string;
  env?: NodeJS.ProcessEnv;
  clock?: Clock;
}

/** Opens the CA of a state directory and repairs any delivery a crash interrupted. */
export async function openCa(paths: StatePaths, opts: OpenCaOptions = {}): Promise<CertificateAuthority> {
  requireCa(paths);
  const store = await openStore(paths);
  try {
    const ca = await CertificateAuthority.open(paths, store, {
      passphrase: () =>
        requirePassphrase(
          { ...(opts.passphraseFile ? { file: opts.passphraseFile } : {}), env: opts.env ?? process.env },
          paths.passphrase,
        ),
      pin: () =>
        requirePin({ ...(opts.pinFile ? { file: opts.pinFile } : {}), env: opts.env ?? process.env }),
      ...(opts.clock ? { clock: opts.clock } : {}),
    });
    // On a store shared by several nodes, a young pending delivery may be another node's, in progress.
    const shared = paths.storeUrl !== undefined;
    await recoverPending(
      ca,
      shared ? { startedBefore: new Date(ca.clock().getTime() - SHARED_STORE_PENDING_GRACE_MS) } : {},
    );
    return ca;
  } catch (err) {
    await store.close();
    throw err;
  }
}
