import { createHash } from "node:crypto";
import { MtlsError } from "../errors.js";
import type { AuditEvent, AuditEventInput, AuditVerification } from "./types.js";

/**
 * The audit log's hash chain, as pure functions. Each event's hash is SHA-256 over the previous
 * event's hash and the event's canonical JSON, so changing, removing, inserting or reordering a
 * stored event breaks every link after it. The chain alone cannot reveal the newest events being
 * cut off together; anchoring the latest hash elsewhere (a log line, a signed CRL) covers that.
 */

/** The `prevHash` of the first event. */
export const GENESIS_HASH = "0".repeat(64);

/** What an event's hash covers: everything except the hashes themselves. */
export type HashedAuditEvent = AuditEventInput & { seq: number };

/**
 * JSON with object keys sorted at every depth. Values are first normalised the way
 * `JSON.stringify` sees them (Dates become ISO strings, `undefined` members disappear), so a value
 * and the value read back from its stored JSON give the same text.
 */
export function canonicalJson(value: unknown): string {
  let plain: unknown;
  try {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError(`${typeof value} is not representable as JSON`);
    plain = JSON.parse(text);
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", `audit event is not plain JSON data: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return JSON.stringify(sortKeys(plain));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== "object") return value;
  const sorted: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort())
    sorted[key] = sortKeys((value as Record<string, unknown>)[key]);
  return sorted;
}

/** The canonical JSON of an event's hashed content: seq, at (ISO), actor, action, subject, details. */
export function canonicalEventJson(event: HashedAuditEvent): string {
  const { seq, at, actor, action, subject, details } = event;
  return canonicalJson({ seq, at, actor, action, subject, details });
}

/** Hex SHA-256 of `prevHash + "\n" + canonicalEventJson(event)`. */
export function computeAuditHash(prevHash: string, event: HashedAuditEvent): string {
  return createHash("sha256")
    .update(`${prevHash}\n${canonicalEventJson(event)}`)
    .digest("hex");
}

/**
 * Walks events in seq order, one at a time, so a whole table never has to be in memory. `count` in
 * the result is the number of events that verified (all of them when `ok`).
 */
class ChainWalker {
  private prevHash = GENESIS_HASH;
  private count = 0;

  /** Checks the next event; returns the failure, or undefined if it links and hashes correctly. */
  step(event: AuditEvent): AuditVerification | undefined {
    const broken = (reason: string): AuditVerification => ({
      ok: false,
      count: this.count,
      brokenAt: event.seq,
      reason,
    });
    const expectedSeq = this.count + 1;
    if (event.seq !== expectedSeq) {
      return broken(`expected event ${expectedSeq} but found ${event.seq}: events are missing or reordered`);
    }
    if (event.prevHash !== this.prevHash) return broken("does not link to the previous event's hash");
    if (computeAuditHash(event.prevHash, event) !== event.hash)
      return broken("content does not match its hash");
    this.prevHash = event.hash;
    this.count += 1;
    return undefined;
  }

  done(): AuditVerification {
    return { ok: true, count: this.count };
  }
}

/** Verifies a whole chain given in seq order, starting from the genesis hash. */
export function verifyChain(events: Iterable<AuditEvent>): AuditVerification {
  const walker = new ChainWalker();
  for (const event of events) {
    const failure = walker.step(event);
    if (failure) return failure;
  }
  return walker.done();
}

/** The same as verifyChain over events that arrive page by page (e.g. streamed from a database). */
export async function verifyChainAsync(events: AsyncIterable<AuditEvent>): Promise<AuditVerification> {
  const walker = new ChainWalker();
  for await (const event of events) {
    const failure = walker.step(event);
    if (failure) return failure;
  }
  return walker.done();
}
