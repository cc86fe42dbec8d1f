import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SEED_PRICES, jobCostDollars } from './model.js';

test('a default-size job slot busy for a month costs the seed baseline of $8 (memory $5 + CPU $3)', () => {
  const month = 730 * 3_600_000;
  const cost = jobCostDollars(
    { peakMemoryBytes: 256 * 2 ** 20, durationMs: month, cpuUsageNs: month * 1e6 },
    SEED_PRICES,
  );
  assert.ok(Math.abs(cost - 8) < 1e-9, `got ${cost}`);
});

test('cost grows with memory and CPU used, and an idle instant is free', () => {
  assert.equal(jobCostDollars({ peakMemoryBytes: 0, durationMs: 0, cpuUsageNs: 0 }), 0);
  const small = jobCostDollars({ peakMemoryBytes: 2 ** 20, durationMs: 1000, cpuUsageNs: 1e8 });
  const big = jobCostDollars({ peakMemoryBytes: 2 ** 30, durationMs: 1000, cpuUsageNs: 1e9 });
  assert.ok(big > small && small > 0);
});
