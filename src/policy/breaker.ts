import type { FallbackCondition } from './policy-schema.js';

export type BreakerState = 'closed' | 'open' | 'half-open';

export interface BreakerConfig {
  window: number;
  minSamples: number;
  cooldownMs: number;
  probes: number;
}

export interface Health {
  /** Share of failed starts in the window (0 while it holds fewer than `minSamples`). */
  failureRate: number;
  /** Share of this runtime's capacity that is healthy (0–1). */
  available: number;
  samples: number;
}

export function compare(value: number, op: FallbackCondition['op'], threshold: number): boolean {
  switch (op) {
    case '>':
      return value > threshold;
    case '>=':
      return value >= threshold;
    case '<':
      return value < threshold;
    case '<=':
      return value <= threshold;
    case '==':
      return value === threshold;
    case '!=':
      return value !== threshold;
  }
}

/** The conditions (of this runtime) that hold for `health`, as readable text. */
export function conditionsHolding(conditions: FallbackCondition[], health: Health): string[] {
  return conditions
    .filter((c) =>
      compare(c.metric === 'failure_rate' ? health.failureRate : health.available, c.op, c.value),
    )
    .map(
      (c) =>
        `${c.text} (${c.metric} is ${(c.metric === 'failure_rate' ? health.failureRate : health.available).toFixed(3)})`,
    );
}

/**
 * The seed's automatic rollback (9.2) as a circuit breaker per runtime, over a sliding window
 * of recent job starts. `<runtime>_failure_rate` conditions trip it (closed → open); after a
 * cool-down it lets probe jobs through (half-open) and closes once `probes` of them started
 * well, or opens again at the first failure. `<runtime>_available` conditions are live: they
 * send jobs to the fallback for as long as they hold, without tripping anything.
 */
export class Breaker {
  private readonly outcomes: boolean[] = [];
  private failures = 0;
  private state: BreakerState = 'closed';
  private openedAt = 0;
  private probeSuccesses = 0;
  private tripReason = '';

  constructor(
    private readonly cfg: BreakerConfig,
    /** This runtime's failure-rate conditions (availability is judged live, elsewhere). */
    private readonly tripConditions: FallbackCondition[],
  ) {}

  /** One job start on this runtime: `ok` when its process started. */
  record(ok: boolean, at: number): void {
    const state = this.stateAt(at);
    if (state === 'half-open') {
      if (!ok) return this.open(at, 'a probe start failed');
      if (++this.probeSuccesses >= this.cfg.probes) this.close();
      return;
    }
    this.outcomes.push(ok);
    if (!ok) this.failures++;
    if (this.outcomes.length > this.cfg.window && !(this.outcomes.shift() as boolean)) this.failures--;
    if (state === 'closed') {
      const holding = conditionsHolding(this.tripConditions, this.health(1));
      if (holding.length) this.open(at, holding.join(', '));
    }
  }

  stateAt(now: number): BreakerState {
    if (this.state === 'open' && now - this.openedAt >= this.cfg.cooldownMs) {
      this.state = 'half-open';
      this.probeSuccesses = 0;
    }
    return this.state;
  }

  /** Why it is open (empty when closed). */
  reason(): string {
    return this.tripReason;
  }

  health(available: number): Health {
    const n = this.outcomes.length;
    return { failureRate: n >= this.cfg.minSamples ? this.failures / n : 0, available, samples: n };
  }

  private open(at: number, why: string): void {
    this.state = 'open';
    this.openedAt = at;
    this.tripReason = why;
  }

  private close(): void {
    this.state = 'closed';
    this.outcomes.length = 0;
    this.failures = 0;
    this.tripReason = '';
  }
}
