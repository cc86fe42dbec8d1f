import { test } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from '../../observability/logger.js';
import { IdlePool } from './idle-pool.js';

test('the pool tops a key up, hands VMs out one by one, and refills after a take, full or not', async () => {
  let made = 0;
  const disposed: number[] = [];
  const pool = new IdlePool(
    2,
    async () => ++made,
    async (vm) => void disposed.push(vm),
    silentLogger(),
  );
  await pool.fill('a');
  assert.equal(pool.idleCount('a'), 2);
  await pool.fill('a'); // already full: nothing to do, and no stale refill left behind
  assert.equal(pool.take('a'), 1);
  assert.equal(pool.take('b'), undefined, 'another key has its own VMs');
  pool.refill('a');
  await pool.fill('a');
  assert.deepEqual(
    pool.entries().map((e) => e.member),
    [2, 3],
  );
  await pool.close();
  assert.deepEqual(disposed, [2, 3]);
  assert.equal(pool.take('a'), undefined, 'a closed pool hands out nothing');
});

test('a pool that follows demand: as many idle as jobs of the key in the burst window, none once idle', async () => {
  let now = 0;
  let made = 0;
  const disposed: number[] = [];
  const pool = new IdlePool(
    4,
    async () => ++made,
    async (m) => void disposed.push(m),
    silentLogger(),
    { burstMs: 10_000, idleMs: 60_000, now: () => now },
  );
  assert.equal(pool.take('a'), undefined, 'the first job of a key finds none');
  await pool.fill('a');
  assert.equal(pool.idleCount('a'), 1, 'one job lately: one kept');
  for (let i = 0; i < 5; i++) {
    now += 100;
    pool.take('a');
  }
  await pool.fill('a');
  assert.equal(pool.idleCount('a'), 4, 'a burst: up to the pool size');
  now += 30_000;
  pool.take('a');
  await pool.fill('a');
  assert.equal(
    pool.idleCount('a'),
    3,
    'the burst is over: no refill beyond one (those kept stay until idle)',
  );
  now += 61_000;
  await pool.expire();
  assert.equal(pool.idleCount('a'), 0, 'a key no job asked for in a minute gives its sandboxes back');
  assert.equal(disposed.length, 3);
  await pool.close();
});
