import { existsSync } from "node:fs";
import { MtlsError } from "../errors.js";
import { openPkcs11Signer } from "./pkcs11.js";
import { requirePin, resolveModulePath } from "./pkcs11-module.js";
import { formatPkcs11Uri, parsePkcs11Uri } from "./pkcs11-uri.js";

/**
 * A TLS endpoint's private key in a PKCS#11 token. Node 20 signs TLS handshakes with such a key only
 * through an OpenSSL engine (`privateKeyEngine` + `privateKeyIdentifier`); there is no signing
 * callback. Debian's libengine-pkcs11-openssl (libp11 0.4.12) can be loaded *by path* only once per
 * process (a second load fails with "engine routines::init failed", OpenSC/libp11#556), while every
 * TLS endpoint builds several contexts (start, server, each reload). Registered at start-up through
 * an OpenSSL configuration (OPENSSL_CONF, see `mtls hsm openssl-config`), the engine is found *by id*
 * "pkcs11" as often as needed, with the module its MODULE_PATH names. docs/hsm.md has the evidence.
 */

export interface TokenTlsKeyOptions {
  /** PKCS#11 module for checking the key (else the URI's module-path, else MTLS_PKCS11_MODULE). */
  module?: string;
  /** The user PIN (else --pin-file / MTLS_PKCS11_PIN / MTLS_PKCS11_PIN_FILE through the environment). */
  pin?: string;
  pinFile?: string;
  /** OpenSSL engine id (else MTLS_PKCS11_ENGINE, else "pkcs11"). */
  engine?: string;
  env?: NodeJS.ProcessEnv;
}

export interface TokenTlsKey {
  /** The key's SubjectPublicKeyInfo, read from the token, to check it against the certificate. */
  spki: Uint8Array;
  /** For SecureContextOptions.privateKeyEngine. */
  engine: string;
  /**
   * For SecureContextOptions.privateKeyIdentifier: the key's URI with the PIN as pin-value. It lives
   * in memory only (handed to OpenSSL); never log it or put it in an error message.
   */
  identifier: string;
  /** The key's URI without PIN, for messages. */
  uri: string;
}

/**
 * Opens the key through pkcs11js first, so a wrong PIN, a missing key or a key of the wrong type is a
 * clear E_PKCS11_* error before OpenSSL's engine sees it, and returns what a TLS context needs.
 */
export function tokenTlsKey(keyUri: string, opts: TokenTlsKeyOptions = {}): TokenTlsKey {
  const env = opts.env ?? process.env;
  const uri = parsePkcs11Uri(keyUri);
  const pin = opts.pin ?? requirePin({ ...(opts.pinFile ? { file: opts.pinFile } : {}), env }, uri);
  const module = resolveModulePath(opts.module, uri, env);
  const signer = openPkcs11Signer({ module, uri, pin });
  const located = parsePkcs11Uri(signer.uri);
  return {
    spki: signer.spki,
    engine: opts.engine ?? env.MTLS_PKCS11_ENGINE ?? "pkcs11",
    identifier: formatPkcs11Uri({ ...located, pinValue: pin }, { withPin: true }),
    uri: signer.uri,
  };
}

/** An OpenSSL failure to load the engine key, as an MtlsError that never carries the identifier. */
export function engineFailure(err: unknown, key: TokenTlsKey): MtlsError {
  const e = err as Error & { opensslErrorStack?: string[] };
  const all = [e?.message ?? "", ...(e?.opensslErrorStack ?? [])].join(" ");
  if (/could not load the shared library|no such engine|dso not found|init failed/i.test(all)) {
    return new MtlsError(
      "E_PKCS11_MODULE",
      `the OpenSSL engine "${key.engine}" is not registered in this process: start mtls with OPENSSL_CONF pointing at the file \`mtls hsm openssl-config\` writes (docs/hsm.md)`,
      { cause: err },
    );
  }
  const reason = (e?.message ?? String(err)).replace(/pkcs11:[^\s"']*/g, key.uri);
  return new MtlsError("E_PKCS11_KEY", `the OpenSSL engine cannot use the key ${key.uri}: ${reason}`, {
    cause: err,
  });
}

/** Where Debian (and Ubuntu) install libengine-pkcs11-openssl's engine for this architecture. */
export function defaultEnginePath(): string | undefined {
  const triplet = { x64: "x86_64-linux-gnu", arm64: "aarch64-linux-gnu", arm: "arm-linux-gnueabihf" }[
    process.arch as string
  ];
  const candidates = [
    ...(triplet ? [`/usr/lib/${triplet}/engines-3/pkcs11.so`] : []),
    "/usr/lib64/engines-3/pkcs11.so",
    "/usr/lib/engines-3/pkcs11.so",
  ];
  return candidates.find((p) => existsSync(p));
}

/**
 * An OpenSSL configuration that registers the pkcs11 engine at process start for Node (section
 * nodejs_conf) with the module to use. It holds no PIN.
 */
export function engineOpenSslConfig(module: string, enginePath: string): string {
  return [
    "# OpenSSL configuration for mtls TLS endpoints with their key in a PKCS#11 token.",
    "# Use: OPENSSL_CONF=/path/to/this/file mtls tunnel ... --key 'pkcs11:token=...;object=...'",
    "nodejs_conf = mtls_node_init",
    "",
    "[mtls_node_init]",
    "engines = mtls_engines",
    "",
    "[mtls_engines]",
    "pkcs11 = mtls_pkcs11",
    "",
    "[mtls_pkcs11]",
    "engine_id = pkcs11",
    `dynamic_path = ${enginePath}`,
    `MODULE_PATH = ${module}`,
    "init = 0",
    "",
  ].join("\n");
}
