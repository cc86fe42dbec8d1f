import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { sleep } from '../../lib/exec.js';
import { MANAGED_BY, NODE_LABEL, RUNTIME_LABEL, SANDBOX_LABEL } from '../labels.js';
import { EXECUTOR_TENANT } from '../testing/cluster-scenarios.js';
import { testCluster } from '../testing/test-cluster.js';
import { SCRIPT_ENV } from '../testing/fake-kubelet.js';
import { boxcarSync, exited, startServe } from '../../testing/serve-process.js';

/**
 * `boxcar serve` with executor: kubernetes, killed (-9) while its job's Pod runs: the Pod goes
 * on without it; the restarted node finds the Pod by the job's handle, follows it to its end
 * (exit code, the whole log) and deletes it, and deletes the Pods of its own that no job holds.
 */
test('a restarted boxcar serve re-attaches to the Pod its job runs in, and removes its stray Pods', async (t) => {
  const { server, url, dir, kubeconfig } = await testCluster(t);
  const servers: Array<Awaited<ReturnType<typeof startServe>>> = [];
  t.after(async () => {
    for (const s of servers) {
      s.child.kill('SIGKILL');
      await exited(s.child);
    }
  });
  await writeFile(
    path.join(dir, 'config.yaml'),
    stringify({
      executor: 'kubernetes',
      kubernetes: { kubeconfig, default_image: 'busybox:1.37' },
    }),
  );
  const global = ['--state', path.join(dir, 'state'), '--config', path.join(dir, 'config.yaml')];
  const token = boxcarSync([...global, 'token', 'create', '--tenant', EXECUTOR_TENANT]);
  const api = (base: string, p: string, init: RequestInit = {}) =>
    fetch(`${base}${p}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    });

  const first = await startServe(global);
  servers.push(first);
  const lines = ['one', 'two', 'three', 'four', 'five'];
  const post = await api(first.url, '/v1/jobs', {
    method: 'POST',
    body: JSON.stringify({
      command: 'for w in one two three four five; do echo $w; sleep 0.6; done; exit 5',
      env: { [SCRIPT_ENV]: JSON.stringify({ lines, lineEveryMs: 600, exitCode: 5 }) },
      source: 'internal_repo',
      user_group: 'internal_team',
    }),
  });
  assert.equal(post.status, 201, await post.clone().text());
  const { id } = (await post.json()) as { id: string };
  for (let state = ''; state !== 'running'; await sleep(50)) {
    state = ((await (await api(first.url, `/v1/jobs/${id}`)).json()) as { state: string }).state;
    assert.ok(['queued', 'starting', 'running'].includes(state), `job ${state} before it ran`);
  }
  first.child.kill('SIGKILL');
  await exited(first.child);
  const [pod] = server.allPods();
  assert.ok(pod, 'the Pod goes on without the Boxcar that made it');

  // A Pod of this node's that no job holds (its job's end was recorded, its delete was lost).
  const node = (await readFile(path.join(dir, 'state', 'node-id'), 'utf8')).trim();
  const stray = structuredClone(pod);
  stray.metadata = {
    name: 'boxcar-stray',
    labels: { ...MANAGED_BY, [NODE_LABEL]: node, [RUNTIME_LABEL]: 'runc', [SANDBOX_LABEL]: randomUUID() },
  };
  delete stray.status;
  const created = await fetch(`${url}/api/v1/namespaces/boxcar-${EXECUTOR_TENANT}/pods`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(stray),
  });
  assert.equal(created.status, 201, await created.text());

  const second = await startServe(global);
  servers.push(second);
  const done = (await (await api(second.url, `/v1/jobs/${id}?wait=30s`)).json()) as {
    state: string;
    exitCode: number;
  };
  assert.deepEqual([done.state, done.exitCode], ['failed', 5]);
  const log = await (await api(second.url, `/v1/jobs/${id}/logs`)).text();
  assert.equal(log, lines.map((l) => `${l}\n`).join(''));
  assert.deepEqual(server.allPods(), [], "the job's Pod is deleted when it ends, the stray one at the start");
});
