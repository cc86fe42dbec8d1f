import { sleep } from './exec.js';

/**
 * Paces a transfer to `bytesPerSecond` (a token bucket holding at most one second's worth),
 * and holds it entirely while `paused()` says so: background work that yields to what is
 * urgent. `take(n)` resolves once `n` bytes may go; once the pace is `cancel`led it fails,
 * which ends the transfer.
 */
/** What `take` throws once its pace is cancelled: not a fault to retry. */
export class PaceCancelled extends Error {
  constructor() {
    super('the transfer was cancelled');
  }
}

export class Pace {
  private tokens: number;
  private at = Date.now();
  private cancelled = false;

  constructor(
    private readonly bytesPerSecond: number,
    private readonly paused: () => boolean = () => false,
  ) {
    this.tokens = bytesPerSecond;
  }

  cancel(): void {
    this.cancelled = true;
  }

  /**
   * `urgent`: this transfer no longer yields (something urgent now waits for it), also when
   * that happens while it is held: it goes on at once, unpaced.
   */
  async take(n: number, urgent: () => boolean = () => false): Promise<void> {
    while (this.paused() && !this.cancelled && !urgent()) await sleep(50);
    if (urgent()) return; // a job waits for it: not even a cancelled prefetch stops it
    if (this.cancelled) throw new PaceCancelled();
    this.refill();
    this.tokens -= n;
    // In debt: wait until the bucket is back at zero (a chunk larger than a second's worth
    // waits its whole share).
    if (this.tokens < 0) await sleep((-this.tokens / this.bytesPerSecond) * 1000);
  }

  private refill(): void {
    const now = Date.now();
    this.tokens = Math.min(this.bytesPerSecond, this.tokens + ((now - this.at) / 1000) * this.bytesPerSecond);
    this.at = now;
  }
}
