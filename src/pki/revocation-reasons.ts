import { MtlsError } from "../errors.js";

/** RFC 5280 §5.3.1 CRLReason codes (7 is unused; removeFromCRL only appears in delta CRLs). */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  privilegeWithdrawn: 9,
  aACompromise: 10,
} as const;
export type ReasonName = keyof typeof REVOCATION_REASONS;

export function parseReason(name: string): ReasonName {
  if (!Object.hasOwn(REVOCATION_REASONS, name)) {
    throw new MtlsError(
      "E_USAGE",
      `unknown revocation reason "${name}" (one of ${Object.keys(REVOCATION_REASONS).join(", ")})`,
    );
  }
  return name as ReasonName;
}
