/** Authorization: which verified identity may pass. Pure functions over a PeerIdentity. */
export { type AllowFlags, rulesFromFlags } from "./flags.js";
export { compilePolicy, describeIdentity, normalizeFingerprint, normalizeSpkiPin } from "./policy.js";
export { type IdentitySummary, summarizeIdentity } from "./summary.js";
export type { AuthorizationContext, Decision, PeerIdentity, Policy, RuleSpec } from "./types.js";
