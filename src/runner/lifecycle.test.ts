import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { nodeId } from '../lib/owner.js';
import path from 'node:path';
import { newHandle } from '../jobs/handle.js';
import { JobSpec, RUNTIME_NAMES } from '../jobs/spec.js';
import { sleep } from '../lib/exec.js';
import { MockHost, MockRuntime } from '../runtimes/mock/driver.js';
import { RuntimeRegistry } from '../runtimes/registry.js';
import { Scheduler } from '../scheduler/scheduler.js';
import type { JobRecord } from '../store/store.js';
import { testBoxcar } from '../testing/harness.js';
import { executeJob } from './execute.js';
import { jobLogPath } from './job-log.js';
import { decideLocally, operatorOrigin } from './local.js';
import { reconcileOrphans } from './reconcile.js';

/**
 * The job life cycle on the mock runtime, in milliseconds: the executor (retries, cancel
 * before the start, timeout TERM then KILL), the reconciler of orphans, and the scheduler
 * (fair order, quota waits, re-attaching after a crash, a lost node's jobs). The same paths run
 * with real sandboxes in the drivers' suites; here each edge is forced on purpose.
 */
type Box = Awaited<ReturnType<typeof testBoxcar>>;

async function mockBoxcar(config = '') {
  const host = new MockHost();
  const file = path.join(tmpdir(), `bx-mock-config-${randomUUID()}.yaml`);
  writeFileSync(file, config);
  const box = await testBoxcar({
    config: file,
    runtimes: () => new RuntimeRegistry(RUNTIME_NAMES.map((n) => new MockRuntime(n, host))),
  });
  rmSync(file);
  return { box, host };
}

const TRUSTED = { source: 'internal_repo', user_group: 'internal_team' };
/** A dead process of this node: its jobs are orphans for the next one to settle. */
const deadOwner = (box: Box) => `${nodeId(box.paths.root)}:4194300:1`;

async function queued(box: Box, fields: Record<string, unknown>, extra: Partial<JobRecord> = {}) {
  const spec = JobSpec.parse({ ...TRUSTED, command: ['job'], ...fields });
  const id = randomUUID();
  const decision = await decideLocally(box, id, spec);
  return box.store.createJob({
    id,
    tenant: (extra.tenant as string | undefined) ?? 't',
    spec,
    decision,
    origin: operatorOrigin(),
    owner: null,
  });
}

