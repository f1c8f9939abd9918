import { existsSync } from "node:fs";
import { MtlsError } from "../errors.js";
import { readFileOrThrow } from "./files.js";

export interface PassphraseSource {
  /** `--passphrase-file` */
  file?: string;
  env?: NodeJS.ProcessEnv;
}

export interface ResolvedPassphrase {
  passphrase: string;
  /** Where it came from, for messages: "--passphrase-file", "MTLS_PASSPHRASE", or the generated file. */
  origin: string;
}

const clean = (text: string) => text.replace(/\r?\n$/, "");

/**
 * The passphrase that encrypts the CA keys: from --passphrase-file, else MTLS_PASSPHRASE, else the
 * state directory's own `passphrase` file (which `init` generates when neither was given).
 */
export function resolvePassphrase(src: PassphraseSource, stateFile: string): ResolvedPassphrase | undefined {
  const env = src.env ?? process.env;
  if (src.file) {
    const value = clean(readFileOrThrow(src.file, "passphrase file").toString("utf8"));
    if (!value) throw new MtlsError("E_PASSPHRASE", `passphrase file ${src.file} is empty`);
    return { passphrase: value, origin: "--passphrase-file" };
  }
  if (env.MTLS_PASSPHRASE) return { passphrase: env.MTLS_PASSPHRASE, origin: "MTLS_PASSPHRASE" };
  if (existsSync(stateFile)) {
    return {
      passphrase: clean(readFileOrThrow(stateFile, "passphrase file").toString("utf8")),
      origin: stateFile,
    };
  }
  return undefined;
}

export function requirePassphrase(src: PassphraseSource, stateFile: string): string {
  const found = resolvePassphrase(src, stateFile);
  if (!found) {
    throw new MtlsError(
      "E_PASSPHRASE",
      "the CA key passphrase is needed: pass --passphrase-file or set MTLS_PASSPHRASE",
    );
  }
  return found.passphrase;
}
