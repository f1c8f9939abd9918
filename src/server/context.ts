import type { CertificateAuthority, Issued, RevocationNotice, RevocationSnapshot } from "../ca/index.js";
import type { LeafProfile } from "../ca/profiles.js";
import type { Logger } from "../observe/index.js";
import type { San } from "../pki/names.js";
import type { CertificateRecord } from "../store/index.js";
import type { ServerMetrics } from "./metrics.js";
import type { RateLimiter } from "./rate-limit.js";

/** A signed OCSP answer, as the responder (ca/ocsp-responder.ts) gives it. */
export interface OcspAnswerOut {
  der: Uint8Array;
  status: string;
  thisUpdate?: Date;
  nextUpdate?: Date;
  /** Whether the request carried a nonce that the response echoes (then it must not be cached). */
  nonce: boolean | Uint8Array | undefined | null;
}

/** The current CRLs (DER) as the publisher (ca/crl-publisher.ts) keeps them. */
export interface CurrentCrls {
  intermediate: Uint8Array;
  root: Uint8Array;
  thisUpdate?: Date;
  nextUpdate: Date;
}

/**
 * What the API calls in the CA, as functions, so that the HTTP layer is tested apart from them and
 * serve.ts wires the real modules (ca/tokens.ts, ca/renew.ts, ca/admin.ts, the OCSP responder and
 * the CRL publisher).
 */
export interface CaServices {
  createToken(
    grant: { name: string; profile: LeafProfile; sans: San[]; ttlMs?: number; organizationalUnit?: string[] },
    opts: { validForMs?: number; actor: string },
  ): Promise<{ token: string; id: string; expiresAt: Date }>;
  enroll(req: {
    token: string;
    csr: string;
    name?: string;
    profile?: LeafProfile;
    ttlMs?: number;
  }): Promise<Issued>;
  /** Renews the certificate `serial` (rekeyed to the CSR's key when one is given). */
  renew(req: { serial: string; csr?: string; actor: string }): Promise<Issued>;
  isAdmin(record: CertificateRecord): Promise<boolean>;
  ocsp(requestDer: Uint8Array): Promise<OcspAnswerOut>;
  crls(): Promise<CurrentCrls>;
}

/** The revocation feed (ca/revocation-feed.ts) as GET /v1/revocations/stream uses it. */
export interface RevocationSource {
  on(event: "revocation", listener: (notice: RevocationNotice) => void): unknown;
  off(event: "revocation", listener: (notice: RevocationNotice) => void): unknown;
  snapshot(): Promise<RevocationSnapshot>;
  catchUp(afterSeq: number): AsyncIterable<RevocationNotice>;
  currentSeq(): Promise<number>;
}

export interface RevocationStreamOptions {
  source: RevocationSource;
  /** A comment line this often on every stream (default 5 s). */
  heartbeatMs?: number;
  /** Most streams open at once; more are refused with 503 (default 1000). */
  maxStreams?: number;
  /** A live stream whose unsent bytes pass this is cut (default 1 MiB): its client is not reading. */
  maxBufferedBytes?: number;
}

/** Everything a request handler needs. */
export interface ServerContext {
  ca: CertificateAuthority;
  services: CaServices;
  logger: Logger;
  limiter: RateLimiter;
  metrics?: ServerMetrics | undefined;
  clock: () => Date;
  /** GET /v1/revocations/stream, on the API listener, when set. */
  revocations?: RevocationStreamOptions | undefined;
}
