import type { Command } from "commander";
import { enrollCertificate } from "../agent/index.js";
import { parseDuration } from "../config/duration.js";
import { MtlsError } from "../errors.js";
import { parseKeyType } from "../pki/keys.js";
import { makeSan, type San } from "../pki/names.js";
import { collect, isoDay, note, out, readSecretFile } from "./common.js";

interface EnrollOpts {
  caUrl: string;
  caCert: string;
  token?: string;
  tokenFile?: string;
  out: string;
  keyType: string;
  dns?: string[];
  ip?: string[];
  email?: string[];
  uri?: string[];
  force?: boolean;
  timeout: string;
  json?: boolean;
}

export function registerEnroll(program: Command): void {
  program
    .command("enroll")
    .description(
      "get a certificate from the CA service with a one-time token: the key is made here and never leaves this machine",
    )
    .argument("<name>", "the name the token was made for; the file name of NAME.crt and NAME.key")
    .requiredOption("--ca-url <url>", "the CA service, e.g. https://127.0.0.1:8443")
    .requiredOption("--ca-cert <file>", "the CA's root certificate: the only one trusted for the connection")
    .option(
      "--token <token>",
      "the one-time enrollment token (mtls token create); else --token-file or $MTLS_TOKEN",
    )
    .option("--token-file <file>", "read the token from this file (keeps it out of the process list)")
    .option("--out <dir>", "folder for NAME.crt (leaf + intermediate), NAME.key (0600) and ca.crt", ".")
    .option("--key-type <type>", "ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096 or ed25519", "ec-p256")
    .option("--dns <name>", "ask for this DNS SAN (of those the token allows; repeatable)", collect)
    .option("--ip <address>", "ask for this IP SAN (repeatable)", collect)
    .option("--email <address>", "ask for this e-mail SAN (repeatable)", collect)
    .option("--uri <uri>", "ask for this URI SAN (repeatable)", collect)
    .option("--timeout <duration>", "deadline of the request to the CA", "30s")
    .option("--force", "replace existing NAME.crt and NAME.key")
    .option("--json", "print the result as JSON")
    .action(async (name: string, opts: EnrollOpts) => {
      const keyType = parseKeyType(opts.keyType);
      const token = tokenOf(opts);
      const sans: San[] = [
        ...(opts.dns ?? []).map((v) => makeSan("dns", v)),
        ...(opts.ip ?? []).map((v) => makeSan("ip", v)),
        ...(opts.email ?? []).map((v) => makeSan("email", v)),
        ...(opts.uri ?? []).map((v) => makeSan("uri", v)),
      ];
      const res = await enrollCertificate({
        caUrl: opts.caUrl,
        caCert: opts.caCert,
        token,
        name,
        outDir: opts.out,
        keyType,
        sans,
        force: opts.force ?? false,
        timeoutMs: parseDuration(opts.timeout, "--timeout"),
      });
      if (opts.json) {
        out(
          JSON.stringify(
            {
              serial: res.serial,
              name: res.name,
              profile: res.profile,
              notBefore: res.notBefore.toISOString(),
              notAfter: res.notAfter.toISOString(),
              files: res.files,
            },
            null,
            2,
          ),
        );
        return;
      }
      out(
        `enrolled "${res.name}" (${res.profile}): serial ${res.serial}, valid until ${isoDay(res.notAfter)}`,
      );
      note(`  certificate ${res.files.cert}\n  key         ${res.files.key}\n  CA          ${res.files.ca}`);
    });
}

function tokenOf(opts: EnrollOpts): string {
  const given = [opts.token !== undefined, opts.tokenFile !== undefined].filter(Boolean).length;
  if (given > 1) throw new MtlsError("E_USAGE", "give either --token or --token-file, not both");
  if (opts.token !== undefined) return opts.token.trim();
  if (opts.tokenFile !== undefined) return readSecretFile(opts.tokenFile, "token file").trim();
  const env = process.env.MTLS_TOKEN?.trim();
  if (env) return env;
  throw new MtlsError("E_USAGE", "no enrollment token: give --token, --token-file or $MTLS_TOKEN");
}
