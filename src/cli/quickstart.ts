import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { initCa, issueToFiles, openCa } from "../ca/index.js";
import { hasCa } from "../config/state.js";
import { makeSan } from "../pki/names.js";
import { addStateOption, cliActor, note, out, pathsFrom, type StateOpts } from "./common.js";
import { listCertificates } from "./list.js";

interface QuickstartOpts extends StateOpts {
  out: string;
}

/**
 * A CA if there is none, a demo server and client certificate in ./certs, and the inventory: the
 * offline start. `npm start` runs the CA as a service instead (`mtls ca serve --init`).
 */
export function registerQuickstart(program: Command): void {
  const cmd = program
    .command("quickstart")
    .description("create a CA if there is none, issue a demo server and client certificate, and list them")
    .option("--out <dir>", "folder for the demo certificates", "certs");
  addStateOption(cmd);
  cmd.action(async (opts: QuickstartOpts) => {
    const paths = pathsFrom(opts);
    if (!hasCa(paths)) {
      const res = await initCa({ paths, name: "mtls demo", actor: cliActor() });
      out(`created CA "mtls demo" in ${paths.dir} (root ${res.root.serial})`);
      note(`mtls: the CA key passphrase was generated into ${res.generatedPassphraseFile} (mode 0600)`);
    } else {
      out(`using the CA in ${paths.dir}`);
    }
    const dir = resolve(opts.out);
    // issueToFiles writes into an existing folder; on a first run there is none yet.
    mkdirSync(dir, { recursive: true });
    const ca = await openCa(paths);
    try {
      const demos = [
        {
          profile: "server" as const,
          name: "localhost",
          sans: [makeSan("dns", "localhost"), makeSan("ip", "127.0.0.1")],
        },
        {
          profile: "client" as const,
          name: "demo-client",
          sans: [makeSan("uri", "spiffe://mtls.demo/user/demo")],
        },
      ];
      for (const demo of demos) {
        if (existsSync(join(dir, `${demo.name}.crt`))) {
          out(`${join(dir, `${demo.name}.crt`)} exists; not issued again`);
          continue;
        }
        const { files } = await issueToFiles(ca, { ...demo, actor: cliActor() }, { outDir: dir });
        out(`issued ${demo.profile} certificate "${demo.name}": ${files.cert}, ${files.key}`);
      }
    } finally {
      await ca.store.close();
    }
    out("");
    await listCertificates(paths, {});
    out("");
    out("Try it: a TLS server that demands a client certificate, and a client that presents one:");
    out(
      `  openssl s_server -accept 127.0.0.1:8443 -cert ${opts.out}/localhost.crt -cert_chain ${opts.out}/localhost.crt -key ${opts.out}/localhost.key -CAfile ${opts.out}/ca.crt -Verify 2 -www`,
    );
    out(
      `  curl --cacert ${opts.out}/ca.crt --cert ${opts.out}/demo-client.crt --key ${opts.out}/demo-client.key https://localhost:8443/`,
    );
    out("");
    out(
      "The CA as a service (enrollment, renewal, revocation, CRL and OCSP): mtls ca serve --init (npm start)",
    );
  });
}
