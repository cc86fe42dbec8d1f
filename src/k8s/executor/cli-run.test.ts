import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { testCluster } from '../testing/test-cluster.js';
import { SCRIPT_ENV } from '../testing/fake-kubelet.js';
import { BOXCAR_MAIN } from '../../testing/serve-process.js';

/**
 * `boxcar run` with executor: kubernetes, as a process: an untrusted job file runs in a Pod of
 * RuntimeClass firecracker, its output live, its exit code the command's; the process exits
 * by itself when the job has ended (nothing of the client library keeps it alive).
 */
test('boxcar run (executor: kubernetes) exits with the Pod container’s exit code and prints its output', async (t) => {
  const { server, dir, kubeconfig } = await testCluster(t);
  await writeFile(
    path.join(dir, 'config.yaml'),
    stringify({
      executor: 'kubernetes',
      kubernetes: { kubeconfig, default_image: 'busybox:1.37' },
    }),
  );
  await writeFile(
    path.join(dir, 'job.yaml'),
    stringify({
      name: 'from-a-fork',
      command: 'echo hello; echo world; exit 3',
      source: 'external_pr',
      env: { [SCRIPT_ENV]: JSON.stringify({ lines: ['hello', 'world'], exitCode: 3 }) },
    }),
  );
  const child = spawn(
    process.execPath,
    [
      BOXCAR_MAIN,
      '--state',
      path.join(dir, 'state'),
      '--config',
      path.join(dir, 'config.yaml'),
      'run',
      '--json',
      '-f',
      path.join(dir, 'job.yaml'),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 3, stderr);
  const result = JSON.parse(stdout) as { runtime: string; state: string; exitCode: number; output: string };
  assert.deepEqual(
    [result.runtime, result.state, result.exitCode, result.output],
    ['firecracker', 'failed', 3, 'hello\nworld\n'],
  );
  assert.deepEqual(server.allPods(), []);
  assert.ok(
    server.requests.some((r) => r === 'POST /api/v1/namespaces/boxcar-local/pods'),
    'the job ran as a Pod in the tenant local’s namespace',
  );
});
