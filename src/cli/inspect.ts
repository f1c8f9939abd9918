import type { Command } from "commander";
import { readFileOrThrow } from "../config/files.js";
import { MtlsError } from "../errors.js";
import { type CertInfo, parseCertificate, parseCertificates } from "../pki/certinfo.js";
import { parseCrls } from "../pki/crl.js";
import { parseCsr } from "../pki/csr.js";
import { keyTypeOf, privateKeyFromPkcs8 } from "../pki/keys.js";
import { formatSan } from "../pki/names.js";
import { pemDecodeAll } from "../pki/pem.js";
import { parsePkcs12 } from "../pki/pkcs12.js";
import { isoDay, out, readSecretFile } from "./common.js";
import { promptHidden } from "./prompt.js";

interface InspectOpts {
  json?: boolean;
  passwordFile?: string;
}

export function registerInspect(program: Command): void {
  program
    .command("inspect")
    .description("show what a certificate, CSR, CRL or PKCS#12 file contains")
    .argument("<file>", ".crt/.pem, .csr, .crl or .p12/.pfx (PEM or DER)")
    .option("--password-file <file>", "PKCS#12 password (else asked on the terminal)")
    .option("--json", "print JSON")
    .action(async (file: string, opts: InspectOpts) => {
      const data = readFileOrThrow(file, "file");
      const result = await inspect(data, file, opts);
      out(opts.json ? JSON.stringify(result, jsonReplacer, 2) : render(result));
    });
}

type Inspected =
  | { type: "certificates"; certificates: CertInfo[] }
  | { type: "csr"; csr: Awaited<ReturnType<typeof parseCsr>> }
  | { type: "crl"; crls: ReturnType<typeof parseCrls> }
  | {
      type: "pkcs12";
      keyType: string | null;
      certificates: CertInfo[];
      friendlyName?: string;
      encryption: string;
      macAlgorithm: string;
    };

async function inspect(data: Buffer, file: string, opts: InspectOpts): Promise<Inspected> {
  const text = data.toString("latin1");
  const labels = text.includes("-----BEGIN ") ? pemDecodeAll(text).map((b) => b.label) : [];
  if (labels.some((l) => l.includes("CERTIFICATE REQUEST")))
    return { type: "csr", csr: await parseCsr(data) };
  if (labels.some((l) => l.endsWith("CRL"))) return { type: "crl", crls: parseCrls(data) };
  if (labels.some((l) => l.endsWith("CERTIFICATE")))
    return { type: "certificates", certificates: parseCertificates(data) };
  if (labels.length)
    throw new MtlsError("E_BAD_INPUT", `${file}: nothing to inspect (PEM blocks: ${labels.join(", ")})`);
  if (/\.(p12|pfx)$/i.test(file)) return inspectP12(data, opts);
  // DER: try each kind in turn.
  for (const attempt of [
    () => ({ type: "certificates" as const, certificates: [parseCertificate(new Uint8Array(data))] }),
    () => ({ type: "crl" as const, crls: parseCrls(new Uint8Array(data)) }),
  ]) {
    try {
      return attempt();
    } catch {
      // try the next kind
    }
  }
  try {
    return { type: "csr", csr: await parseCsr(new Uint8Array(data)) };
  } catch (err) {
    if (err instanceof MtlsError && err.code === "E_BAD_CSR" && !/malformed/.test(err.message)) throw err;
  }
  throw new MtlsError("E_BAD_INPUT", `${file}: not a certificate, CSR, CRL or PKCS#12 file`);
}

async function inspectP12(data: Buffer, opts: InspectOpts): Promise<Inspected> {
  const password = opts.passwordFile
    ? readSecretFile(opts.passwordFile, "password file")
    : await promptHidden("PKCS#12 password: ");
  const p12 = parsePkcs12(new Uint8Array(data), password);
  return {
    type: "pkcs12",
    keyType: p12.privateKey ? keyTypeOf(privateKeyFromPkcs8(p12.privateKey)) : null,
    certificates: p12.certificates.map(parseCertificate),
    ...(p12.friendlyName ? { friendlyName: p12.friendlyName } : {}),
    encryption: p12.encryption,
    macAlgorithm: p12.macAlgorithm,
  };
}

function renderCert(c: CertInfo, index: number): string {
  const lines = [
    `Certificate #${index + 1}${c.isCa ? " (CA)" : ""}`,
    `  Subject:      ${c.subject}`,
    `  Issuer:       ${c.issuer}${c.selfSigned ? " (self-signed)" : ""}`,
    `  Serial:       ${c.serial}`,
    `  Valid:        ${isoDay(c.notBefore)} to ${isoDay(c.notAfter)}`,
    `  Key:          ${c.keyType}`,
    `  SHA-256:      ${c.fingerprint}`,
  ];
  if (c.sans.length) lines.push(`  SANs:         ${c.sans.map(formatSan).join(", ")}`);
  if (c.isCa) lines.push(`  CA:           yes${c.pathLen !== undefined ? `, pathLen ${c.pathLen}` : ""}`);
  if (c.keyUsage.length) lines.push(`  Key usage:    ${c.keyUsage.join(", ")}`);
  if (c.extKeyUsage.length) lines.push(`  Ext key use:  ${c.extKeyUsage.join(", ")}`);
  if (c.crlUrls.length) lines.push(`  CRL:          ${c.crlUrls.join(", ")}`);
  if (c.ocspUrls.length) lines.push(`  OCSP:         ${c.ocspUrls.join(", ")}`);
  return lines.join("\n");
}

function render(r: Inspected): string {
  switch (r.type) {
    case "certificates":
      return r.certificates.map(renderCert).join("\n\n");
    case "csr":
      return [
        "Certificate signing request (signature verified)",
        `  Subject:      ${r.csr.subject}`,
        `  Key:          ${r.csr.keyType}`,
        `  SANs:         ${r.csr.sans.map(formatSan).join(", ") || "(none)"}`,
      ].join("\n");
    case "crl":
      return r.crls
        .map((crl) =>
          [
            `CRL #${crl.crlNumber ?? "?"} of ${crl.issuer}`,
            `  This update:  ${isoDay(crl.thisUpdate)}`,
            `  Next update:  ${crl.nextUpdate ? isoDay(crl.nextUpdate) : "(none)"}`,
            `  Revoked:      ${crl.entries.length}`,
            ...crl.entries.map((e) => `    ${e.serial}  ${isoDay(e.revokedAt)}  ${e.reason}`),
          ].join("\n"),
        )
        .join("\n\n");
    case "pkcs12":
      return [
        `PKCS#12${r.friendlyName ? ` "${r.friendlyName}"` : ""}: ${r.encryption}, MAC ${r.macAlgorithm}`,
        `  Private key:  ${r.keyType ?? "(none)"}`,
        "",
        r.certificates.map(renderCert).join("\n\n"),
      ].join("\n");
  }
}

function jsonReplacer(key: string, value: unknown): unknown {
  if (key === "der" || key === "spki" || key === "subjectDer") return undefined;
  if (key === "sans" && Array.isArray(value))
    return value.map((s) => (typeof s === "string" ? s : formatSan(s)));
  return value;
}
