/**
 * Enrollment and renewal of a key store key against the mtls CA (docs/api.md):
 *   enroll: a new non-extractable key, a CSR signed in the store, POST /v1/enroll {token, csr, name?}
 *           (no client certificate needed: the one-time token is the credential), the issued chain
 *           stored beside the key.
 *   renew:  rekey, as the agent and step-ca do: a NEW key, its CSR sent with POST /v1/renew {csr}
 *           over mTLS authenticated by the current certificate (the caller's fetch), the new chain
 *           stored, the old key deleted once that succeeded. The CA keeps name, SANs, profile and
 *           lifetime of the current certificate; the old one stays valid until it expires.
 * `fetch` is injected: the browser's fetch for enroll, and for renew a fetch that authenticates with
 * the current key (createHttpClient over the TS TLS client with keyStore.identity(keyId)).
 */
import { isMtlsError, MtlsError } from "../errors.js";
import { pemDecodeAll } from "../pki/pem.js";
import { buildCsr, type CsrSans } from "./csr.js";
import type { KeyStoreClient } from "./keystore/client.js";
import type { KeyInfo } from "./keystore/protocol.js";

/** What enroll and renew need of a fetch: the browser's, undici's and HttpClient.fetch all fit. */
export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body: string; signal?: AbortSignal },
) => Promise<{ status: number; text(): Promise<string> }>;

/** The key store operations enrollment uses (KeyStoreClient has them). */
export type EnrollKeyStore = Pick<KeyStoreClient, "generate" | "get" | "sign" | "setCertificate" | "delete">;

/** docs/api.md "Issued": what /v1/enroll and /v1/renew answer with (201). */
export interface IssuedResponse {
  serial: string;
  name: string;
  profile: string;
  notBefore: string;
  notAfter: string;
  /** PEM of the leaf. */
  certificate: string;
  /** PEM of the leaf followed by the intermediate. */
  chain: string;
  /** PEM of the root. */
  ca: string;
}

/** A non-2xx answer of the CA: code E_HTTP, the CA's own code and message kept. */
export class CaHttpError extends MtlsError {
  constructor(
    readonly status: number,
    /** The CA's error code (E_TOKEN_USED, E_NOT_AUTHENTICATED, ...), when it sent one. */
    readonly serverCode: string | undefined,
    serverMessage: string,
  ) {
    super("E_HTTP", `the CA answered ${status}${serverCode ? ` ${serverCode}` : ""}: ${serverMessage}`);
  }
}

export interface EnrollOptions {
  fetch: FetchLike;
  /** Base URL of the CA's HTTPS API, e.g. https://ca.example:8443 (a path prefix is kept). */
  caUrl: string;
  /** The one-time enrollment token (mtls_<id>.<secret>). */
  token: string;
  keyStore: EnrollKeyStore;
  /** Label of the new key in the store (default: name, else "mtls"). */
  label?: string;
  /** The certificate name; when given it must be the token's (the CA refuses otherwise). */
  name?: string;
  /** SANs to ask for (a subset of what the token grants); none asked: all the token grants. */
  sans?: CsrSans;
  /** A shorter lifetime than the token grants, as the API reads it ("12h", "30d"). */
  ttl?: string;
  signal?: AbortSignal;
}

export interface RenewOptions {
  /** A fetch that authenticates with the current certificate of `keyId` (mTLS). */
  fetch: FetchLike;
  caUrl: string;
  keyStore: EnrollKeyStore;
  /** The key whose certificate is renewed; deleted once the new key holds its certificate. */
  keyId: string;
  /** Label of the new key (default: the old key's). */
  label?: string;
  signal?: AbortSignal;
}

