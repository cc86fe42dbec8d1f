import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { JobView } from '../api/job-view.js';
import { PostgresStore } from '../store/postgres/postgres-store.js';
import { leftovers, tempState } from '../testing/harness.js';
import { readSandboxRecord } from '../runtimes/sandbox-ledger.js';
import { isTerminal } from '../jobs/states.js';
import { startPostgres, type TestPostgres } from '../testing/postgres.js';
import { boxcarSync, exited, startServe } from '../testing/serve-process.js';

/**
 * Several nodes over PostgreSQL, for real: two `boxcar serve` processes share one queue; one
 * dies with its sandboxes (a lost machine); once its leases expire the other runs its jobs,
 * and every job finishes exactly once.
 */
const JOBS = 10;

let pg: TestPostgres;
let a: Awaited<ReturnType<typeof tempState>>;
let b: Awaited<ReturnType<typeof tempState>>;
const children: ChildProcess[] = [];

/** A client of the nodes' API with a tenant's token: a request to any node, its JSON answer. */
const apiAs =
  (token: string) =>
  async <T>(url: string, p: string, init: RequestInit = {}): Promise<T> => {
    const res = await fetch(`${url}${p}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    });
    const body = await res.text();
    assert.ok(res.ok, `${p}: ${res.status} ${body}`);
    return JSON.parse(body) as T;
  };

type State = Awaited<ReturnType<typeof tempState>>;

/** Stops nodes as an operator would (SIGTERM: they drain) and waits for them to exit. */
async function stopNodes(...nodes: Array<{ child: ChildProcess }>): Promise<void> {
  for (const n of nodes) {
    n.child.kill('SIGTERM');
    await exited(n.child);
  }
}

/** A node's job containers: what `runc list` shows, less its idle warm-pool members. */
async function jobContainers(state: State): Promise<string[]> {
  const ids = spawnSync('runc', ['--root', state.runcRoot, 'list', '-q'], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter(Boolean);
  const idle = await Promise.all(
    ids.map(async (id) => (await readSandboxRecord(state, id).catch(() => undefined))?.heldBy !== undefined),
  );
  return ids.filter((_, i) => !idle[i]);
}

/** Two nodes' state directories and what both read: a 2 s lease, tenant ci trusted, its token. */
async function trustedPair(t: After): Promise<{ c: State; d: State; config: string; token: string }> {
  const [c, d] = await nodeStates(t, 2);
  const config = path.join(c.root, 'config.yaml');
  writeFileSync(config, 'scheduler:\n  lease: 2s\ntenants:\n  ci: { trust: trusted }\n');
  const token = boxcarSync(['--state', c.root, '--store', pg.url, 'token', 'create', '--tenant', 'ci']);
  return { c, d, config, token };
}

/** A job's shell that a TERM ends at once (sh as PID 1 would ignore one). */
const TERM_ENDS = 'trap "exit 143" TERM;';

/** Submits `n` trusted jobs of `command` (32Mi each) to the node at `url`; their ids. */
async function submitTrusted(api: ReturnType<typeof apiAs>, url: string, n: number, command: string) {
  const ids: string[] = [];
  for (let i = 0; i < n; i++)
    ids.push(
      (
        await api<JobView>(url, '/v1/jobs', {
          method: 'POST',
          body: JSON.stringify({
            source: 'internal_repo',
            user_group: 'internal_team',
            command,
            resources: { memory: '32Mi', requests: { cpus: '10m' } },
          }),
        })
      ).id,
    );
  return ids;
}

/** The node's job containers once there are `n` of them (or after 10 s). */
async function containersOnce(state: State, n: number): Promise<string[]> {
  for (let i = 0; i < 200 && (await jobContainers(state)).length < n; i++)
    await new Promise((r) => setTimeout(r, 50));
  return jobContainers(state);
}

type After = { after: (fn: () => Promise<void>) => void };

/** `n` state directories, one per node, removed (with what they hold) after the test. */
async function nodeStates(t: After, n: 2): Promise<[State, State]>;
async function nodeStates(t: After, n: 3): Promise<[State, State, State]>;
async function nodeStates(t: After, n: number): Promise<State[]> {
  const states: State[] = [];
  for (let i = 0; i < n; i++) states.push(await tempState());
  t.after(async () => {
    for (const s of states) await s.cleanup();
  });
  return states;
}

async function serve(state: string, config: string): Promise<{ child: ChildProcess; url: string }> {
  const started = await startServe(['--state', state, '--store', pg.url, '--config', config]);
  children.push(started.child);
  return started;
}

before(async () => {
  pg = await startPostgres();
  a = await tempState();
  b = await tempState();
});
after(async () => {
  for (const c of children)
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGTERM');
      await exited(c);
    }
  const left = await leftovers(b);
  await a.cleanup();
  await b.cleanup();
  await pg.stop();
  assert.deepEqual(left, []);
});

test(
  'a node dies with its sandboxes: after its lease expires the other node runs its jobs, each once',
  { timeout: 120_000 },
  async (t) => {
    const config = path.join(a.root, 'config.yaml');
    writeFileSync(config, 'scheduler:\n  lease: 2s\ntenants:\n  ci: { trust: trusted }\n');
    const token = boxcarSync([
      '--state',
      a.root,
      '--store',
      pg.url,
      'token',
      'create',
      '--tenant',
      'ci',
      '--operator',
    ]);
    assert.match(token, /^bxc_/);
    const nodeA = await serve(a.root, config);
    const nodeB = await serve(b.root, config);
    const api = apiAs(token);
    const ids: string[] = [];
    for (let i = 0; i < JOBS; i++)
      ids.push(
        (
          await api<JobView>(nodeA.url, '/v1/jobs', {
            method: 'POST',
            body: JSON.stringify({
              name: `nd-${i}`,
              source: 'internal_repo',
              user_group: 'internal_team',
              command: 'echo start; sleep 2; echo done',
              resources: { memory: '32Mi', requests: { cpus: '10m' } },
            }),
          })
        ).id,
      );
    let onA = 0;
    for (let i = 0; i < 100 && onA === 0; i++) {
      onA = (await api<{ running: number }>(nodeA.url, '/v1/node')).running;
      if (!onA) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(onA > 0, 'node A holds jobs when it dies');

    // The machine of node A is lost: its process and its sandboxes.
    nodeA.child.kill('SIGKILL');
    await exited(nodeA.child);
    const runc = (...args: string[]) =>
      spawnSync('runc', ['--root', a.runcRoot, ...args], { encoding: 'utf8' });
    for (const id of runc('list', '-q').stdout.split('\n').filter(Boolean)) runc('delete', '--force', id);

    const done = await Promise.all(ids.map((id) => api<JobView>(nodeB.url, `/v1/jobs/${id}?wait=90s`)));
    for (const j of done) assert.equal(j.state, 'succeeded', `${j.name}: ${j.state} ${j.error ?? ''}`);

    const store = await PostgresStore.connect(pg.url);
    try {
      let requeued = 0;
      for (const id of ids) {
        const events = await store.events(id);
        assert.equal(events.filter((e) => e.to === 'succeeded').length, 1, `${id} finished once`);
        if (events.some((e) => e.to === 'queued' && e.from !== null)) requeued++;
      }
      assert.ok(requeued >= 1, 'the dead node’s jobs were requeued');
      t.diagnostic(`${onA} running on node A at its death; ${requeued} requeued and run on node B`);
    } finally {
      await store.close();
    }
    await stopNodes(nodeB);
  },
);

test(
  'a node whose clock runs 60 s ahead takes over no lease early: leases are the database’s clock',
  { timeout: 120_000 },
  async (t) => {
    const { c, d, config, token } = await trustedPair(t);
    const honest = await startServe(['--state', c.root, '--store', pg.url, '--config', config]);
    children.push(honest.child);
    const api = apiAs(token);
    const job = await api<JobView>(honest.url, '/v1/jobs', {
      method: 'POST',
      body: JSON.stringify({
        source: 'internal_repo',
        user_group: 'internal_team',
        command: 'sleep 6; echo done',
      }),
    });
    for (
      let i = 0;
      i < 200 && (await api<JobView>(honest.url, `/v1/jobs/${job.id}`)).state !== 'running';
      i++
    )
      await new Promise((r) => setTimeout(r, 50));
    // Now a node whose clock is a minute ahead joins: by its own clock every lease ran out.
    const ahead = await startServe(['--state', d.root, '--store', pg.url, '--config', config], {
      clockSkewMs: 60_000,
    });
    children.push(ahead.child);
    const done = await api<JobView>(honest.url, `/v1/jobs/${job.id}?wait=60s`);
    assert.equal(done.state, 'succeeded', done.error ?? '');
    const store = await PostgresStore.connect(pg.url);
    try {
      const events = await store.events(job.id);
      assert.deepEqual(
        events.map((e) => e.to),
        ['queued', 'starting', 'running', 'succeeded'],
        'never requeued by the node with the wrong clock, run once',
      );
    } finally {
      await store.close();
    }
    await stopNodes(ahead, honest);
    assert.deepEqual([...(await leftovers(c)), ...(await leftovers(d))], []);
  },
);

test(
  'a node paused past its lease comes back: its late writes are refused, its stale sandboxes go, each job ends once',
  { timeout: 120_000 },
  async (t) => {
    const { c, d, config, token } = await trustedPair(t);
    const logs: string[] = [];
    const paused = await startServe(['--state', c.root, '--store', pg.url, '--config', config], {
      logs: (l) => logs.push(l),
    });
    children.push(paused.child);
    const api = apiAs(token);
    // Still running when the paused node resumes.
    const ids = await submitTrusted(api, paused.url, 3, `${TERM_ENDS} sleep 8 & wait; echo done`);
    assert.equal((await containersOnce(c, 3)).length, 3, 'the node runs its jobs when it is paused');
    const other = await startServe(['--state', d.root, '--store', pg.url, '--config', config]);
    children.push(other.child);
    // Paused (SIGSTOP) for twice its lease: the other node takes its jobs over and runs them.
    paused.child.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 4500));
    paused.child.kill('SIGCONT');
    const resumedAt = Date.now();
    const store = await PostgresStore.connect(pg.url);
    t.after(() => store.close());
    // A job whose lease the other node had not taken over yet is still this node's, rightly
    // running here; the sandboxes of every other job must go.
    const stillMine = async () =>
      (await Promise.all(ids.map((id) => store.getJob(id)))).filter(
        (j) => j?.owner?.includes(`:${paused.child.pid}:`) && !isTerminal(j.state),
      ).length;
    let stale = (await jobContainers(c)).length - (await stillMine());
    for (let i = 0; i < 200 && stale > 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
      stale = (await jobContainers(c)).length - (await stillMine());
    }
    const goneMs = Date.now() - resumedAt;
    assert.ok(
      stale <= 0,
      `its stale sandboxes are gone (${(await jobContainers(c)).length} left, ${await stillMine()} still its own)`,
    );
    assert.ok(goneMs < 2000 + 2500, `gone within a lease (and the stop's grace) of resuming: ${goneMs} ms`);
    const done = await Promise.all(ids.map((id) => api<JobView>(other.url, `/v1/jobs/${id}?wait=60s`)));
    for (const j of done) assert.equal(j.state, 'succeeded', `${j.id}: ${j.state} ${j.error ?? ''}`);
    for (const id of ids) {
      const events = await store.events(id);
      assert.equal(
        events.filter((e) => e.to === 'succeeded' || e.to === 'cancelled').length,
        1,
        `${id} ended once`,
      );
    }
    assert.ok(
      logs.some((l) => /lost its claim on a job it runs/.test(l)),
      `the resumed node says it lost its jobs: ${logs.join('\n')}`,
    );
    t.diagnostic(`stale sandboxes gone ${goneMs} ms after the node resumed`);
    await stopNodes(paused, other);
    assert.deepEqual([...(await leftovers(c)), ...(await leftovers(d))], []);
  },
);

test(
  'a node killed with its sandboxes running, restarted after another node took its jobs: its start-up removes them',
  { timeout: 120_000 },
  async (t) => {
    const { c, d, config, token } = await trustedPair(t);
    const killed = await serve(c.root, config);
    const api = apiAs(token);
    const ids = await submitTrusted(api, killed.url, 2, `${TERM_ENDS} sleep 60 & wait`);
    const first = await containersOnce(c, 2);
    assert.equal(first.length, 2, 'the node runs its jobs when it is killed');
    // Only the process dies: its monitors and containers run on, as after an OOM kill of Boxcar.
    killed.child.kill('SIGKILL');
    await exited(killed.child);
    const other = await serve(d.root, config);
    const store = await PostgresStore.connect(pg.url);
    t.after(() => store.close());
    const takenOver = async () =>
      (await Promise.all(ids.map((id) => store.getJob(id)))).every(
        (j) => j?.state === 'running' && !first.includes(j.handle?.sandboxId ?? ''),
      );
    for (let i = 0; i < 200 && !(await takenOver()); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(await takenOver(), 'the other node runs both jobs again');
    assert.deepEqual(
      (await jobContainers(c)).sort(),
      [...first].sort(),
      "the killed node's containers still run",
    );

    const logs: string[] = [];
    const restarted = await startServe(['--state', c.root, '--store', pg.url, '--config', config], {
      logs: (l) => logs.push(l),
    });
    children.push(restarted.child);
    // Serving means started: the sweep is done by the time the node listens.
    assert.deepEqual(
      await jobContainers(c),
      [],
      'the restarted node removed the containers of jobs it no longer holds',
    );
    assert.ok(
      logs.some((l) => /removed sandboxes whose jobs are no longer supervised here/.test(l)),
      `it says so: ${logs.join('\n')}`,
    );
    for (const id of ids) await api(other.url, `/v1/jobs/${id}/cancel`, { method: 'POST' });
    const done = await Promise.all(ids.map((id) => api<JobView>(other.url, `/v1/jobs/${id}?wait=60s`)));
    for (const j of done) assert.equal(j.state, 'cancelled', `${j.id}: ${j.state} ${j.error ?? ''}`);
    await stopNodes(restarted, other);
    assert.deepEqual([...(await leftovers(c)), ...(await leftovers(d))], []);
  },
);

test(
  'a quota of pods: 4 over two nodes: never more than 4 of the tenant’s jobs admitted at once; a cancel outlives its node',
  { timeout: 120_000 },
  async (t) => {
    const [c, d] = await nodeStates(t, 2);
    const config = path.join(c.root, 'config.yaml');
    writeFileSync(
      config,
      [
        'scheduler:',
        '  lease: 2s',
        'tenants:',
        '  ci: { trust: trusted }',
        'quotas:',
        '  - apiVersion: v1',
        '    kind: ResourceQuota',
        '    metadata: { name: four, namespace: ci }',
        '    spec: { hard: { pods: "4" } }',
        '',
      ].join('\n'),
    );
    const token = boxcarSync(['--state', c.root, '--store', pg.url, 'token', 'create', '--tenant', 'ci']);
    const api = apiAs(token);
    const nodes = [
      await startServe(['--state', c.root, '--store', pg.url, '--config', config]),
      await startServe(['--state', d.root, '--store', pg.url, '--config', config]),
    ];
    children.push(...nodes.map((n) => n.child));
    const ids: string[] = [];
    for (let i = 0; i < 12; i++)
      ids.push(
        (
          await api<JobView>((nodes[i % 2] as (typeof nodes)[0]).url, '/v1/jobs', {
            method: 'POST',
            body: JSON.stringify({
              source: 'internal_repo',
              user_group: 'internal_team',
              command: 'sleep 2',
              resources: { memory: '32Mi', requests: { cpus: '10m' } },
            }),
          })
        ).id,
      );
    // Sampled every 100 ms from the store, as both nodes admit side by side.
    const store = await PostgresStore.connect(pg.url);
    t.after(() => store.close());
    let most = 0;
    const sampling = (async () => {
      for (;;) {
        const admitted = (await store.admittedUsage()).get('ci')?.pods ?? 0;
        most = Math.max(most, admitted);
        const left = await store.listJobs({
          tenant: 'ci',
          states: ['queued', 'starting', 'running'],
          limit: 100,
        });
        if (!left.length) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    await sampling;
    assert.ok(most <= 4, `at most 4 admitted at once across both nodes, saw ${most}`);
    assert.ok(most >= 2, `both nodes ran jobs side by side (${most} at once)`);
    for (const id of ids) assert.equal((await store.getJob(id))?.state, 'succeeded');

    // A job cancelled while it runs on a node that is then killed (with its sandboxes) ends cancelled.
    const job = await api<JobView>((nodes[0] as (typeof nodes)[0]).url, '/v1/jobs', {
      method: 'POST',
      body: JSON.stringify({ source: 'internal_repo', user_group: 'internal_team', command: 'sleep 30' }),
    });
    let owner: string | null = null;
    for (let i = 0; i < 200 && !owner; i++) {
      const j = await store.getJob(job.id);
      owner = j?.state === 'running' ? j.owner : null;
      if (!owner) await new Promise((r) => setTimeout(r, 50));
    }
    const ranOn = nodes.find(
      (n) => owner?.endsWith(`:${n.child.pid}:`) || owner?.includes(`:${n.child.pid}:`),
    );
    assert.ok(ranOn, `the job runs on one of the nodes (${owner})`);
    await store.requestCancel(job.id, 'token:test');
    ranOn.child.kill('SIGKILL');
    await exited(ranOn.child);
    const state = ranOn === nodes[0] ? c : d;
    const runc = (...args: string[]) =>
      spawnSync('runc', ['--root', state.runcRoot, ...args], { encoding: 'utf8' });
    for (const id of runc('list', '-q').stdout.split('\n').filter(Boolean)) runc('delete', '--force', id);
    const survivor = nodes.find((n) => n !== ranOn) as (typeof nodes)[0];
    const ended = await api<JobView>(survivor.url, `/v1/jobs/${job.id}?wait=30s`);
    assert.equal(ended.state, 'cancelled', `${ended.state} ${ended.error ?? ''}`);
    await stopNodes(survivor);
    // The killed node's machine is "lost" with its mounts (cleaned by the test's state); the survivor left nothing.
    assert.deepEqual(await leftovers(ranOn === nodes[0] ? d : c), []);
  },
);

test(
  'a job’s log is served by every node: the one that ran it is asked, live and whole',
  { timeout: 60_000 },
  async (t) => {
    const [c, d] = await nodeStates(t, 2);
    const config = path.join(c.root, 'config.yaml');
    writeFileSync(config, 'tenants:\n  ci: { trust: trusted }\n');
    const token = boxcarSync(['--state', c.root, '--store', pg.url, 'token', 'create', '--tenant', 'ci']);
    const api = apiAs(token);
    const nodes = [
      await startServe(['--state', c.root, '--store', pg.url, '--config', config]),
      await startServe(['--state', d.root, '--store', pg.url, '--config', config]),
    ];
    children.push(...nodes.map((n) => n.child));
    const job = await api<JobView>((nodes[0] as (typeof nodes)[0]).url, '/v1/jobs', {
      method: 'POST',
      body: JSON.stringify({
        source: 'internal_repo',
        user_group: 'internal_team',
        command: 'echo first; sleep 2; echo second',
      }),
    });
    const store = await PostgresStore.connect(pg.url);
    t.after(() => store.close());
    let owner: string | null = null;
    for (let i = 0; i < 200 && !owner; i++) {
      owner = (await store.getJob(job.id))?.owner ?? null;
      if (!owner) await new Promise((r) => setTimeout(r, 50));
    }
    // Asked of the node that did not run it.
    const other = nodes.find((n) => !owner?.includes(`:${n.child.pid}:`)) as (typeof nodes)[0];
    const live = await fetch(`${other.url}/v1/jobs/${job.id}/logs?follow=true`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(live.status, 200);
    const events = await live.text(); // to the job's end
    assert.match(events, /"text":"first\\n"/);
    assert.match(events, /"text":"second\\n"/);
    assert.match(events, /event: end/);
    const whole = await fetch(`${other.url}/v1/jobs/${job.id}/logs`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(await whole.text(), 'first\nsecond\n');
    const stranger = await fetch(`${other.url}/peer/v1/jobs/${job.id}/logs`);
    assert.equal(stranger.status, 401, 'only nodes ask nodes');
    await stopNodes(...nodes);
    assert.deepEqual([...(await leftovers(c)), ...(await leftovers(d))], []);
  },
);

test(
  '100 jobs over 3 nodes, one killed, restarted and killed again: none lost, none recorded twice',
  { timeout: 240_000 },
  async (t) => {
    const states = await nodeStates(t, 3);
    const config = path.join((states[0] as (typeof states)[0]).root, 'config.yaml');
    writeFileSync(config, 'scheduler:\n  lease: 2s\n  max_attempts: 5\ntenants:\n  ci: { trust: trusted }\n');
    const root = (i: number) => (states[i] as (typeof states)[0]).root;
    const token = boxcarSync(['--state', root(0), '--store', pg.url, 'token', 'create', '--tenant', 'ci']);
    const api = apiAs(token);
    const start = async (i: number) => {
      const n = await startServe(['--state', root(i), '--store', pg.url, '--config', config]);
      children.push(n.child);
      return n;
    };
    const nodes = [await start(0), await start(1), await start(2)];
    const ids: string[] = [];
    for (let i = 0; i < 100; i++)
      ids.push(
        (
          await api<JobView>((nodes[i % 3] as (typeof nodes)[0]).url, '/v1/jobs', {
            method: 'POST',
            body: JSON.stringify({
              source: 'internal_repo',
              user_group: 'internal_team',
              command: 'sleep 2',
              resources: { memory: '16Mi', requests: { cpus: '10m', memory: '8Mi' } },
            }),
          })
        ).id,
      );
    const store = await PostgresStore.connect(pg.url);
    t.after(() => store.close());
    /** Waits (up to 5 s) until node 2 runs some of the jobs: a kill then loses work in flight. */
    const node2Busy = async (): Promise<boolean> => {
      const pid = (nodes[2] as (typeof nodes)[0]).child.pid;
      for (let i = 0; i < 200; i++) {
        const running = await store.listJobs({ tenant: 'ci', states: ['starting', 'running'], limit: 200 });
        if (running.some((j) => j.owner?.includes(`:${pid}:`))) return true;
        await new Promise((r) => setTimeout(r, 25));
      }
      return false;
    };
    let killedBusy = 0;
    // Node 2 is killed (with its sandboxes, as a lost machine), restarted, and killed again.
    const kill = async () => {
      if (await node2Busy()) killedBusy++;
      const n = nodes[2] as (typeof nodes)[0];
      n.child.kill('SIGKILL');
      await exited(n.child);
      // The machine is lost: its monitors die with it (no exit status is written for its jobs).
      spawnSync('pkill', ['-9', '-f', `${root(2)}/`]);
      const runc = (...args: string[]) =>
        spawnSync('runc', ['--root', (states[2] as (typeof states)[0]).runcRoot, ...args], {
          encoding: 'utf8',
        });
      for (const id of runc('list', '-q').stdout.split('\n').filter(Boolean)) runc('delete', '--force', id);
    };
    await kill();
    nodes[2] = await start(2);
    await kill();
    const done = await Promise.all(
      ids.map((id) => api<JobView>((nodes[0] as (typeof nodes)[0]).url, `/v1/jobs/${id}?wait=180s`)),
    );
    const notDone = done
      .filter((j) => j.state !== 'succeeded')
      .map((j) => `${j.id}: ${j.state} ${j.error ?? ''}`);
    assert.deepEqual(notDone, [], 'none lost');
    let twice = 0;
    let requeued = 0;
    for (const id of ids) {
      const events = await store.events(id);
      if (events.filter((e) => e.to === 'succeeded').length !== 1) twice++;
      if (events.some((e) => e.to === 'queued' && e.from !== null)) requeued++;
    }
    assert.equal(twice, 0, 'no result recorded twice');
    assert.ok(killedBusy >= 1 && requeued >= 1, 'the lost node held jobs, run again elsewhere');
    t.diagnostic(`${requeued} of 100 jobs were requeued after a node was lost`);
    await stopNodes(...nodes.slice(0, 2));
    assert.deepEqual(
      [
        ...(await leftovers(states[0] as (typeof states)[0])),
        ...(await leftovers(states[1] as (typeof states)[0])),
      ],
      [],
    );
  },
);
