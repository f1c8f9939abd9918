/**
 * The identity a verified client certificate proves, as the policy sees it. Built by
 * tls/identity.ts from the peer's certificate; pure data so policy code stays free of TLS.
 */
export interface PeerIdentity {
  subject: string;
  commonName: string | undefined;
  organizationalUnits: string[];
  organization: string | undefined;
  dnsNames: string[];
  uris: string[];
  emails: string[];
  ips: string[];
  /** SHA-256 of the certificate DER, lowercase hex, no separators. */
  fingerprint: string;
  /** SHA-256 of the SubjectPublicKeyInfo DER, base64 (the HPKP / `openssl ... | base64` pin form). */
  spkiSha256: string;
  serial: string;
  issuer: string;
  notBefore: Date;
  notAfter: Date;
  /** The certificate itself (DER), for PROXY protocol TLVs and identity headers. */
  der: Uint8Array;
}

/**
 * One rule: every condition present must hold (AND); the values of one condition are alternatives
 * (OR). A policy is a list of rules, and allows when any rule does (OR). An empty policy denies.
 *   cn / ou / email / dns: exact (case-insensitive for dns and email); dns may be "*.acme.test" (one label)
 *   uri: exact, or a pattern where "*" matches one path segment and a trailing "**" any number
 *   fingerprint: SHA-256 of the certificate, hex with or without colons, any case
 *   spki: SHA-256 of the public key, base64 (or hex)
 *   all: any certificate the CA verified
 *   methods: HTTP methods (gateway only; a tunnel ignores rules that need a method? no: a rule with
 *            methods never matches where there is no method)
 */
export interface RuleSpec {
  name?: string;
  all?: boolean;
  cn?: string[];
  ou?: string[];
  dns?: string[];
  uri?: string[];
  email?: string[];
  fingerprint?: string[];
  spki?: string[];
  methods?: string[];
}

export interface AuthorizationContext {
  /** HTTP method, for gateway routes. */
  method?: string;
}

export interface Decision {
  allowed: boolean;
  /** The rule that allowed (its name, or a description such as "uri=spiffe://acme.test/user/*"). */
  rule?: string;
  /** Why, in words fit for a log line: "allowed by uri=…", "no rule matches CN=bob (uri: …)". */
  reason: string;
}

export interface Policy {
  readonly rules: readonly RuleSpec[];
  authorize(identity: PeerIdentity, ctx?: AuthorizationContext): Decision;
}
