import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { JobSpec } from '../jobs/spec.js';
import { IllegalTransition, type Store } from './store.js';

/**
 * What every Store must do for a serving node, run against each implementation (SQLite, and
 * PostgreSQL for several nodes): claims that exactly one node wins, leases, requeues, cancel
 * requests, quota usage and tokens.
 */
const decision = { trust: 'trusted' as const, runtime: 'runc' as const, fallback: null, reasons: ['test'] };
const spec = (extra: Record<string, unknown> = {}) => JobSpec.parse({ command: ['true'], ...extra });

export function storeConformance(name: string, open: () => Promise<Store>): void {
  describe(`${name} store: the queue of serving nodes`, () => {
    const withStore = async (fn: (s: Store) => Promise<void>) => {
      const s = await open();
      try {
        await fn(s);
      } finally {
        await s.close();
      }
    };
    let n = 0;
    const job = (s: Store, tenant = 't', extra: Record<string, unknown> = {}) =>
      s.createJob({ id: `${name}-${process.pid}-${n++}`, tenant, spec: spec(extra), decision, owner: null });

    test('exactly one of several concurrent claims wins; a lease that runs out can be claimed again', () =>
      withStore(async (s) => {
        const j = await job(s);
        const now = Date.now();
        const wins = await Promise.all(['a', 'b', 'c', 'd'].map((o) => s.claim(j.id, o, now + 60_000)));
        assert.equal(wins.filter(Boolean).length, 1);
        assert.ok(!(await s.claimable(now, 100)).some((x) => x.id === j.id), 'a held job is not claimable');
        const shortJob = await job(s);
        assert.ok(await s.claim(shortJob.id, 'a', now - 1), 'claimed with a lease already over');
        assert.ok(await s.claim(shortJob.id, 'b', now + 60_000), 'an expired lease is claimable');
        await s.release(shortJob.id, 'b', 'waiting for quota q');
        const back = await s.getJob(shortJob.id);
        assert.equal(back?.owner, null);
        assert.equal(back?.waitReason, 'waiting for quota q');
      }));

    test('claimable gives each tenant its first jobs by priority, then age', () =>
      withStore(async (s) => {
        const tenant = `fair-${n}`;
        const low = await job(s, tenant, { priority: -5 });
        const first = await job(s, tenant);
        await job(s, tenant);
        const high = await job(s, tenant, { priority: 7 });
        const mine = (await s.claimable(Date.now(), 2)).filter((j) => j.tenant === tenant);
        assert.deepEqual(
          mine.map((j) => j.id),
          [high.id, first.id],
        );
        assert.ok(!mine.some((j) => j.id === low.id));
      }));

    test('requeue counts the attempt and respects its backoff; leases are renewed and expire', () =>
      withStore(async (s) => {
        const j = await job(s);
        await s.claim(j.id, 'node-a', Date.now() + 60_000);
        await s.transition(j.id, 'starting');
        const again = await s.requeue(j.id, Date.now() + 60_000, 'infrastructure failure');
        assert.equal(again.state, 'queued');
        assert.equal(again.attempts, 1);
        assert.equal(again.owner, null);
        assert.ok(!(await s.claimable(Date.now(), 100)).some((x) => x.id === j.id), 'not before its backoff');
        const k = await job(s);
        await s.claim(k.id, 'node-b', Date.now() - 10);
        await s.transition(k.id, 'starting');
        await s.transition(k.id, 'running', { startedAt: Date.now() });
        assert.ok((await s.expiredLeases(Date.now(), 1000)).some((x) => x.id === k.id));
        await s.renewLeases('node-b', Date.now() + 60_000);
        assert.ok(!(await s.expiredLeases(Date.now(), 1000)).some((x) => x.id === k.id));
        assert.equal(await s.takeOver(k.id, 'someone-else', 'node-c', Date.now() + 1), false);
        assert.equal(await s.takeOver(k.id, 'node-b', 'node-c', Date.now() + 60_000), true);
        assert.equal((await s.getJob(k.id))?.owner, 'node-c');
      }));

    test('cancel: a queued job at once; a running one is flagged for its owner', () =>
      withStore(async (s) => {
        const q = await job(s);
        assert.equal((await s.requestCancel(q.id)).state, 'cancelled');
        const r = await job(s);
        await s.claim(r.id, 'node-x', Date.now() + 60_000);
        await s.transition(r.id, 'starting');
        const flagged = await s.requestCancel(r.id);
        assert.equal(flagged.state, 'starting');
        assert.equal(flagged.cancelRequested, true);
        assert.deepEqual(await s.cancelRequests('node-x'), [r.id]);
        await assert.rejects(s.transition(q.id, 'starting'), IllegalTransition);
      }));

    test('admitted usage sums requests and limits of claimed, starting and running jobs per tenant', () =>
      withStore(async (s) => {
        const tenant = `usage-${n}`;
        const res = { memory: '512Mi', cpus: '2', requests: { memory: '128Mi', cpus: '250m' } };
        const a = await job(s, tenant, { resources: res });
        const b = await job(s, tenant, { resources: res });
        await job(s, tenant, { resources: res }); // queued, unclaimed: not admitted
        await s.claim(a.id, 'n', Date.now() + 60_000);
        await s.claim(b.id, 'n', Date.now() + 60_000);
        await s.transition(b.id, 'starting');
        assert.deepEqual((await s.admittedUsage()).get(tenant), {
          pods: 2,
          requestsMemoryBytes: 256 * 2 ** 20,
          limitsMemoryBytes: 1024 * 2 ** 20,
          requestsCpuMillis: 500,
          limitsCpuMillis: 4000,
        });
      }));

    test('tokens map to their tenant by hash', () =>
      withStore(async (s) => {
        const hash = `h-${name}-${process.pid}`;
        await s.addToken(hash, 'team-z');
        assert.equal(await s.tenantOfToken(hash), 'team-z');
        assert.equal(await s.tenantOfToken('nope'), undefined);
      }));
  });
}
