import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sleep } from '../lib/exec.js';
import { leftovers, tempState } from '../testing/harness.js';
import { freePort } from '../testing/ports.js';
import { boxcarSync, exited, startServe } from '../testing/serve-process.js';

/**
 * A real Prometheus (Debian's) on loopback scrapes a real `boxcar serve` with an operator's
 * token, and PromQL over its HTTP API counts the jobs the node ran.
 */
test('Prometheus scrapes boxcar serve; a PromQL query over its API returns the number of jobs run', async (t) => {
  const state = await tempState();
  t.after(() => state.cleanup());
  const global = ['--state', state.root];
  const operator = boxcarSync([...global, 'token', 'create', '--operator']);
  const tenant = boxcarSync([...global, 'token', 'create', '--tenant', 'team-a']);
  const serve = await startServe(global);
  t.after(async () => {
    serve.child.kill('SIGTERM');
    await exited(serve.child);
  });

  const jobs = 3;
  for (let i = 0; i < jobs; i++) {
    const post = await fetch(`${serve.url}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: ['true'], source: 'internal_repo', user_group: 'internal_team' }),
    });
    assert.equal(post.status, 201, await post.clone().text());
    const { id } = (await post.json()) as { id: string };
    const done = await fetch(`${serve.url}/v1/jobs/${id}?wait=60s`, {
      headers: { authorization: `Bearer ${tenant}` },
    });
    assert.equal(((await done.json()) as { state: string }).state, 'succeeded');
  }

  const port = await freePort();
  const config = path.join(state.root, 'prometheus.yml');
  await writeFile(
    config,
    [
      'global: { scrape_interval: 1s }',
      'scrape_configs:',
      '  - job_name: boxcar',
      `    authorization: { credentials: ${operator} }`,
      `    static_configs: [{ targets: ['${new URL(serve.url).host}'] }]`,
      '',
    ].join('\n'),
  );
  const prometheus = spawn(
    'prometheus',
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${path.join(state.root, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  prometheus.stderr.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  t.after(async () => {
    prometheus.kill('SIGTERM');
    await exited(prometheus);
  });

  const query = encodeURIComponent('sum(boxcar_jobs_finished_total{state="succeeded"})');
  let value: string | undefined;
  for (let i = 0; i < 300 && value !== String(jobs); i++) {
    await sleep(100);
    const r = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${query}`).catch(() => undefined);
    if (!r?.ok) continue;
    const body = (await r.json()) as { data: { result: Array<{ value: [number, string] }> } };
    value = body.data.result[0]?.value[1];
  }
  assert.equal(value, String(jobs), `Prometheus answered ${value}; its log: ${log}`);
  const targets = (await (await fetch(`http://127.0.0.1:${port}/api/v1/targets`)).json()) as {
    data: { activeTargets: Array<{ health: string; lastError: string }> };
  };
  assert.deepEqual(
    targets.data.activeTargets.map((a) => [a.health, a.lastError]),
    [['up', '']],
    'the scrape itself is healthy: parsed, authorized',
  );
  for (const child of [prometheus, serve.child]) {
    child.kill('SIGTERM');
    await exited(child);
  }
  assert.deepEqual(await leftovers(state), []);
});
