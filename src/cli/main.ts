#!/usr/bin/env node
import { Command, CommanderError } from "commander";
import { isMtlsError } from "../errors.js";

type Register = (program: Command) => void;

/**
 * Every command, by name, with the module that registers it. Only the module of the command being
 * run is loaded: a tunnel process then holds the tunnel code and not the CA's, which keeps start-up
 * and the live heap small (see docs/benchmarks.md). Help and unknown commands load them all.
 */
const COMMANDS: Record<string, () => Promise<Register[]>> = {
  init: async () => [(await import("./init.js")).registerInit],
  issue: async () => [(await import("./issue.js")).registerIssue],
  sign: async () => [(await import("./issue.js")).registerSign],
  list: async () => [(await import("./list.js")).registerList],
  inspect: async () => [(await import("./inspect.js")).registerInspect],
  verify: async () => [(await import("./verify.js")).registerVerify],
  revoke: async () => [(await import("./revoke.js")).registerRevoke],
  crl: async () => [(await import("./revoke.js")).registerCrl],
  export: async () => [(await import("./export.js")).registerExport],
  audit: async () => [(await import("./audit.js")).registerAudit],
  quickstart: async () => [(await import("./quickstart.js")).registerQuickstart],
  tunnel: async () => [(await import("./tunnel.js")).registerTunnel],
  gateway: async () => [(await import("./gateway.js")).registerGateway],
  up: async () => [(await import("./up.js")).registerUp],
  enroll: async () => [(await import("./enroll.js")).registerEnroll],
  renew: async () => [(await import("./renew.js")).registerRenew],
  agent: async () => [(await import("./agent.js")).registerAgent],
  token: async () => [(await import("./token.js")).registerToken],
  ca: async () => [(await import("./ca.js")).registerCa],
  store: async () => [(await import("./store.js")).registerStore],
  hsm: async () => [(await import("./hsm.js")).registerHsm],
};
const VERSION = "0.1.0";

/** The first argument that is not an option: the command being run, if any. */
function commandName(argv: string[]): string | undefined {
  return argv.slice(2).find((a) => !a.startsWith("-"));
}

export async function buildProgram(argv: string[] = process.argv): Promise<Command> {
  const program = new Command("mtls")
    .description("mutual TLS for a whole business: a private CA, tunnels and a gateway")
    .version(VERSION)
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({
      outputError: (str, write) => write(`mtls: ${str.replace(/^error: /, "").trimEnd()}\n`),
    });
  const name = commandName(argv);
  const load = name !== undefined && name !== "help" ? COMMANDS[name] : undefined;
  const loaders = load ? [load] : Object.values(COMMANDS);
  const registered = new Set<Register>();
  for (const registers of await Promise.all(loaders.map((l) => l()))) {
    for (const register of registers) {
      if (registered.has(register)) continue;
      registered.add(register);
      register(program);
    }
  }
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

/** Runs the CLI: usage errors exit 2, every other failure prints one line and exits 1. */
export async function main(argv: string[]): Promise<number> {
  try {
    await (await buildProgram(argv)).parseAsync(argv);
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
