import { existsSync } from "node:fs";
import { statePaths } from "../config/state.js";
import { MtlsError } from "../errors.js";
// The store is imported when a name is looked up: tunnels given files never load it.
import type { CertificateRecord } from "../store/index.js";
import type { TlsFiles } from "./types.js";

/**
 * The files of the newest valid certificate filed under `name` in a state directory (`--state DIR`
 * with a name instead of --cert/--key/--ca), with the CA's root as the trust anchor. Errors say what
 * is missing: the CA, the name, a current certificate, or a file.
 */
export async function tlsFilesFromState(
  stateDir: string,
  name: string,
  opts: { clock?: () => Date } = {},
): Promise<TlsFiles> {
  const paths = statePaths(stateDir);
  if (paths.storeUrl === undefined && !existsSync(paths.database)) {
    throw new MtlsError("E_NO_CA", `no CA in ${stateDir} (run \`mtls init\` or pass --state)`);
  }
  if (!existsSync(paths.rootCert)) {
    throw new MtlsError("E_NOT_FOUND", `the CA's root certificate is missing: ${paths.rootCert}`);
  }
  const { openStore } = await import("../store/index.js");
  const store = await openStore(paths);
  let records: CertificateRecord[];
  try {
    records = await store.findCertificates({ name, profile: ["server", "client", "peer"] });
  } finally {
    await store.close();
  }
  const now = (opts.clock ?? (() => new Date()))();
  // Newest first: by notBefore (whole seconds), then by when the record was made (milliseconds).
  const byNewest = (a: CertificateRecord, b: CertificateRecord) =>
    b.notBefore.getTime() - a.notBefore.getTime() || b.createdAt.getTime() - a.createdAt.getTime();
  const valid = records.filter((r) => r.status === "valid").sort(byNewest);
  const current = valid.find((r) => r.notBefore <= now && now <= r.notAfter);
  if (!current) {
    if (records.length === 0) {
      throw new MtlsError(
        "E_NOT_FOUND",
        `no certificate named "${name}" in ${stateDir} (issue one with \`mtls issue server|client ${name}\`)`,
      );
    }
    if (valid.length > 0) {
      const newest = valid[0] as CertificateRecord;
      const when =
        newest.notAfter < now
          ? `expired at ${newest.notAfter.toISOString()}`
          : `is not valid before ${newest.notBefore.toISOString()}`;
      throw new MtlsError(
        "E_EXPIRED",
        `the newest certificate named "${name}" (serial ${newest.serial}) ${when}`,
      );
    }
    if (records.some((r) => r.status === "revoked")) {
      throw new MtlsError("E_REVOKED", `every certificate named "${name}" is revoked; issue a new one`);
    }
    throw new MtlsError("E_NOT_FOUND", `no valid certificate named "${name}" in ${stateDir}`);
  }
  const which = `certificate "${name}" (serial ${current.serial})`;
  if (!current.certPath || !current.keyPath) {
    throw new MtlsError(
      "E_NOT_FOUND",
      current.certPath
        ? `the ${which} was issued for a CSR: its private key is not in ${stateDir} (pass --cert and --key)`
        : `the ${which} was not written to files (pass --cert and --key)`,
    );
  }
  if (!existsSync(current.certPath)) {
    throw new MtlsError(
      "E_NOT_FOUND",
      `the certificate file of the ${which} is missing: ${current.certPath}`,
    );
  }
  if (!existsSync(current.keyPath)) {
    throw new MtlsError("E_NOT_FOUND", `the key file of the ${which} is missing: ${current.keyPath}`);
  }
  return { cert: current.certPath, key: current.keyPath, ca: paths.rootCert };
}
