import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { newHandle } from '../../jobs/handle.js';
import { JobSpec } from '../../jobs/spec.js';
import { IllegalTransition } from '../store.js';
import { SqliteStore } from './sqlite-store.js';
import { storeConformance } from '../conformance.js';

const spec = JobSpec.parse({ name: 'unit', command: ['true'] });
const decision = {
  trust: 'trusted' as const,
  runtime: 'runc' as const,
  fallback: null,
  reasons: ['runc is the default runtime'],
};
const origin = { via: 'cli' as const, actor: 'operator:test' };

async function withStore(fn: (file: string) => Promise<void>) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-store-'));
  try {
    await fn(path.join(dir, 'boxcar.db'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a job is recorded queued, moves through legal states, and keeps its history', () =>
  withStore(async (file) => {
    const store = new SqliteStore(file);
    const job = await store.createJob({ id: 'j1', tenant: 'local', spec, decision, origin, owner: 'h:1:1' });
    assert.equal(job.state, 'queued');
    assert.deepEqual(
      job.spec,
      JSON.parse(JSON.stringify(spec)),
      'the spec round-trips (absent fields stay absent)',
    );
    assert.deepEqual(job.decision, decision);
    await store.transition('j1', 'starting');
    await store.transition('j1', 'running', { startedAt: 5, startupMs: 12.5 });
    const done = await store.transition('j1', 'failed', {
      exitCode: 3,
      oomKilled: false,
      timedOut: false,
      durationMs: 40,
      peakMemoryBytes: 1024,
      costDollars: 0.5,
    });
    assert.equal(done.state, 'failed');
    assert.equal(done.exitCode, 3);
    assert.equal(done.startupMs, 12.5);
    assert.equal(done.oomKilled, false);
    const events = await store.events('j1');
    assert.deepEqual(
      events.map((e) => [e.from, e.to]),
      [
        [null, 'queued'],
        ['queued', 'starting'],
        ['starting', 'running'],
        ['running', 'failed'],
      ],
    );
    await store.close();
  }));

test('illegal transitions are refused and change nothing', () =>
  withStore(async (file) => {
    const store = new SqliteStore(file);
    await store.createJob({ id: 'j2', tenant: 'local', spec, decision, origin, owner: 'h:1:1' });
    await assert.rejects(store.transition('j2', 'succeeded'), IllegalTransition);
    assert.equal((await store.getJob('j2'))?.state, 'queued');
    await store.transition('j2', 'cancelled');
    await assert.rejects(store.transition('j2', 'running'), IllegalTransition);
    await assert.rejects(store.transition('missing', 'running'), /does not exist/);
    await store.close();
  }));

test('records survive reopening the database, handles included; listing filters by state and tenant', () =>
  withStore(async (file) => {
    const a = new SqliteStore(file);
    await a.createJob({ id: 'x', tenant: 't1', spec, decision, origin, owner: 'h:1:1' });
    await a.createJob({ id: 'y', tenant: 't2', spec, decision, origin, owner: 'h:1:1' });
    await a.saveHandle('x', {
      ...newHandle({ runtime: 'runc', jobId: 'x', sandboxId: 's', logPath: '/l' }),
      driverState: { conmonPid: 7 },
      attributes: { hostPid: 7 },
    });
    await a.transition('y', 'starting');
    await a.close();
    const b = new SqliteStore(file);
    assert.deepEqual((await b.getJob('x'))?.handle?.driverState, { conmonPid: 7 });
    assert.deepEqual(
      (await b.listJobs({ states: ['starting'] })).map((j) => j.id),
      ['y'],
    );
    assert.deepEqual(
      (await b.listJobs({ tenant: 't1' })).map((j) => j.id),
      ['x'],
    );
    assert.equal((await b.listJobs()).length, 2);
    await b.close();
  }));

const conformanceDir = await mkdtemp(path.join(os.tmpdir(), 'bx-store-conf-'));
after(() => rm(conformanceDir, { recursive: true, force: true }));
storeConformance(
  'sqlite',
  async () => new SqliteStore(path.join(conformanceDir, 'boxcar.db')),
  async (sql) => {
    const db = new Database(path.join(conformanceDir, 'boxcar.db'));
    try {
      db.exec(sql);
    } finally {
      db.close();
    }
  },
);
