/**
 * When to renew and when to try again: pure functions of the certificate's validity, the time and a
 * random number, so the agent's timing is testable without sleeping.
 */

/** Renewal is due once this share of the lifetime has passed. */
export const RENEW_AT_FRACTION = 2 / 3;
/** Jitter of the renewal time: ± this share of the lifetime... */
export const JITTER_FRACTION = 0.05;
/** ...but never more than this either way, so long-lived certificates still renew near 2/3. */
export const MAX_JITTER_MS = 60 * 60_000;
/** Retries after a failure: the first waits about this long, each next one twice as long... */
export const BACKOFF_BASE_MS = 1_000;
/** ...up to this. */
export const BACKOFF_CAP_MS = 5 * 60_000;
/** Shortest wait between attempts, whatever else says. */
export const MIN_RETRY_MS = 1_000;

export interface Validity {
  notBefore: Date;
  notAfter: Date;
  /**
   * When the certificate was issued, when known and later than notBefore (see issuedAtFromMtime):
   * CAs back-date notBefore against clock skew (mtls and step-ca by a minute), which would make a
   * certificate of a few minutes' lifetime look two-thirds used the moment it arrives.
   */
  issuedAt?: Date;
}

/** How far after notBefore a certificate file may have been written and still count as its issuance. */
export const BACKDATE_WINDOW_MS = 5 * 60_000;

/**
 * The issuance moment of a certificate from the time its file was written: the writer (mtls enroll,
 * renew, agent, issue) writes it right after issuance, so a file written within a few minutes after
 * notBefore (and before notAfter) dates the issuance. Anything else (a file copied or touched
 * later) says nothing, and notBefore counts.
 */
export function issuedAtFromMtime(notBefore: Date, notAfter: Date, mtime: Date): Date | undefined {
  const t = mtime.getTime();
  const nb = notBefore.getTime();
  if (t <= nb || t >= notAfter.getTime() || t > nb + BACKDATE_WINDOW_MS) return undefined;
  return mtime;
}

/** Where the lifetime counts from: the issuance when known, else notBefore. */
function startOf(v: Validity): number {
  const nb = v.notBefore.getTime();
  const issued = v.issuedAt?.getTime();
  return issued !== undefined && issued > nb && issued < v.notAfter.getTime() ? issued : nb;
}

const lifetimeOf = (v: Validity): number => Math.max(v.notAfter.getTime() - startOf(v), 0);

/** The moment renewal becomes due, without jitter: start + 2/3 of the lifetime. */
export function dueAt(v: Validity): number {
  return startOf(v) + Math.floor(lifetimeOf(v) * RENEW_AT_FRACTION);
}

/** Whether renewal is due at `now` (`mtls renew --if-due`; no jitter, so cron behaves predictably). */
export function isDue(v: Validity, now: Date): boolean {
  return now.getTime() >= dueAt(v);
}

export function isExpired(v: Validity, now: Date): boolean {
  return now.getTime() >= v.notAfter.getTime();
}

/**
 * How close to expiry the agent still counts on a renewal to succeed in time: 5% of the lifetime,
 * at least 1 s, at most 5 min. Retries never sleep past notAfter − margin.
 */
export function expiryMargin(v: Validity): number {
  return Math.min(Math.max(lifetimeOf(v) * 0.05, 1_000), 5 * 60_000);
}

/** The jitter amplitude for this certificate: 5% of its lifetime, at most an hour. */
export function jitterAmplitude(v: Validity): number {
  return Math.min(lifetimeOf(v) * JITTER_FRACTION, MAX_JITTER_MS);
}

/**
 * When the agent renews this certificate: 2/3 of the lifetime ± the jitter (`random` in [0, 1)
 * picks the point), so a fleet enrolled at the same moment does not renew at the same moment.
 * Bounded: never before `now`, never after notAfter − margin.
 */
export function renewalTime(v: Validity, now: Date, random: () => number = Math.random): number {
  const jitter = (random() * 2 - 1) * jitterAmplitude(v);
  const at = dueAt(v) + Math.round(jitter);
  const latest = v.notAfter.getTime() - expiryMargin(v);
  return Math.max(now.getTime(), Math.min(at, latest));
}

/**
 * Exponential backoff with "equal jitter": attempt 1 waits base·[0.5, 1), attempt n base·2^(n-1)
 * ·[0.5, 1), capped at `capMs` (the random half keeps retries of many agents apart, the fixed half
 * keeps them from retrying at once).
 */
export function backoffDelay(
  attempt: number,
  random: () => number = Math.random,
  opts: { baseMs?: number; capMs?: number } = {},
): number {
  const base = opts.baseMs ?? BACKOFF_BASE_MS;
  const cap = opts.capMs ?? BACKOFF_CAP_MS;
  const exp = Math.min(base * 2 ** Math.max(attempt - 1, 0), cap);
  return Math.round(exp / 2 + (random() * exp) / 2);
}

/**
 * How long to wait before attempt `attempt + 1` after `attempt` failures, or undefined when the
 * certificate has expired (it can no longer authenticate a renewal: someone must enroll again).
 * The backoff (at least `retryAfterMs`, when the CA asked for it) is cut so the agent never sleeps
 * past notAfter − margin; past that point it keeps trying at half the remaining time.
 */
export function retryDelay(
  v: Validity,
  now: Date,
  attempt: number,
  opts: { random?: () => number; capMs?: number; retryAfterMs?: number } = {},
): number | undefined {
  const t = now.getTime();
  const end = v.notAfter.getTime();
  if (t >= end) return undefined;
  const wait = Math.max(
    backoffDelay(attempt, opts.random, { capMs: opts.capMs ?? BACKOFF_CAP_MS }),
    opts.retryAfterMs ?? 0,
  );
  const deadline = end - expiryMargin(v);
  if (t < deadline) return Math.round(Math.min(wait, deadline - t));
  return Math.round(Math.max(Math.min(wait, (end - t) / 2), Math.min(MIN_RETRY_MS, end - t)));
}
