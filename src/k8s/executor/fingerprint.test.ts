import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import type { Fingerprint } from '../../runtimes/runtime.js';
import { executorObjects } from '../testing/cluster-scenarios.js';
import { testCluster, testNode, TEST_NAMES } from '../testing/test-cluster.js';
import { BOXCAR_MAIN } from '../../testing/serve-process.js';

/**
 * `boxcar doctor` with executor: kubernetes, as a process: the cluster's runtimes are judged (a
 * class exists, a Ready node carries its nodeSelector), not this host's.
 */
test('boxcar doctor judges the cluster: a class without a Ready node of its selector is unusable, saying which', async (t) => {
  const objects = executorObjects(TEST_NAMES);
  // gVisor's nodes are labelled; no Ready node carries the label.
  for (const o of objects)
    if (o.kind === 'RuntimeClass' && o.metadata?.name === 'gvisor')
      Object.assign(o, { scheduling: { nodeSelector: { 'boxcar.dev/sandbox': 'gvisor' } } });
  const { dir, kubeconfig } = await testCluster(t, {
    objects,
    nodes: [testNode('plain'), testNode('sandbox-down', false, { 'boxcar.dev/sandbox': 'gvisor' })],
  });
  await writeFile(
    path.join(dir, 'config.yaml'),
    stringify({ executor: 'kubernetes', kubernetes: { kubeconfig } }),
  );
  const { stdout } = await promisify(execFile)(process.execPath, [
    BOXCAR_MAIN,
    '--state',
    path.join(dir, 'state'),
    '--config',
    path.join(dir, 'config.yaml'),
    'doctor',
    '--json',
  ]);
  const fps = new Map((JSON.parse(stdout) as Fingerprint[]).map((f) => [f.runtime, f]));
  assert.equal(fps.get('runc')?.usable, true, fps.get('runc')?.reason);
  assert.match(fps.get('runc')?.reason ?? '', /the nodes' default runtime on 1 Ready node/);
  assert.equal(fps.get('firecracker')?.usable, true);
  assert.equal(fps.get('firecracker')?.details.runtimeClass, 'firecracker');
  assert.deepEqual(
    [fps.get('gvisor')?.usable, fps.get('gvisor')?.reason],
    [
      false,
      "no Ready node carries boxcar.dev/sandbox=gvisor (RuntimeClass gvisor's nodeSelector): its Pods would stay Pending",
    ],
  );
  assert.equal(fps.get('wasm')?.usable, false);
  assert.match(fps.get('wasm')?.reason ?? '', /kubernetes executor runs OCI images only/);
});
