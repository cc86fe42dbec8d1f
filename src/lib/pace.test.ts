import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sleep } from './exec.js';
import { Pace, PaceCancelled } from './pace.js';

test('a pace lets a second’s worth through at once, then the rate', async () => {
  const pace = new Pace(1000);
  const t0 = Date.now();
  await pace.take(1000);
  assert.ok(Date.now() - t0 < 50);
  await pace.take(500);
  const waited = Date.now() - t0;
  assert.ok(waited >= 450 && waited < 800, `${waited} ms`);
});

test('a paused pace holds still until it is not, and a cancelled one fails', async () => {
  let paused = true;
  const pace = new Pace(1e9, () => paused);
  let passed = false;
  const taking = pace.take(1).then(() => (passed = true));
  await sleep(150);
  assert.equal(passed, false);
  paused = false;
  await taking;
  assert.equal(passed, true);
  paused = true;
  const held = pace.take(1);
  pace.cancel();
  await assert.rejects(held, PaceCancelled);
  await assert.rejects(pace.take(1), PaceCancelled);
});

test('a transfer held by a pause goes on, unpaced, once it becomes urgent', async () => {
  const pace = new Pace(1, () => true); // paused for good, and one byte a second
  let urgent = false;
  let passed = false;
  const taking = pace.take(1_000_000, () => urgent).then(() => (passed = true));
  await sleep(150);
  assert.equal(passed, false, 'held while paused');
  urgent = true;
  const t0 = Date.now();
  await taking;
  assert.ok(Date.now() - t0 < 500, 'not held, and not paced at one byte a second');
});
