import { createHash, timingSafeEqual } from "node:crypto";
import type { CertificateAuthority } from "../../ca/index.js";
import { tokenStatus } from "../../ca/index.js";
import type { EnrollmentTokenRecord } from "../../store/index.js";

/** What an enrollment link is worth right now. */
export type LinkState =
  | { state: "unused" | "used" | "expired"; record: EnrollmentTokenRecord }
  | { state: "unknown" };

const TOKEN_RE = /^mtls_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;

/**
 * Looks a link's token up without using it, so the page can say "already used" or "expired"
 * before anyone presses a button. The secret is checked as ca/tokens.ts checks it (SHA-256,
 * constant time, one spelling per secret): a link with a guessed id and a wrong secret learns
 * nothing but "unknown".
 */
export async function inspectToken(ca: CertificateAuthority, token: string, now: Date): Promise<LinkState> {
  const m = TOKEN_RE.exec(token);
  if (!m) return { state: "unknown" };
  const [, id, secretText] = m as unknown as [string, string, string];
  const secret = Buffer.from(secretText, "base64url");
  if (secret.length !== 32 || secret.toString("base64url") !== secretText) return { state: "unknown" };
  const record = await ca.store.getToken(id);
  const presented = createHash("sha256").update(secret).digest();
  const stored = Buffer.from(record?.secretHash ?? "", "hex");
  if (!record || stored.length !== presented.length || !timingSafeEqual(stored, presented))
    return { state: "unknown" };
  return { state: tokenStatus(record, now), record };
}
