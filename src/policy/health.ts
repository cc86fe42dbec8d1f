import { RUNTIME_NAMES, type RuntimeName } from '../jobs/spec.js';
import type { Fingerprint } from '../runtimes/runtime.js';
import type { Store } from '../store/store.js';
import { Breaker, conditionsHolding, type BreakerConfig } from './breaker.js';
import type { RoutingPolicy } from './policy-schema.js';
import type { RuntimeView, RuntimeViews } from './route.js';

export interface HealthOverride {
  runtime: RuntimeName;
  metric: 'failure_rate' | 'available';
  value: number;
}

/**
 * What the router knows about each runtime: its fingerprint on this node and a breaker fed by
 * real job starts. Built from the store's recent history, so a fresh `boxcar` process decides
 * as a long-running one would; a server feeds it live with `record`.
 */
export class RuntimeHealthBook {
  private readonly breakers = new Map<RuntimeName, Breaker>();

  constructor(
    private readonly policy: RoutingPolicy,
    private readonly fingerprint: (r: RuntimeName) => Promise<Fingerprint>,
  ) {
    const b = policy.breaker;
    const cfg: BreakerConfig = {
      window: b.window,
      minSamples: b.min_samples,
      cooldownMs: b.cooldown,
      probes: b.probes,
    };
    for (const r of RUNTIME_NAMES) {
      const trips = policy.untrusted_code.fallback_conditions.filter(
        (c) => c.runtime === r && c.metric === 'failure_rate',
      );
      this.breakers.set(r, new Breaker(cfg, trips));
    }
  }

  /** Replays the recorded starts of every runtime, oldest first. */
  async loadHistory(store: Pick<Store, 'recentStarts'>): Promise<this> {
    for (const r of RUNTIME_NAMES) {
      const starts = await store.recentStarts(r, this.policy.breaker.window + this.policy.breaker.probes);
      for (const s of starts) this.record(r, s.ok, s.at);
    }
    return this;
  }

  record(runtime: RuntimeName, ok: boolean, at: number): void {
    this.breakers.get(runtime)?.record(ok, at);
  }

  /**
   * Views of every runtime at `now`; `overrides` replace measured health (`policy explain
   * --health`). With `only`, just those runtimes are fingerprinted, and the others are viewed as
   * usable: for a caller that routes again with what the router asked for (see `decide`).
   */
  async views(
    now: number,
    overrides: HealthOverride[] = [],
    only?: ReadonlySet<RuntimeName>,
  ): Promise<RuntimeViews> {
    const out = new Map<RuntimeName, RuntimeView>();
    const fingerprints = await Promise.all(
      RUNTIME_NAMES.map((r) =>
        !only || only.has(r)
          ? this.fingerprint(r)
          : { runtime: r, usable: true, reason: 'not fingerprinted: the decision did not ask', details: {} },
      ),
    );
    for (const [i, r] of RUNTIME_NAMES.entries()) {
      const fp = fingerprints[i] as Fingerprint;
      const breaker = this.breakers.get(r) as Breaker;
      const health = breaker.health(fp.usable ? 1 : 0);
      let state = breaker.stateAt(now);
      let breakerReason = breaker.reason();
      const mine = overrides.filter((o) => o.runtime === r);
      if (mine.length) {
        for (const o of mine) {
          if (o.metric === 'failure_rate') health.failureRate = o.value;
          else health.available = o.value;
        }
        const trips = this.policy.untrusted_code.fallback_conditions.filter(
          (c) => c.runtime === r && c.metric === 'failure_rate',
        );
        const holding = conditionsHolding(trips, health);
        state = holding.length ? 'open' : 'closed';
        breakerReason = holding.join(', ');
      }
      const usable = fp.usable || mine.some((o) => o.metric === 'available' && o.value > 0);
      out.set(r, {
        usable,
        reason: fp.reason,
        health,
        breaker: state,
        breakerReason,
        untrustedCode: fp.untrustedCode ?? { allowed: true },
      });
    }
    return (r) => out.get(r) as RuntimeView;
  }
}
