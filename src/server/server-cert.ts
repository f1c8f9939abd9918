import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { type CertificateAuthority, issueToFiles } from "../ca/index.js";
import { MtlsError } from "../errors.js";
import { type CertInfo, parseCertificates } from "../pki/certinfo.js";
import { formatSan, makeSan, parseSan, type San } from "../pki/names.js";

/** The inventory name of the API's own certificate; its files are STATE/server/ca-server.{crt,key}. */
export const SERVER_CERT_NAME = "ca-server";

export interface ServerCertFiles {
  dir: string;
  cert: string;
  key: string;
}

export function serverCertFiles(stateDir: string): ServerCertFiles {
  const dir = join(stateDir, "server");
  return { dir, cert: join(dir, `${SERVER_CERT_NAME}.crt`), key: join(dir, `${SERVER_CERT_NAME}.key`) };
}

/** The PEM material the HTTPS listener serves, and the leaf it was read from. */
export interface ServerCert {
  /** Leaf then intermediate. */
  certPem: string;
  /** The software key; absent when the key lives in a PKCS#11 token (`spki` given). */
  keyPem?: string;
  leaf: CertInfo;
  /** Why it was (re)issued on this call, or undefined when the files on disk were kept. */
  issued?: string;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);
const ANY = new Set(["0.0.0.0", "::", ""]);

/** A name given on the command line: "dns:x" / "ip:x", or a bare host name or address. */
export function parseHostSan(text: string): San {
  if (/^(dns|ip):/.test(text)) return parseSan(text);
  if (/^(email|uri):/.test(text))
    throw new MtlsError("E_USAGE", `--san ${text}: a server certificate names hosts (dns: or ip:)`);
  const host = text.replace(/^\[(.*)\]$/, "$1");
  return makeSan(/^[0-9.]+$/.test(host) || host.includes(":") ? "ip" : "dns", host);
}

/**
 * The names the API's certificate must carry: the listen host (a loopback listener answers as
 * both 127.0.0.1 and localhost; a wildcard one as this machine's name and loopback), the host of
 * the CA's public URL, and every `--san`.
 */
export function wantedServerSans(listenHosts: string[], extra: string[], publicUrl?: string): San[] {
  const names: San[] = [];
  const add = (text: string) => {
    const san = parseHostSan(text);
    if (!names.some((n) => n.type === san.type && n.value === san.value)) names.push(san);
  };
  for (const host of listenHosts) {
    if (ANY.has(host)) {
      const own = hostname();
      if (/^[A-Za-z0-9.-]+$/.test(own) && own.includes(".")) add(own);
      for (const h of ["localhost", "127.0.0.1"]) add(h);
    } else if (LOOPBACK.has(host)) {
      for (const h of ["localhost", host === "localhost" ? "127.0.0.1" : host]) add(h);
    } else {
      add(host);
    }
  }
  if (publicUrl) {
    try {
      const host = new URL(publicUrl).hostname;
      if (host) add(host);
    } catch {
      // A malformed public URL is `mtls ca set`'s business, not a reason to refuse to serve.
    }
  }
  for (const s of extra) add(s);
  return names;
}

/**
 * Why the certificate on disk will not do, or undefined when it will. With `spki` (a key in a
 * PKCS#11 token) there is no key file: the certificate must be for that public key.
 */
export function reissueReason(
  ca: CertificateAuthority,
  files: ServerCertFiles,
  wanted: San[],
  now: Date,
  spki?: Uint8Array,
): { reason: string } | { reason?: undefined; certPem: string; keyPem?: string; leaf: CertInfo } {
  if (!existsSync(files.cert) || (!spki && !existsSync(files.key))) return { reason: "no certificate yet" };
  let certPem: string;
  let keyPem: string | undefined;
  let leaf: CertInfo | undefined;
  try {
    certPem = readFileSync(files.cert, "utf8");
    keyPem = spki ? undefined : readFileSync(files.key, "utf8");
    [leaf] = parseCertificates(certPem);
  } catch (err) {
    return { reason: `unreadable certificate files (${(err as Error).message})` };
  }
  if (!leaf) return { reason: "no certificate in the file" };
  const x509 = new X509Certificate(leaf.der);
  try {
    if (!x509.verify(createPublicKey(ca.intermediatePem)))
      return { reason: "issued by another intermediate" };
    if (spki) {
      if (!Buffer.from(leaf.spki).equals(Buffer.from(spki)))
        return { reason: "the certificate is for another key than the token's" };
    } else if (!x509.checkPrivateKey(createPrivateKey(keyPem as string)))
      return { reason: "the key file does not match the certificate" };
  } catch (err) {
    return { reason: `unusable certificate or key (${(err as Error).message})` };
  }
  const life = leaf.notAfter.getTime() - leaf.notBefore.getTime();
  if (now.getTime() >= leaf.notBefore.getTime() + (life * 2) / 3)
    return { reason: "two thirds of its life gone" };
  const have = new Set(leaf.sans.map(formatSan));
  const want = new Set(wanted.map(formatSan));
  if (have.size !== want.size || [...want].some((n) => !have.has(n)))
    return { reason: `names changed (${[...have].join(", ")} → ${[...want].join(", ")})` };
  return { certPem, ...(keyPem ? { keyPem } : {}), leaf };
}

/**
 * The API's own certificate: the one in STATE/server/ while it is issued by the current
 * intermediate, carries exactly the wanted names, matches its key, is not revoked and has more
 * than a third of its life left; otherwise a new one (server profile, default lifetime), written
 * crash-safely through issueToFiles (pending row, files, confirm). With `spki` (the public key of a
 * key in a PKCS#11 token, `mtls ca serve --tls-key`) the certificate is issued for that key and no
 * key file is written; renewal keeps the key.
 */
export async function ensureServerCert(
  ca: CertificateAuthority,
  opts: { stateDir: string; sans: San[]; actor: string; force?: boolean; spki?: Uint8Array },
): Promise<ServerCert> {
  const files = serverCertFiles(opts.stateDir);
  const now = ca.clock();
  let check = reissueReason(ca, files, opts.sans, now, opts.spki);
  if (check.reason === undefined) {
    const rec = await ca.store.getCertificate(check.leaf.serial);
    if (rec?.status === "revoked") check = { reason: "revoked" };
    else if (opts.force) check = { reason: "asked to" };
    else
      return { certPem: check.certPem, ...(check.keyPem ? { keyPem: check.keyPem } : {}), leaf: check.leaf };
  }
  mkdirSync(files.dir, { recursive: true, mode: 0o700 });
  const { files: written } = await issueToFiles(
    ca,
    {
      profile: "server",
      name: SERVER_CERT_NAME,
      sans: opts.sans,
      actor: opts.actor,
      ...(opts.spki ? { spki: opts.spki } : {}),
    },
    { outDir: files.dir, force: true },
  );
  const certPem = readFileSync(written.cert, "utf8");
  // Moving to a token key: the software key of the superseded certificate must not stay on disk.
  if (opts.spki) rmSync(files.key, { force: true });
  const keyPem = opts.spki ? undefined : readFileSync(written.key ?? files.key, "utf8");
  const [leaf] = parseCertificates(certPem);
  if (!leaf) throw new MtlsError("E_IO", `${written.cert} holds no certificate`);
  return { certPem, ...(keyPem ? { keyPem } : {}), leaf, issued: check.reason };
}