describe('executing a job (mock runtime)', () => {
  test('a job runs to its exit: states, figures, its output in the stored log, its sandbox gone', async () => {
    const { box, host } = await mockBoxcar();
    try {
      const r = await box.runJob({
        ...TRUSTED,
        command: ['x'],
        env: { MOCK_EXIT: 3, MOCK_OUTPUT: 'hello\n' },
      });
      assert.equal(r.record.state, 'failed');
      assert.equal(r.record.exitCode, 3);
      assert.equal(r.output, 'hello\n');
      assert.ok(r.record.startupMs !== null && r.record.durationMs !== null);
      assert.match(readFileSync(jobLogPath(box.paths, r.record.id), 'utf8'), /stdout F hello/);
      assert.deepEqual(
        (await box.store.events(r.record.id)).map((e) => e.to),
        ['queued', 'starting', 'running', 'failed'],
      );
      assert.equal(host.sandboxes.size, 0);
    } finally {
      await box.cleanup();
    }
  });

  test('a final state the store fails to record once still lands, and the job ran once', async () => {
    const { box, host } = await mockBoxcar();
    try {
      // The store fails the first write of a final state (a failover, SQLITE_BUSY).
      const transition = box.store.transition.bind(box.store);
      let failed = 0;
      box.store.transition = async (id, to, ...rest) => {
        if (to === 'succeeded' && failed++ === 0) throw new Error('SQLITE_BUSY: database is locked');
        return transition(id, to, ...rest);
      };
      const r = await box.runJob({ ...TRUSTED, command: ['x'], env: { MOCK_EXIT: 0 } });
      assert.equal(r.record.state, 'succeeded');
      assert.equal(failed, 2, 'written again after the failure');
      assert.deepEqual(
        (await box.store.events(r.record.id)).map((e) => e.to),
        ['queued', 'starting', 'running', 'succeeded'],
        'one run, one result',
      );
      assert.equal(host.calls.filter((c) => c.startsWith('start ')).length, 1);
    } finally {
      await box.cleanup();
    }
  });

  test('a sandbox that fails to start is retried with backoff, then ends in error; bad input is not retried', async () => {
    const { box, host } = await mockBoxcar();
    try {
      const retry = { maxAttempts: 2, backoffMs: () => 1000 };
      const job = await queued(box, { env: { MOCK_FAIL_START: 1 } });
      const first = await executeJob(box, job, { retry });
      assert.equal(first.record.state, 'queued');
      assert.equal(first.record.attempts, 1);
      assert.equal(first.record.infraFailure, true);
      assert.ok(first.record.notBefore >= Date.now() + 500, 'not before its backoff');
      const second = await executeJob(box, (await box.store.getJob(job.id)) as JobRecord, { retry });
      assert.equal(second.record.state, 'error');
      assert.match(second.record.error ?? '', /could not be started/);
      const bad = await executeJob(box, await queued(box, { env: { MOCK_BAD_INPUT: 1 } }), { retry });
      assert.equal(bad.record.state, 'error');
      assert.equal(bad.record.infraFailure, false);
      assert.equal(host.sandboxes.size, 0, 'every failed sandbox was destroyed');
    } finally {
      await box.cleanup();
    }
  });

  test('a cancel before the start: the sandbox is destroyed, its process never started', async () => {
    const { box, host } = await mockBoxcar();
    try {
      const ac = new AbortController();
      ac.abort();
      const r = await executeJob(box, await queued(box, {}), { signal: ac.signal });
      assert.equal(r.record.state, 'cancelled');
      assert.ok(!host.calls.some((c) => c.startsWith('start ')));
      assert.ok(host.calls.some((c) => c.startsWith('destroy ')));
    } finally {
      await box.cleanup();
    }
  });

  test('past its timeout a job gets TERM, then KILL after the grace period', async () => {
    const { box, host } = await mockBoxcar();
    try {
      const job = await queued(box, { timeout: '100ms', env: { MOCK_MS: 60_000, MOCK_IGNORE_TERM: 1 } });
      const t0 = Date.now();
      const r = await executeJob(box, job, { stopGraceMs: 50 });
      assert.equal(r.record.state, 'timeout');
      assert.equal(r.record.exitCode, 137);
      assert.deepEqual(
        host.calls.filter((c) => c.startsWith('stop ')).map((c) => c.split(' ')[2]),
        ['SIGTERM', 'SIGKILL'],
      );
      assert.ok(Date.now() - t0 < 2000);
      const polite = await executeJob(box, await queued(box, { timeout: '50ms', env: { MOCK_MS: 60_000 } }), {
        stopGraceMs: 5000,
      });
      assert.equal(polite.record.exitCode, 143, 'a job that heeds TERM is not killed');
    } finally {
      await box.cleanup();
    }
  });
});

describe('reconciling orphans (mock runtime)', () => {
  test('a dead process’s jobs: an ended one gets its exit, a running one is stopped, lost ones end in error', async () => {
    const { box, host } = await mockBoxcar();
    const runtime = box.runtimes.get('runc');
    try {
      const orphan = async (env: Record<string, unknown>, opts: { start: boolean; sandbox: boolean }) => {
        const job = await queued(box, { env });
        await box.store.transition(job.id, 'starting', { owner: deadOwner(box) });
        if (!opts.sandbox) return job.id;
        const sandboxId = randomUUID();
        const handle = await runtime.prepare({
          jobId: job.id,
          sandboxId,
          spec: job.spec,
          image: {
            ref: 'x',
            digest: 'sha256:0',
            content: { layers: [] },
            config: { env: [], entrypoint: [], cmd: [], workingDir: '/' },
          },
          tenant: job.tenant,
          trust: job.decision.trust,
          secrets: {},
          logPath: path.join(box.paths.sandboxes, `${sandboxId}.log`),
        });
        await box.store.saveHandle(job.id, handle);
        if (opts.start) {
          await runtime.start(handle);
          await box.store.transition(job.id, 'running', { startedAt: Date.now() });
        }
        return job.id;
      };
      const ended = await orphan({ MOCK_EXIT: 7 }, { start: true, sandbox: true });
      const running = await orphan({ MOCK_MS: 60_000 }, { start: true, sandbox: true });
      const neverCreated = await orphan({}, { start: false, sandbox: false });
      const lost = await orphan({ MOCK_MS: 60_000 }, { start: true, sandbox: true });
      host.lose((await box.store.getJob(lost))?.handle?.sandboxId as string);
      await sleep(20);
      const settled = await reconcileOrphans(box);
      assert.equal(settled.length, 4);
      const state = async (id: string) => {
        const j = (await box.store.getJob(id)) as JobRecord;
        return [j.state, j.exitCode, j.error];
      };
      assert.deepEqual(await state(ended), ['failed', 7, null]);
      assert.deepEqual((await state(running)).slice(0, 1), ['error']);
      assert.match(String((await state(running))[2]), /died while the job ran; the job was stopped/);
      assert.match(String((await state(neverCreated))[2]), /died before the sandbox was created/);
      assert.match(String((await state(lost))[2]), /sandbox lost/);
      assert.equal(host.sandboxes.size, 0);
    } finally {
      await box.cleanup();
    }
  });
});