function endpoint(caUrl: string, path: string): string {
  let url: URL;
  try {
    url = new URL(caUrl);
  } catch {
    throw new MtlsError("E_BAD_INPUT", `caUrl "${String(caUrl).slice(0, 100)}" is not a URL`);
  }
  if (url.protocol !== "https:")
    throw new MtlsError("E_BAD_INPUT", `caUrl must be an https: URL, not ${url.protocol}`);
  if (url.search || url.hash || url.username || url.password) {
    throw new MtlsError("E_BAD_INPUT", "caUrl must not carry a query, a fragment or credentials");
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}${path}`;
}

/** POSTs JSON and returns the Issued answer; E_HTTP for a non-2xx answer, E_UNAVAILABLE when unreachable. */
async function postIssued(
  fetch: FetchLike,
  url: string,
  body: Record<string, unknown>,
  signal: AbortSignal | undefined,
): Promise<IssuedResponse> {
  let res: Awaited<ReturnType<FetchLike>>;
  let text: string;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body),
      ...(signal ? { signal } : {}),
    });
    text = await res.text();
  } catch (err) {
    if (isMtlsError(err)) throw err; // the TS TLS client's E_TLS / E_TLS_CERT say more than we could
    const why = err instanceof Error ? err.message : String(err);
    throw new MtlsError("E_UNAVAILABLE", `the CA at ${url} could not be reached: ${why}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (res.status < 200 || res.status > 299) {
    const error = (json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    const code = typeof error?.code === "string" ? error.code.slice(0, 64) : undefined;
    const message =
      typeof error?.message === "string"
        ? error.message.slice(0, 300)
        : text.replace(/\s+/g, " ").slice(0, 200);
    throw new CaHttpError(res.status, code, message || "(no message)");
  }
  const issued = json as Partial<IssuedResponse> | undefined;
  if (
    !issued ||
    typeof issued !== "object" ||
    typeof issued.certificate !== "string" ||
    typeof issued.chain !== "string" ||
    typeof issued.serial !== "string"
  ) {
    throw new MtlsError("E_HTTP", `the CA answered ${res.status} without a certificate and chain`);
  }
  return issued as IssuedResponse;
}

/** The issued chain as DER, leaf first; the leaf must be the answer's certificate. */
function chainOf(issued: IssuedResponse): Uint8Array[] {
  const decode = (pem: string) => {
    try {
      return pemDecodeAll(pem)
        .filter((b) => b.label === "CERTIFICATE")
        .map((b) => b.der);
    } catch (err) {
      throw new MtlsError("E_HTTP", "the CA answered with malformed PEM", { cause: err });
    }
  };
  const chain = decode(issued.chain);
  const [leaf] = decode(issued.certificate);
  if (!leaf || !chain[0] || leaf.length !== chain[0].length || !leaf.every((b, i) => b === chain[0]?.[i])) {
    throw new MtlsError("E_HTTP", "the CA's chain does not begin with the issued certificate");
  }
  return chain;
}

/** Deletes a key we created, when what it was created for failed (best effort: the first error wins). */
async function discard(keyStore: EnrollKeyStore, keyId: string): Promise<void> {
  await keyStore.delete(keyId).catch(() => undefined);
}

/** Creates a key in the store and has the CA certify it with a one-time token. Returns the enrolled key. */
export async function enroll(options: EnrollOptions): Promise<KeyInfo> {
  const url = endpoint(options.caUrl, "/v1/enroll");
  if (typeof options.token !== "string" || options.token.length === 0 || options.token.length > 1024) {
    throw new MtlsError("E_BAD_INPUT", "an enrollment token is required");
  }
  const { keyStore } = options;
  const key = await keyStore.generate(options.label ?? options.name ?? "mtls");
  try {
    const csr = await buildCsr({
      ...(options.name !== undefined ? { commonName: options.name } : {}),
      ...(options.sans ? { sans: options.sans } : {}),
      spki: key.spki,
      sign: (data) => keyStore.sign(key.keyId, data),
    });
    const issued = await postIssued(
      options.fetch,
      url,
      {
        token: options.token,
        csr: csr.pem,
        ...(options.name !== undefined ? { name: options.name } : {}),
        ...(options.ttl !== undefined ? { ttl: options.ttl } : {}),
      },
      options.signal,
    );
    return await keyStore.setCertificate(key.keyId, chainOf(issued));
  } catch (err) {
    await discard(keyStore, key.keyId);
    throw err;
  }
}

/**
 * Renews `keyId`'s certificate with a new key (rekey) over the caller's mTLS fetch. Returns the new
 * key; the old key is deleted after the new chain is stored (a failure to delete it is not an error:
 * its certificate still expires). On failure the new key is deleted and the old one kept.
 * Afterwards, new connections must present the new key: close the mTLS client used here (or give it
 * `identity` as a function that reads the current key) and use keyStore.identity(newKey.keyId).
 * A revoked or expired certificate cannot be renewed (E_HTTP, serverCode E_REVOKED / E_EXPIRED):
 * enroll again with a new token.
 */
export async function renew(options: RenewOptions): Promise<KeyInfo> {
  const url = endpoint(options.caUrl, "/v1/renew");
  const { keyStore } = options;
  const old = await keyStore.get(options.keyId);
  if (!old.chain?.length) {
    throw new MtlsError("E_KEYSTORE", `key ${old.keyId} has no certificate to renew (enroll it first)`);
  }
  const key = await keyStore.generate(options.label ?? old.label);
  let renewed: KeyInfo;
  try {
    // The CA copies name, CN and SANs from the current certificate; the CSR only brings the key.
    const csr = await buildCsr({ spki: key.spki, sign: (data) => keyStore.sign(key.keyId, data) });
    const issued = await postIssued(options.fetch, url, { csr: csr.pem }, options.signal);
    renewed = await keyStore.setCertificate(key.keyId, chainOf(issued));
  } catch (err) {
    await discard(keyStore, key.keyId);
    throw err;
  }
  await discard(keyStore, old.keyId);
  return renewed;
}

/**
 * When a certificate should be renewed: once `fraction` of its lifetime (default 2/3) has passed.
 * Undefined for a key without a certificate.
 */
export function renewalTime(info: KeyInfo, fraction = 2 / 3): Date | undefined {
  if (!(fraction > 0 && fraction <= 1)) throw new MtlsError("E_BAD_INPUT", "fraction must be in (0, 1]");
  if (!info.chain?.length || !info.notBefore || !info.notAfter) return undefined;
  const from = info.notBefore.getTime();
  return new Date(from + (info.notAfter.getTime() - from) * fraction);
}

/** True when `info`'s certificate is past `fraction` of its lifetime (or expired); false without one. */
export function needsRenewal(info: KeyInfo, now: Date = new Date(), fraction = 2 / 3): boolean {
  const at = renewalTime(info, fraction);
  return at !== undefined && now.getTime() >= at.getTime();
}
