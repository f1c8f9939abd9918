import { isAbsolute, relative } from "node:path";
import type { Command } from "commander";
import { MtlsError } from "../errors.js";
import { registerCaSettings } from "./ca-settings.js";
import {
  addPassphraseOption,
  addStateOption,
  collect,
  note,
  out,
  pathsFrom,
  type StateOpts,
} from "./common.js";

/** `mtls ca …`: the CA's settings (ca-settings.ts) and its service (`mtls ca serve`). */
export function registerCa(program: Command): void {
  const ca = program.command("ca").description("the CA's settings and its HTTP service");
  registerCaSettings(ca);
  registerServe(ca);
}

interface ServeOpts extends StateOpts {
  listen: string;
  publicListen: string;
  status?: string;
  san?: string[];
  init?: boolean;
  rateLimit: string;
  logLevel: string;
  tlsKey?: string;
  pkcs11Module?: string;
  pinFile?: string;
}

/** A path as a person in the current folder would type it. */
function shown(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith("..") && !isAbsolute(rel) ? rel : path;
}

/** `mtls ca serve`: the CA as a service (src/server); runs until SIGTERM or SIGINT. */
function registerServe(ca: Command): void {
  const serve = ca
    .command("serve")
    .description(
      "serve the CA: HTTPS API (enrollment, renewal, revocation, inventory, audit) and CRL/OCSP over plain HTTP",
    )
    .option("--listen <addr>", "HTTPS API address", "127.0.0.1:8443")
    .option(
      "--public-listen <addr>",
      'plain HTTP for /crl, /crl/root, /ocsp, /healthz ("off": none)',
      "127.0.0.1:8080",
    )
    .option("--status <addr>", "serve /metrics, /healthz, /readyz on this address")
    .option(
      "--san <name>",
      "another name for the API's certificate (dns:NAME, ip:ADDR or a host; repeat)",
      collect,
    )
    .option("--init", "create the CA (and its admin certificate) first when there is none")
    .option("--rate-limit <n>", "requests per second per client on unauthenticated endpoints (0: off)", "20")
    .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent", "info")
    .option(
      "--tls-key <uri>",
      "the API's HTTPS key in a PKCS#11 token (pkcs11:token=...;object=...; needs OPENSSL_CONF from `mtls hsm openssl-config`)",
    )
    .option(
      "--pkcs11-module <path>",
      "the PKCS#11 module for --tls-key (else MTLS_PKCS11_MODULE, else the CA's own token module)",
    )
    .option(
      "--pin-file <file>",
      "the token's user PIN for --tls-key and a CA key in a token (else MTLS_PKCS11_PIN)",
    );
  addStateOption(serve);
  addPassphraseOption(serve);
  serve.action(async (opts: ServeOpts) => {
    const rate = Number(opts.rateLimit);
    if (!Number.isFinite(rate) || rate < 0)
      throw new MtlsError("E_USAGE", `invalid --rate-limit "${opts.rateLimit}"`);
    const { parseLogLevel } = await import("../observe/index.js");
    parseLogLevel(opts.logLevel);
    const { startCaServer } = await import("../server/index.js");
    const paths = pathsFrom(opts);
    const server = await startCaServer({
      paths,
      listen: opts.listen,
      publicListen: opts.publicListen === "off" ? null : opts.publicListen,
      ...(opts.status ? { status: opts.status } : {}),
      sans: opts.san ?? [],
      ...(opts.passphraseFile ? { passphraseFile: opts.passphraseFile } : {}),
      init: opts.init ?? false,
      rateLimit: rate,
      logLevel: opts.logLevel,
      ...(opts.tlsKey ? { tlsKey: opts.tlsKey } : {}),
      ...(opts.pkcs11Module ? { pkcs11Module: opts.pkcs11Module } : {}),
      ...(opts.pinFile ? { pinFile: opts.pinFile } : {}),
    });
    if (server.created) {
      out(`created a CA in ${shown(paths.dir)}`);
      if (server.created.generatedPassphraseFile)
        note(
          `mtls: generated a passphrase for the CA keys in ${server.created.generatedPassphraseFile} (mode 0600); ` +
            "move it somewhere safer and use --passphrase-file or MTLS_PASSPHRASE for real protection",
        );
    }
    out(
      `CA service: ${server.api.url} (API, mTLS)${server.public ? `, ${server.public.url} (CRL, OCSP)` : ""}`,
    );
    out(`  trust anchor: ${shown(paths.rootCert)}`);
    const admin = server.admin;
    if (admin?.cert && admin.key) {
      out(
        `  admin:        ${shown(admin.cert)}, ${shown(admin.key)} ("${admin.name}", serial ${admin.serial})`,
      );
      if (admin.p12)
        out(
          `  for browsers: ${shown(admin.p12)}${admin.p12Password ? ` (password in ${shown(admin.p12Password)})` : ""}`,
        );
      // The console (docs/console.md) opens for a browser that has imported that PKCS#12.
      if (admin.p12) out(`  console:      ${server.api.url}/admin`);
      out("Try it (lists the certificates, as the admin):");
      out(
        `  curl --cacert ${shown(paths.rootCert)} --cert ${shown(admin.cert)} --key ${shown(admin.key)} ${server.api.url}/v1/certificates`,
      );
    } else {
      out("  admin:        none with files here; `mtls ca serve --init` issues one into STATE/admin/");
    }
    out("Stop with Ctrl-C or SIGTERM; SIGHUP re-reads settings and renews the HTTPS certificate when due.");

    await new Promise<void>((resolveDone, reject) => {
      const stop = (signal: string) => {
        note(`mtls: ${signal}: stopping (draining requests)`);
        process.off("SIGTERM", onTerm);
        process.off("SIGINT", onInt);
        process.off("SIGHUP", onHup);
        server.close().then(resolveDone, reject);
      };
      const onTerm = () => stop("SIGTERM");
      const onInt = () => stop("SIGINT");
      const onHup = () => void server.reload();
      process.on("SIGTERM", onTerm);
      process.on("SIGINT", onInt);
      process.on("SIGHUP", onHup);
    });
  });
}
