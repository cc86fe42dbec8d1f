import { test } from 'node:test';
import assert from 'node:assert/strict';
import { costByDay, DAY_MS } from './cost-by-day.js';

test('cost per UTC day and runtime; jobs outside the days count on none', () => {
  const from = Date.UTC(2026, 10, 1);
  const job = (runtime: string, finishedAt: number | null, price: number) => ({ runtime, finishedAt, price });
  const days = costByDay(
    [
      job('runc', from + 1000, 5),
      job('runc', from + 2000, 7),
      job('gvisor', from + DAY_MS + 1, 11),
      job('runc', from - 1, 1000), // the day before
      job('runc', from + 3 * DAY_MS, 1000), // past the last day
      job('runc', null, 1000),
    ],
    from,
    3,
    (j) => j.price,
  );
  assert.deepEqual(
    days.map((d) => [d.day, Object.fromEntries(d.byRuntime)]),
    [
      ['2026-11-01', { runc: 12 }],
      ['2026-11-02', { gvisor: 11 }],
      ['2026-11-03', {}],
    ],
  );
});
