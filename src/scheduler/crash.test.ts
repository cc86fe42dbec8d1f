import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { JobView } from '../api/job-view.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { leftovers, tempState } from '../testing/harness.js';
import { boxcarSync, exited, startServe } from '../testing/serve-process.js';

/**
 * Crash safety for real: a `boxcar serve` process running runc jobs is killed with SIGKILL,
 * and a new one on the same state directory finishes every job exactly once: running ones are
 * re-attached, queued ones run, none is lost or run twice.
 */
const JOBS = 20;

let state: Awaited<ReturnType<typeof tempState>>;
let config: string;
let server: ChildProcess | undefined;

async function serve(): Promise<{ child: ChildProcess; url: string }> {
  const started = await startServe(['--state', state.root, '--config', config]);
  server = started.child;
  return started;
}

before(async () => {
  state = await tempState();
  // The tenant's code is trusted: its jobs run on runc, as the test means them to.
  config = path.join(state.root, 'config.yaml');
  writeFileSync(config, 'tenants:\n  ci: { trust: trusted }\n');
});
after(async () => {
  if (server && server.exitCode === null && server.signalCode === null) {
    server.kill('SIGTERM');
    await exited(server);
  }
  const left = await leftovers(state);
  await state.cleanup();
  assert.deepEqual(left, []);
});

test(
  `kill -9 of boxcar serve with ${JOBS} jobs in flight: every job finishes once, none lost`,
  { timeout: 120_000 },
  async (t) => {
    const token = boxcarSync(['--state', state.root, 'token', 'create', '--tenant', 'ci']);
    const first = await serve();
    const api =
      (url: string) =>
      async <T>(p: string, init: RequestInit = {}) => {
        const res = await fetch(`${url}${p}`, {
          ...init,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        });
        assert.ok(res.ok, `${p}: ${res.status} ${await res.clone().text()}`);
        return (await res.json()) as T;
      };
    const call1 = api(first.url);
    const ids: string[] = [];
    for (let i = 0; i < JOBS; i++) {
      const job = await call1<JobView>('/v1/jobs', {
        method: 'POST',
        body: JSON.stringify({
          name: `crash-${i}`,
          source: 'internal_repo',
          user_group: 'internal_team',
          command: 'echo start; sleep 3; echo done',
          resources: { memory: '32Mi', requests: { cpus: '10m' } },
        }),
      });
      ids.push(job.id);
    }
    // Kill it while some jobs run and others still wait or start.
    for (let i = 0; i < 100; i++) {
      const running = (await call1<JobView[]>('/v1/jobs?state=running&limit=100')).length;
      if (running >= JOBS / 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const before = await call1<JobView[]>(`/v1/jobs?limit=100`);
    const runningAtKill = before.filter((j) => j.state === 'running').length;
    assert.ok(runningAtKill >= 1, 'jobs were running at the kill');
    first.child.kill('SIGKILL');
    await exited(first.child);
    // A local command on the state directory before the node comes back reconciles it too: the
    // dead node's running jobs are its to re-attach, and their containers must still be there.
    boxcarSync(['--state', state.root, '--config', config, 'jobs']);

    const second = await serve();
    const call2 = api(second.url);
    const finished: JobView[] = [];
    for (const id of ids) finished.push(await call2<JobView>(`/v1/jobs/${id}?wait=60s`));
    for (const job of finished) {
      assert.equal(job.state, 'succeeded', `${job.name}: ${job.state} ${job.error ?? ''}`);
      const res = await fetch(`${second.url}/v1/jobs/${job.id}/logs`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(await res.text(), 'start\ndone\n', `${job.name} ran exactly once, to its end`);
    }
    second.child.kill('SIGTERM');
    await exited(second.child);

    const store = new SqliteStore(state.db);
    try {
      let requeued = 0;
      for (const id of ids) {
        const events = await store.events(id);
        assert.equal(events.filter((e) => e.to === 'running').length, 1, `job ${id} ran once`);
        // Caught before its process started: back to the queue, then run (once).
        if (events.some((e) => e.to === 'queued' && e.from !== null)) requeued++;
      }
      t.diagnostic(`${runningAtKill} running at the kill; ${requeued} requeued before their process started`);
    } finally {
      await store.close();
    }
  },
);
