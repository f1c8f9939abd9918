import type { AuditVerification, Store } from "../../store/index.js";

export interface VerifiedAt {
  result: AuditVerification;
  /** When this verification finished. */
  at: Date;
}

export interface AuditVerdict {
  /** The newest finished verification, if any finished yet (or its failure). */
  last?: VerifiedAt | { error: string; at: Date };
  /** A verification is still running (the page did not wait for it). */
  running: boolean;
}

/**
 * The audit page's hash-chain check. Verifying reads and hashes the whole log (about 9 s for
 * 100,000 events here), so a page does not wait for it without limit: each page load starts a
 * verification unless one is running (at most one at a time, however often people reload), waits
 * for it up to `budgetMs`, and otherwise shows the last finished result with its time. A small log
 * is thus always verified fresh; a large one never blocks the page.
 */
export class AuditVerifier {
  private running: Promise<void> | undefined;
  private last: AuditVerdict["last"];

  constructor(
    private readonly store: Pick<Store, "verifyAudit">,
    private readonly clock: () => Date,
    private readonly budgetMs = 2_000,
  ) {}

  async verdict(): Promise<AuditVerdict> {
    this.running ??= this.store.verifyAudit().then(
      (result) => {
        this.last = { result, at: this.clock() };
        this.running = undefined;
      },
      (err: unknown) => {
        this.last = { error: (err as Error)?.message ?? String(err), at: this.clock() };
        this.running = undefined;
      },
    );
    const run = this.running;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.budgetMs);
    });
    await Promise.race([run, timeout]);
    clearTimeout(timer);
    return { ...(this.last ? { last: this.last } : {}), running: this.running !== undefined };
  }
}
