import { existsSync } from "node:fs";
import type { Command } from "commander";
import { readFileOrThrow } from "../config/files.js";
import { hasCa } from "../config/state.js";
import { MtlsError } from "../errors.js";
import { type CertInfo, parseCertificates } from "../pki/certinfo.js";
import { type CrlInfo, parseCrls } from "../pki/crl.js";
import { type Purpose, verifyChain } from "../pki/verify.js";
import { openStore } from "../store/index.js";
import { addStateOption, collect, isoDay, out, pathsFrom, type StateOpts } from "./common.js";

interface VerifyOpts extends StateOpts {
  purpose: string;
  ca?: string;
  crl?: string[];
  json?: boolean;
}

export function registerVerify(program: Command): void {
  const cmd = program
    .command("verify")
    .description("check a certificate: chain to the CA, validity, revocation and purpose")
    .argument("<file>", "certificate file (leaf first; more certificates in it may complete the chain)")
    .option("--purpose <purpose>", "client, server or any", "any")
    .option("--ca <file>", "trust this root instead of the state directory's")
    .option("--crl <file>", "also check against this CRL file (repeatable)", collect)
    .option("--json", "print JSON");
  addStateOption(cmd);
  cmd.action(async (file: string, opts: VerifyOpts) => {
    if (!["client", "server", "any"].includes(opts.purpose)) {
      throw new MtlsError("E_USAGE", `unknown purpose "${opts.purpose}" (client, server or any)`);
    }
    const paths = pathsFrom(opts);
    const [leaf, ...rest] = parseCertificates(readFileOrThrow(file, "certificate"));
    if (!leaf) throw new MtlsError("E_BAD_INPUT", `${file} holds no certificate`);
    const useState = !opts.ca && hasCa(paths);
    if (!opts.ca && !useState)
      throw new MtlsError("E_NO_CA", `no CA in ${paths.dir}: pass --ca ROOT.crt or --state`);
    const anchors = parseCertificates(readFileOrThrow(opts.ca ?? paths.rootCert, "CA certificate"));
    const intermediates: CertInfo[] = [...rest];
    const crls: CrlInfo[] = (opts.crl ?? []).flatMap((f) => parseCrls(readFileOrThrow(f, "CRL")));
    if (useState) {
      intermediates.push(
        ...parseCertificates(readFileOrThrow(paths.intermediateCert, "intermediate certificate")),
      );
      if (existsSync(paths.crl)) crls.push(...parseCrls(readFileOrThrow(paths.crl, "CRL")));
    }
    const result = await verifyChain({
      leaf,
      intermediates,
      anchors,
      at: new Date(),
      purpose: opts.purpose as Purpose,
      crls,
    });
    // The inventory knows of revocations even before a CRL is published.
    if (useState) {
      const store = await openStore(paths);
      try {
        const rec = await store.getCertificate(leaf.serial);
        if (rec?.status === "revoked" && rec.fingerprint === leaf.fingerprint) {
          throw new MtlsError(
            "E_REVOKED",
            `${leaf.subject} (serial ${leaf.serial}) was revoked at ${rec.revokedAt?.toISOString()} (${rec.revocationReason})`,
          );
        }
      } finally {
        await store.close();
      }
    }
    if (opts.json) {
      out(
        JSON.stringify(
          {
            ok: true,
            chain: result.chain.map((c) => ({ subject: c.subject, serial: c.serial })),
            revocation: result.revocation,
          },
          null,
          2,
        ),
      );
      return;
    }
    out(`OK: ${leaf.subject} (serial ${leaf.serial})`);
    out(`  valid until ${isoDay(leaf.notAfter)}, purpose ${opts.purpose}`);
    out(`  chain: ${result.chain.map((c) => c.subject).join(" <- ")}`);
    result.revocation.forEach((r, i) => {
      out(`  revocation of ${result.chain[i]?.subject}: ${r}`);
    });
  });
}
