import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { leftovers, tempState, TEST_CONFIG } from '../../testing/harness.js';
import { recordedSandboxes } from '../sandbox-ledger.js';
import { jobHostname } from '../shared/oci-spec.js';
import { sleep } from '../../lib/exec.js';
import { boxcarSync, exited, startServe } from '../../testing/serve-process.js';
import { openBoxcar } from '../../boxcar.js';
import { silentLogger } from '../../observability/logger.js';
import { reconcileOrphans } from '../../runner/reconcile.js';
import {
  neutralView,
  poolFilled as filled,
  recoversMidTakeOver,
  SANDBOX_VIEW,
  warmPoolBoxcar,
} from '../../testing/warm-pool.js';

/**
 * runc's warm pool for real: containers made ahead, each taken over by exactly one job, which
 * must not be able to tell (its command is PID 1, its limits, hostname and environment are its
 * own, nothing of the pool is in its files, fds or mounts), and none left behind.
 */
type Box = Awaited<ReturnType<typeof warmPoolBoxcar>>['box'];
let box: Box;

const TRUSTED = { runtime: 'runc', source: 'internal_repo', user_group: 'internal_team' };

/** A runc job's view: the common one, and its cgroup limits as it reads them itself. */
const VIEW = [
  ...SANDBOX_VIEW,
  'echo "mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"',
  'echo "pids=$(cat /sys/fs/cgroup/pids/pids.max)"',
  'echo "cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"',
].join('; ');

const poolFilled = () => filled(box, 'runc');

let pooled: Awaited<ReturnType<typeof warmPoolBoxcar>>;

before(async () => {
  pooled = await warmPoolBoxcar('runc');
  box = pooled.box;
});

after(async () => assert.deepEqual(await pooled.finish(), [], 'closing the pool destroyed its containers'));

test('a job takes over a pooled container and cannot tell: the same view as a container made for it', async () => {
  const spec = (name: string) => ({
    ...TRUSTED,
    name,
    command: ['sh', '-c', VIEW],
    env: { GREETING: 'hello' },
    resources: { memory: '96Mi', cpus: '0.5', pids: 77 },
  });
  // The first job of its shape finds no pooled container: it is made for it, and fills the pool.
  const cold = await box.runJob(spec('view'));
  assert.equal(cold.record.state, 'succeeded', cold.output);
  assert.notEqual(cold.record.handle?.attributes.fromWarmPool, true);
  await poolFilled();
  const warm = await box.runJob(spec('view'));
  assert.equal(warm.record.state, 'succeeded', warm.output);
  assert.equal(warm.record.handle?.attributes.fromWarmPool, true, 'the second took the pooled container');
  // Each job has a hostname and a trace of its own; everything else it sees is the same.
  assert.equal(neutralView(warm.output), neutralView(cold.output));
  assert.match(warm.output, new RegExp(`^host=${jobHostname('view', warm.record.id)}$`, 'm'));
  assert.match(warm.output, /^pid1=sh -c /m);
  assert.match(warm.output, /^fds=0 1 2 3 $/m, 'nothing of the pool is open in the job');
  assert.match(warm.output, new RegExp(`^mem=${96 * 2 ** 20}$`, 'm'));
  assert.match(warm.output, /^pids=77$/m);
  assert.match(warm.output, /^cpu=50000$/m);
  assert.match(warm.output, /GREETING=hello/);
  assert.ok((warm.record.peakMemoryBytes ?? 0) > 0);
});

test('a pooled job: exit code, output, OOM kill at its own limit, a missing command', async () => {
  const shape = { ...TRUSTED, resources: { memory: '64Mi' } };
  await box.runJob({ ...shape, command: ['true'] });
  await poolFilled();
  const failed = await box.runJob({ ...shape, command: ['sh', '-c', 'echo out; echo err >&2; exit 3'] });
  assert.equal(failed.record.handle?.attributes.fromWarmPool, true);
  assert.equal(failed.record.exitCode, 3);
  assert.match(failed.output, /out\nerr\n|err\nout\n/);
  await poolFilled();
  const oom = await box.runJob({
    ...shape,
    command: ['sh', '-c', 'head -c 200m /dev/zero | tail > /dev/null'],
  });
  assert.equal(oom.record.handle?.attributes.fromWarmPool, true);
  assert.equal(oom.record.oomKilled, true, `${oom.record.state} ${oom.output}`);
  await poolFilled();
  const missing = await box.runJob({ ...shape, command: ['no-such-command'] });
  assert.equal(missing.record.exitCode, 127);
  assert.match(missing.output, /cannot run the job's command: no-such-command/);
});

test('a pooled container of a process that was killed is removed by the next start', async () => {
  const state = await tempState();
  try {
    const config = path.join(state.root, 'config.yaml');
    await writeFile(config, `${TEST_CONFIG}\nwarm_pools:\n  runc: 1\ntenants:\n  ci: { trust: trusted }\n`);
    const token = boxcarSync([
      '--state',
      state.root,
      '--config',
      config,
      'token',
      'create',
      '--tenant',
      'ci',
      '--operator',
    ]);
    // A serving node fills its pool after its first job; then it is killed.
    const node = await startServe(['--state', state.root, '--config', config]);
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const posted = await fetch(`${node.url}/v1/jobs`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ source: 'internal_repo', user_group: 'internal_team', command: 'true' }),
    });
    const body = await posted.text();
    assert.ok(posted.ok, body);
    const { id } = JSON.parse(body) as { id: string };
    const done = (await (await fetch(`${node.url}/v1/jobs/${id}?wait=60s`, { headers })).json()) as {
      state: string;
    };
    assert.equal(done.state, 'succeeded');
    for (let i = 0; i < 200 && (await recordedSandboxes(state)).length < 1; i++) await sleep(50);
    assert.equal((await recordedSandboxes(state)).length, 1, 'an idle pooled container is recorded');
    // Operators see it, with the memory it holds, on /v1/node and in the metrics.
    type Node = { runtimeStatus: { runc: { warmPool: { idle: Array<{ memoryBytes: number }> } } } };
    const status = (await (await fetch(`${node.url}/v1/node`, { headers })).json()) as Node;
    const [idle] = status.runtimeStatus.runc.warmPool.idle;
    assert.ok(idle && idle.memoryBytes > 0, JSON.stringify(status.runtimeStatus.runc));
    const metrics = await (await fetch(`${node.url}/metrics`, { headers })).text();
    assert.match(metrics, /^boxcar_warm_pool_idle\{runtime="runc"\} 1$/m);
    assert.match(metrics, /^boxcar_warm_pool_idle_memory_bytes\{runtime="runc"\} [1-9]\d*$/m);
    node.child.kill('SIGKILL');
    await exited(node.child);
    assert.notDeepEqual(await leftovers(state), [], 'its container outlived it');
    // Any command's start reconciles (`boxcar run`, `serve`): the container is the dead process's.
    const next = await openBoxcar({ state: state.root, config }, silentLogger());
    await reconcileOrphans(next);
    await next.close();
    assert.deepEqual(await leftovers(state), []);
  } finally {
    await state.cleanup();
  }
});

test('a crash between a pooled take-over and its start: recovery finds it created, and its start runs the job', async () => {
  await poolFilled();
  await recoversMidTakeOver(box, 'runc', { ...TRUSTED, resources: { memory: '64Mi' } });
});
