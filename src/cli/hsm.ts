import { existsSync } from "node:fs";
import type { Command } from "commander";
import { writeFileAtomic } from "../config/files.js";
import { type ErrorCode, MtlsError } from "../errors.js";
import {
  defaultEnginePath,
  engineOpenSslConfig,
  formatPkcs11Uri,
  generatePkcs11Key,
  hasPkcs11Key,
  listPkcs11,
  PKCS11_KEY_TYPES,
  parsePkcs11Uri,
  requirePin,
  resolveModulePath,
  resolvePin,
} from "../keys/index.js";
import { buildCsrPem } from "../pki/csr-builder.js";
import { parseKeyType } from "../pki/keys.js";
import { out, table } from "./common.js";

interface ListOpts {
  pkcs11Module?: string;
  pinFile?: string;
  token?: string;
  json?: boolean;
}

/** `mtls hsm list`: the slots, tokens and keys of a PKCS#11 module. */
export function registerHsm(program: Command): void {
  const hsm = program.command("hsm").description("keys in hardware security modules (PKCS#11)");
  hsm
    .command("list")
    .description("show the slots, tokens and (with the PIN) keys of a PKCS#11 module")
    .option(
      "--pkcs11-module <path>",
      "the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so (else MTLS_PKCS11_MODULE)",
    )
    .option(
      "--pin-file <file>",
      "user PIN, to list private keys (else MTLS_PKCS11_PIN; without one, no objects)",
    )
    .option("--token <label>", "log in to and list the objects of this token only")
    .option("--json", "print JSON")
    .action((opts: ListOpts) => {
      const module = resolveModulePath(opts.pkcs11Module);
      const pin = resolvePin(opts.pinFile ? { file: opts.pinFile } : {});
      const only =
        opts.token !== undefined
          ? parsePkcs11Uri(`pkcs11:token=${encodeURIComponent(opts.token)}`)
          : undefined;
      const slots = listPkcs11(module, pin, only);
      if (opts.json) {
        out(JSON.stringify({ module, slots }, null, 2));
        return;
      }
      out(`module ${module}: ${slots.length} slot${slots.length === 1 ? "" : "s"}`);
      for (const slot of slots) {
        out(`slot ${slot.slotId}  ${slot.description}`);
        const t = slot.token;
        if (!t) {
          out("  (no token)");
          continue;
        }
        if (!t.initialized) {
          out("  token not initialized");
          continue;
        }
        const flags = [
          t.pinLocked ? "USER PIN LOCKED" : "",
          t.pinFinalTry ? "one PIN try left" : "",
          t.loginRequired ? "" : "no login",
        ].filter(Boolean);
        out(
          `  token "${t.label}"  ${t.manufacturer} ${t.model}  serial ${t.serial}${flags.length ? `  [${flags.join(", ")}]` : ""}`,
        );
        if (slot.error) {
          out(`  objects not listed: ${slot.error.message}`);
          continue;
        }
        if (!slot.objects) {
          if (pin === undefined) out("  (give the PIN with --pin-file or MTLS_PKCS11_PIN to list keys)");
          continue;
        }
        if (slot.objects.length === 0) {
          out("  no objects");
          continue;
        }
        const rows = [["  class", "type", "label", "id", "access", "uri"]];
        for (const o of slot.objects) {
          const access =
            o.class === "private"
              ? [
                  o.sensitive ? "sensitive" : "NOT sensitive",
                  o.extractable ? "EXTRACTABLE" : "not extractable",
                ].join(", ")
              : "";
          rows.push([`  ${o.class}`, o.keyType ?? "", o.label, o.id, access, o.uri]);
        }
        out(table(rows));
      }
      // Every token is shown first; then a PIN that failed is the command's failure.
      const refused = slots.find((s) => s.error);
      if (refused?.error) throw new MtlsError(refused.error.code as ErrorCode, refused.error.message);
    });

  hsm
    .command("keygen")
    .description(
      "generate a key pair inside a token (sensitive, never extractable), e.g. for a TLS endpoint; with --csr, a CSR it signs",
    )
    .argument("<pkcs11-uri>", "where: 'pkcs11:token=LABEL;object=NAME' (id= optional)")
    .option("--key-type <type>", `one of ${PKCS11_KEY_TYPES.join(", ")}`, "ec-p256")
    .option("--pkcs11-module <path>", "the PKCS#11 module (else MTLS_PKCS11_MODULE)")
    .option("--pin-file <file>", "the token's user PIN (else MTLS_PKCS11_PIN)")
    .option("--csr <file>", "also write a PKCS#10 CSR signed by the new key (for `mtls sign`)")
    .option("--cn <name>", "the CSR's common name (default: the key's label)")
    .action(
      async (
        uriText: string,
        opts: { keyType: string; pkcs11Module?: string; pinFile?: string; csr?: string; cn?: string },
      ) => {
        const uri = parsePkcs11Uri(uriText);
        const keyType = parseKeyType(opts.keyType);
        const module = resolveModulePath(opts.pkcs11Module, uri);
        const pin = requirePin(opts.pinFile ? { file: opts.pinFile } : {}, uri);
        if (opts.csr && existsSync(opts.csr)) throw new MtlsError("E_EXISTS", `${opts.csr} already exists`);
        const common = { module, uri, pin };
        if (hasPkcs11Key(common)) {
          throw new MtlsError(
            "E_EXISTS",
            `the token already holds a private key matching ${formatPkcs11Uri(uri)}`,
          );
        }
        const signer = generatePkcs11Key({ ...common, keyType });
        out(`generated ${signer.keyType} key ${signer.uri} (sensitive, never extractable)`);
        if (opts.csr) {
          const cn = opts.cn ?? uri.object ?? "mtls";
          writeFileAtomic(opts.csr, await buildCsrPem({ subject: { commonName: cn } }, signer), {
            mode: 0o644,
          });
          out(
            `  CSR: ${opts.csr} (CN=${cn}); sign it with: mtls sign ${opts.csr} --profile server --dns ...`,
          );
        }
      },
    );

  hsm
    .command("openssl-config")
    .description(
      "print an OpenSSL configuration that registers the pkcs11 engine, for TLS endpoints whose key is in a token (OPENSSL_CONF=FILE)",
    )
    .option("--pkcs11-module <path>", "the PKCS#11 module the engine loads (else MTLS_PKCS11_MODULE)")
    .option("--engine-path <path>", "the engine (default: Debian's libengine-pkcs11-openssl)")
    .action((opts: { pkcs11Module?: string; enginePath?: string }) => {
      const module = resolveModulePath(opts.pkcs11Module);
      if (!existsSync(module)) {
        throw new MtlsError(
          "E_PKCS11_MODULE",
          `PKCS#11 module ${module} does not exist (check --pkcs11-module)`,
        );
      }
      const engine = opts.enginePath ?? defaultEnginePath();
      if (!engine || !existsSync(engine)) {
        throw new MtlsError(
          "E_PKCS11_MODULE",
          `no OpenSSL pkcs11 engine ${engine ?? "found"}: install libengine-pkcs11-openssl or give --engine-path`,
        );
      }
      out(engineOpenSslConfig(module, engine));
    });
}
