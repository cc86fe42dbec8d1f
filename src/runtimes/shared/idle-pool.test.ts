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
