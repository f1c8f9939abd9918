import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { MtlsError } from "../../errors.js";

/** The policy of every page: our own CSS and JS only, no inline code, no framing, forms post to us. */
export const CSP =
  "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; form-action 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'";

/** Headers of every HTML page (and of the downloads): never cached, never framed, never sniffed. */
export function pageHeaders(reply: FastifyReply): FastifyReply {
  return reply
    .header("content-security-policy", CSP)
    .header("x-content-type-options", "nosniff")
    .header("referrer-policy", "no-referrer")
    .header("x-frame-options", "DENY")
    .header("cross-origin-opener-policy", "same-origin")
    .header("cache-control", "no-store");
}

/**
 * CSRF tokens without server state: HMAC-SHA256 under a key made at start, over what the form is
 * bound to (the admin's certificate fingerprint, or an enrollment token's id). A token lifted from
 * one admin's page is useless to another certificate, and all tokens die with the process.
 */
export class CsrfTokens {
  private readonly key: Buffer;
  constructor(key: Buffer = randomBytes(32)) {
    this.key = key;
  }

  token(binding: string): string {
    return createHmac("sha256", this.key).update(`mtls-ui-csrf\0${binding}`).digest("base64url");
  }

  /** Whether `presented` is the token for `binding`, compared in constant time. */
  verify(binding: string, presented: unknown): boolean {
    if (typeof presented !== "string" || presented.length > 100) return false;
    const want = Buffer.from(this.token(binding));
    const got = Buffer.from(presented);
    return want.length === got.length && timingSafeEqual(want, got);
  }
}

/**
 * The browser's word on where a state-changing request comes from. `Sec-Fetch-Site` (every current
 * browser sends it) must say same-origin; then the Origin is not looked at, because under
 * `Referrer-Policy: no-referrer` browsers send `Origin: null` even for a form of our own. Without
 * that header, an Origin must be this very host. Requests from programs carry neither and are
 * judged by the CSRF token alone. `alsoAllowed`: the CA's public URL origin, when a proxy in front
 * makes the browser's origin differ from the Host this service sees.
 */
export function checkSameOrigin(req: FastifyRequest, alsoAllowed: readonly string[] = []): void {
  const refuse = () =>
    new MtlsError("E_NOT_AUTHORIZED", "this form may only be sent from a page of this site");
  const site = req.headers["sec-fetch-site"];
  if (site !== undefined) {
    if (site !== "same-origin") throw refuse();
    return;
  }
  const origin = req.headers.origin;
  if (origin === undefined) return;
  const host = req.headers.host;
  if (!(host && origin === `https://${host}`) && !alsoAllowed.includes(origin)) throw refuse();
}

/** Both checks; the one error a refused form gets. */
export function checkForm(
  req: FastifyRequest,
  csrf: CsrfTokens,
  binding: string,
  presented: unknown,
  alsoAllowed: readonly string[] = [],
): void {
  checkSameOrigin(req, alsoAllowed);
  if (!csrf.verify(binding, presented))
    throw new MtlsError(
      "E_NOT_AUTHORIZED",
      "the form's security token is missing or wrong: reload the page and try again",
    );
}
