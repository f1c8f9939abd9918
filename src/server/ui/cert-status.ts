import type { CertificateRecord } from "../../store/index.js";
import type { Tone } from "./layout.js";

const DAY = 86_400_000;

/** What a person needs to know about a certificate's state at `now`, as a label and a tone. */
export function certStatus(
  rec: Pick<CertificateRecord, "status" | "notBefore" | "notAfter">,
  now: Date,
): { label: string; tone: Tone } {
  if (rec.status === "revoked") return { label: "revoked", tone: "bad" };
  if (rec.status === "pending") return { label: "pending", tone: "info" };
  if (rec.status === "aborted") return { label: "aborted", tone: "info" };
  const left = rec.notAfter.getTime() - now.getTime();
  if (left <= 0) return { label: "expired", tone: "bad" };
  if (now < rec.notBefore) return { label: "not yet valid", tone: "warn" };
  if (left <= 7 * DAY) return { label: `expires in ${Math.max(1, Math.ceil(left / DAY))}d`, tone: "warn" };
  if (left <= 30 * DAY) return { label: `expires in ${Math.ceil(left / DAY)}d`, tone: "warn" };
  return { label: "valid", tone: "ok" };
}
