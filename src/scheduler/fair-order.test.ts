import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { JobRecord } from '../store/store.js';
import { fairOrder, RecentStarts } from './fair-order.js';

const job = (id: string, tenant: string, createdAt: number, priority = 0) =>
  ({ id, tenant, createdAt, priority }) as JobRecord;

test('a burst from one tenant does not starve another: tenants take turns', () => {
  const burst = Array.from({ length: 100 }, (_, i) => job(`a${i}`, 'a', i));
  const order = fairOrder([...burst, job('b0', 'b', 500), job('b1', 'b', 501)], { admitted: new Map() });
  assert.deepEqual(
    order.slice(0, 5).map((j) => j.id),
    ['a0', 'b0', 'a1', 'b1', 'a2'],
  );
});

test('the tenant holding fewer admitted jobs goes first; priority orders a tenant’s own jobs only', () => {
  const queued = [job('a0', 'a', 1), job('b0', 'b', 2), job('c0', 'c', 10, 1000), job('b1', 'b', 4, 5)];
  const order = fairOrder(queued, { admitted: new Map([['a', 5]]) });
  assert.deepEqual(
    order.map((j) => j.id),
    ['b1', 'c0', 'b0', 'a0'],
    'b’s own high-priority job first; c’s priority 1000 does not put it ahead of b',
  );
});

test('weights: a tenant of weight 3 gets three turns for every one of a tenant of weight 1', () => {
  const queued = [
    ...Array.from({ length: 40 }, (_, i) => job(`a${i}`, 'a', i)),
    ...Array.from({ length: 40 }, (_, i) => job(`b${i}`, 'b', i)),
  ];
  const first = fairOrder(queued, { admitted: new Map(), weight: (t) => (t === 'a' ? 3 : 1) }).slice(0, 40);
  assert.equal(first.filter((j) => j.tenant === 'a').length, 30);
  assert.equal(first.filter((j) => j.tenant === 'b').length, 10);
});

test('one slot at a time: the tenant served least lately goes next, and a start counts less as it ages', () => {
  const a = job('a9', 'a', 1);
  const b = job('b0', 'b', 2);
  const served = new RecentStarts(1000);
  for (let i = 0; i < 8; i++) served.started('a', 0);
  const order = fairOrder([a, b], { admitted: new Map(), served: served.snapshot(0) });
  assert.deepEqual(
    order.map((j) => j.id),
    ['b0', 'a9'],
    'b’s one job before the rest of a’s burst',
  );
  assert.ok(Math.abs((served.snapshot(1000).get('a') ?? 0) - 4) < 1e-9, 'half after the half-life');
});
