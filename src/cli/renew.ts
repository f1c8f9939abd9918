import { resolve } from "node:path";
import type { Command } from "commander";
import { expiredError, ifDue, type RenewTarget, renewCertificate, runReload } from "../agent/index.js";
import { parseDuration } from "../config/duration.js";
import { type AgentCertificateConfig, loadConfig } from "../config/index.js";
import { MtlsError } from "../errors.js";
import { isoDay, note, out } from "./common.js";

interface RenewOpts {
  config?: string;
  cert?: string;
  key?: string;
  caUrl?: string;
  caCert?: string;
  ifDue?: boolean;
  rekey?: boolean;
  force?: boolean;
  timeout: string;
  json?: boolean;
}

export function registerRenew(program: Command): void {
  program
    .command("renew")
    .description(
      "renew a certificate through the CA service, authenticated by the certificate itself (mTLS); --if-due for cron and timers",
    )
    .argument("<name>", "the certificate: its entry in the agent section of -c, or the name for --cert/--key")
    .option("-c, --config <file>", "the config file with an agent section (default mtls.yaml)")
    .option("--cert <file>", "the certificate file (leaf + intermediate) to renew, instead of -c")
    .option("--key <file>", "with --cert: its key")
    .option("--ca-url <url>", "with --cert: the CA service, e.g. https://127.0.0.1:8443")
    .option("--ca-cert <file>", "with --cert: the CA's root certificate")
    .option(
      "--if-due",
      "renew only when 2/3 of the lifetime has passed; otherwise exit 0 without contacting the CA",
    )
    .option("--rekey", "make a new key (same type) and have it certified, instead of keeping the key")
    .option("--force", "with --if-due: renew even when not due yet")
    .option("--timeout <duration>", "deadline of the request to the CA", "30s")
    .option("--json", "print the result as JSON")
    .action(async (name: string, opts: RenewOpts) => {
      const timeoutMs = parseDuration(opts.timeout, "--timeout");
      const entry = await targetOf(name, opts);
      const now = new Date();
      if (opts.ifDue && !opts.force) {
        const decision = ifDue(entry.target.files, now);
        if (decision.action === "expired") throw expiredError(name, decision.current.notAfter);
        if (decision.action === "skip") {
          note(
            `mtls: "${name}" is not due for renewal until ${isoDay(decision.dueAt)} (valid until ${isoDay(decision.current.notAfter)}); nothing done`,
          );
          if (opts.json) out(JSON.stringify({ renewed: false, dueAt: decision.dueAt.toISOString() }));
          return;
        }
      }
      const res = await renewCertificate(entry.target, { rekey: opts.rekey ?? entry.rekey, timeoutMs });
      if (opts.json) {
        out(
          JSON.stringify({
            renewed: true,
            previousSerial: res.previousSerial,
            serial: res.serial,
            notBefore: res.notBefore.toISOString(),
            notAfter: res.notAfter.toISOString(),
            rekeyed: res.rekeyed,
          }),
        );
      } else {
        out(
          `renewed "${name}": serial ${res.previousSerial} → ${res.serial}, valid until ${isoDay(res.notAfter)}${res.rekeyed ? " (new key)" : ""}`,
        );
      }
      if (entry.reload) {
        // The new files are in place whatever the reload does; its failure is still a failure.
        const said = await runReload(entry.reload, {
          name,
          cert: entry.target.files.cert,
          key: entry.target.files.key,
          serial: res.serial,
          notAfter: res.notAfter,
        });
        if (said) note(`mtls: reload: ${said}`);
      }
    });
}

interface Entry {
  target: RenewTarget;
  rekey: boolean;
  reload?: AgentCertificateConfig["reload"];
}

/** The certificate from flags (--cert/--key/--ca-url/--ca-cert) or from the config's agent section. */
async function targetOf(name: string, opts: RenewOpts): Promise<Entry> {
  const flags = [opts.cert, opts.key, opts.caUrl, opts.caCert];
  if (flags.some((f) => f !== undefined)) {
    if (opts.config !== undefined)
      throw new MtlsError("E_USAGE", "give either -c or --cert/--key/--ca-url/--ca-cert");
    if (flags.some((f) => f === undefined)) {
      throw new MtlsError("E_USAGE", "--cert, --key, --ca-url and --ca-cert go together");
    }
    return {
      target: {
        name,
        files: { cert: resolve(opts.cert as string), key: resolve(opts.key as string) },
        caUrl: opts.caUrl as string,
        caCert: resolve(opts.caCert as string),
      },
      rekey: false,
    };
  }
  const config = await loadConfig(opts.config ?? "mtls.yaml", { require: "agent" });
  const c = config.agent?.certificates.find((x) => x.name === name);
  if (!c) {
    const names = config.agent?.certificates.map((x) => x.name).join(", ") ?? "";
    throw new MtlsError(
      "E_NOT_FOUND",
      `${config.source}: no certificate "${name}" in the agent section (${names})`,
    );
  }
  return {
    target: { name, files: { cert: c.cert, key: c.key }, caUrl: c.caUrl, caCert: c.caCert },
    rekey: c.rekey,
    ...(c.reload ? { reload: c.reload } : {}),
  };
}
