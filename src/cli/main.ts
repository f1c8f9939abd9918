#!/usr/bin/env node
import { Command, CommanderError } from "commander";
import { isMtlsError } from "../errors.js";
import { registerAudit } from "./audit.js";
import { registerExport } from "./export.js";
import { registerInit } from "./init.js";
import { registerInspect } from "./inspect.js";
import { registerIssue, registerSign } from "./issue.js";
import { registerList } from "./list.js";
import { registerQuickstart } from "./quickstart.js";
import { registerCrl, registerRevoke } from "./revoke.js";
import { registerTunnel } from "./tunnel.js";
import { registerUp } from "./up.js";
import { registerVerify } from "./verify.js";

const VERSION = "0.1.0";

export function buildProgram(): Command {
  const program = new Command("mtls")
    .description("mutual TLS for a whole business: a private CA, tunnels and a gateway")
    .version(VERSION)
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({
      outputError: (str, write) => write(`mtls: ${str.replace(/^error: /, "").trimEnd()}\n`),
    });
  for (const register of [
    registerInit,
    registerIssue,
    registerSign,
    registerList,
    registerInspect,
    registerVerify,
    registerRevoke,
    registerCrl,
    registerExport,
    registerAudit,
    registerQuickstart,
    registerTunnel,
    registerUp,
  ]) {
    register(program);
  }
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

/** Runs the CLI: usage errors exit 2, every other failure prints one line and exits 1. */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version output exit 0; commander already printed the message otherwise.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (isMtlsError(err)) {
      process.stderr.write(`mtls: ${err.message}\n`);
      return err.code === "E_USAGE" ? 2 : 1;
    }
    const e = err as Error;
    process.stderr.write(`mtls: unexpected error: ${e?.message ?? String(err)}\n`);
    if (process.env.MTLS_DEBUG) process.stderr.write(`${e?.stack ?? ""}\n`);
    return 1;
  }
}

main(process.argv).then((code) => {
  process.exitCode = code;
});
