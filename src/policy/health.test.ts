import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { JobSpec } from '../jobs/spec.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { RuntimeHealthBook } from './health.js';
import { loadPolicy } from './load-policy.js';

test('the breaker is rebuilt from the store’s recorded job starts (infrastructure failures only), so a fresh process decides alike', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-health-'));
  const store = new SqliteStore(path.join(dir, 'boxcar.db'));
  t.after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  const policy = await loadPolicy();
  const spec = JobSpec.parse({ command: ['true'] });
  const decision = {
    trust: 'untrusted' as const,
    runtime: 'firecracker' as const,
    fallback: 'gvisor' as const,
    reasons: [],
  };
  const origin = { via: 'api' as const, actor: 'token:t' };
  for (let i = 0; i < 50; i++) {
    const id = `ok-${i}`;
    await store.createJob({ id, tenant: 't', spec, decision, origin, owner: 'h:1:1' });
    await store.transition(id, 'starting');
    await store.transition(id, 'running', { startedAt: Date.now() });
    await store.transition(id, 'succeeded');
  }
  for (let i = 0; i < 2; i++) {
    const id = `bad-${i}`;
    await store.createJob({ id, tenant: 't', spec, decision, origin, owner: 'h:1:1' });
    await store.transition(id, 'starting');
    await store.transition(id, 'error', { error: 'VM did not boot', infraFailure: true });
  }
  // Refusals and a job's own bad input are not the runtime's failures: a tenant sending a
  // thousand impossible jobs cannot push everyone off the primary runtime.
  for (let i = 0; i < 1000; i++) {
    const id = `refused-${i}`;
    await store.createJob({ id, tenant: 'hostile', spec, decision, origin, owner: 'h:1:1' });
    if (i % 2) await store.transition(id, 'error', { error: 'exceeds quota q: requests.memory 1 PiB' });
    else {
      await store.transition(id, 'starting');
      await store.transition(id, 'error', { error: 'image nope:1 not found' });
    }
  }
  // A job cancelled before it started says nothing about the runtime.
  await store.createJob({ id: 'cancelled', tenant: 't', spec, decision, origin, owner: 'h:1:1' });
  await store.transition('cancelled', 'cancelled');

  const usable = async () => ({ runtime: 'firecracker' as const, usable: true, reason: 'ok', details: {} });
  const book = await new RuntimeHealthBook(policy, usable).loadHistory(store);
  const view = (await book.views(Date.now()))('firecracker');
  assert.equal(view.health.samples, 52);
  assert.ok(Math.abs(view.health.failureRate - 2 / 52) < 1e-9);
  assert.equal(view.breaker, 'open');
  assert.match(view.breakerReason, /firecracker_failure_rate > 0\.01/);
  assert.equal((await book.views(Date.now() + policy.breaker.cooldown))('firecracker').breaker, 'half-open');
  assert.equal((await book.views(Date.now()))('gvisor').breaker, 'closed', 'other runtimes are unaffected');
});