describe('the scheduler (mock runtime)', () => {
  const until = async (what: string, check: () => Promise<boolean>) => {
    for (let i = 0; i < 300; i++) {
      if (await check()) return;
      await sleep(10);
    }
    throw new Error(`timed out waiting: ${what}`);
  };
  const done = (box: Box, ids: string[]) => async () =>
    (await Promise.all(ids.map((id) => box.store.getJob(id)))).every((j) => j?.finishedAt);

  test('fair order: a burst of one tenant does not hold back another tenant’s job', async () => {
    const { box } = await mockBoxcar('scheduler: { concurrency: { runc: 1 } }\n');
    const scheduler = new Scheduler(box, { pollMs: 10 });
    try {
      const burst = [];
      for (let i = 0; i < 12; i++) burst.push(await queued(box, { env: { MOCK_MS: 5 } }, { tenant: 'a' }));
      const late = await queued(box, { env: { MOCK_MS: 5 } }, { tenant: 'b' });
      await scheduler.start();
      const ids = [...burst, late].map((j) => j.id);
      await until('every job ran', done(box, ids));
      const order = (await Promise.all(ids.map((id) => box.store.getJob(id))))
        .sort((x, y) => (x?.startedAt ?? 0) - (y?.startedAt ?? 0))
        .map((j) => j?.tenant);
      assert.ok(order.indexOf('b') <= 1, `b ran at ${order.indexOf('b')}: ${order.join(' ')}`);
    } finally {
      await scheduler.stop(1000);
      await box.cleanup();
    }
  });

  test('a tenant at its quota waits with the reason, then runs', async () => {
    const quota = `quotas:
  - { apiVersion: v1, kind: ResourceQuota, metadata: { name: one, namespace: q }, spec: { hard: { pods: '1' } } }
`;
    const { box } = await mockBoxcar(quota);
    const scheduler = new Scheduler(box, { pollMs: 10 });
    try {
      const a = await queued(box, { env: { MOCK_MS: 150 } }, { tenant: 'q' });
      const b = await queued(box, { env: { MOCK_MS: 5 } }, { tenant: 'q' });
      await scheduler.start();
      await until(
        'the second waits for quota',
        async () => (await box.store.getJob(b.id))?.waitReason !== null,
      );
      assert.match(
        (await box.store.getJob(b.id))?.waitReason ?? '',
        /waiting for quota one: pods used 1 \+ requested 1 > hard 1/,
      );
      await until('both ran', done(box, [a.id, b.id]));
      assert.deepEqual(
        (await Promise.all([a, b].map((j) => box.store.getJob(j.id)))).map((j) => j?.state),
        ['succeeded', 'succeeded'],
      );
    } finally {
      await scheduler.stop(1000);
      await box.cleanup();
    }
  });

  test('after a crash: running sandboxes are re-attached, ended ones recorded, never-started ones run again', async () => {
    const { box, host } = await mockBoxcar();
    const runtime = box.runtimes.get('runc');
    try {
      const orphan = async (env: Record<string, unknown>, start: boolean) => {
        const job = await queued(box, { env });
        await box.store.claim(job.id, deadOwner(box), Date.now() + 60_000);
        await box.store.transition(job.id, 'starting');
        const sandboxId = randomUUID();
        const logPath = path.join(box.paths.sandboxes, `${sandboxId}.log`);
        await box.store.saveHandle(job.id, newHandle({ runtime: 'runc', jobId: job.id, sandboxId, logPath }));
        if (!start) return job.id;
        const handle = await runtime.prepare({
          jobId: job.id,
          sandboxId,
          spec: job.spec,
          image: {
            ref: 'x',
            digest: 'sha256:0',
            content: { layers: [] },
            config: { env: [], entrypoint: [], cmd: [], workingDir: '/' },
          },
          tenant: job.tenant,
          trust: job.decision.trust,
          secrets: {},
          logPath,
        });
        await runtime.start(handle);
        await box.store.transition(job.id, 'running', { startedAt: Date.now() });
        return job.id;
      };
      const still = await orphan({ MOCK_MS: 100, MOCK_EXIT: 0 }, true);
      const ended = await orphan({ MOCK_EXIT: 4 }, true);
      const notStarted = await orphan({}, false);
      await sleep(20);
      const scheduler = new Scheduler(box, { pollMs: 10 });
      await scheduler.start();
      try {
        await until('all settled', done(box, [still, ended, notStarted]));
        const jobs = await Promise.all([still, ended, notStarted].map((id) => box.store.getJob(id)));
        assert.deepEqual(
          jobs.map((j) => [j?.state, j?.exitCode]),
          [
            ['succeeded', 0],
            ['failed', 4],
            ['succeeded', 0],
          ],
        );
        assert.equal(jobs[2]?.attempts, 1, 'the never-started job ran once more');
        assert.equal((await box.store.events(still)).filter((e) => e.to === 'running').length, 1);
      } finally {
        await scheduler.stop(1000);
      }
      assert.equal(host.sandboxes.size, 0);
    } finally {
      await box.cleanup();
    }
  });

  test('a job held by a node of another host whose lease ran out is run again, once', async () => {
    const { box } = await mockBoxcar('scheduler: { lease: 300ms }\n');
    const scheduler = new Scheduler(box, { pollMs: 10 });
    try {
      const job = await queued(box, { env: { MOCK_EXIT: 0 } });
      await box.store.claim(job.id, 'another-host:1:1', Date.now() - 1);
      await box.store.transition(job.id, 'starting');
      await box.store.transition(job.id, 'running', { startedAt: Date.now() });
      await scheduler.start();
      await until('taken over and run', done(box, [job.id]));
      const after = (await box.store.getJob(job.id)) as JobRecord;
      assert.equal(after.state, 'succeeded');
      assert.equal(after.attempts, 1);
      assert.ok(
        (await box.store.events(job.id)).some((e) =>
          /node another-host:1:1 lost \(its lease expired\)/.test(e.reason ?? ''),
        ),
      );
    } finally {
      await scheduler.stop(1000);
      await box.cleanup();
    }
  });
  test('a job whose node was lost as often as max_attempts allows ends in error, not passed around for ever', async () => {
    const { box } = await mockBoxcar('scheduler: { lease: 300ms, max_attempts: 2 }\n');
    const scheduler = new Scheduler(box, { pollMs: 10 });
    try {
      const job = await queued(box, { env: { MOCK_EXIT: 0 } });
      // Its first attempt was on a node lost before; this one's node is lost too.
      await box.store.claim(job.id, 'first-host:1:1', Date.now() - 1);
      await box.store.transition(job.id, 'starting');
      await box.store.requeue(job.id, Date.now(), 'node first-host lost');
      await box.store.claim(job.id, 'another-host:1:1', Date.now() - 1);
      await box.store.transition(job.id, 'starting');
      await box.store.transition(job.id, 'running', { startedAt: Date.now() });
      await scheduler.start();
      await until('settled', done(box, [job.id]));
      const after = (await box.store.getJob(job.id)) as JobRecord;
      assert.equal(after.state, 'error');
      assert.match(after.error ?? '', /node another-host:1:1 lost \(its lease expired\), its attempt 2 of 2/);
    } finally {
      await scheduler.stop(1000);
      await box.cleanup();
    }
  });
});
