import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import type { Fingerprint } from '../../runtimes/runtime.js';
import { executorObjects } from '../testing/cluster-scenarios.js';
import { FakeApiServer } from '../testing/api-server.js';

const CLI = fileURLToPath(new URL('../../cli/main.js', import.meta.url));

/**
 * `boxcar doctor` with executor: kubernetes, as a process: the cluster's runtimes are judged (a
 * class exists, a Ready node carries its nodeSelector), not this host's.
 */
test('boxcar doctor judges the cluster: a class without a Ready node of its selector is unusable, saying which', async (t) => {
  const server = new FakeApiServer();
  const names = { namespacePrefix: 'boxcar-', classes: { firecracker: 'firecracker', gvisor: 'gvisor' } };
  const objects = executorObjects(names);
  // gVisor's nodes are labelled; no Ready node carries the label.
  for (const o of objects)
    if (o.kind === 'RuntimeClass' && o.metadata?.name === 'gvisor')
      Object.assign(o, { scheduling: { nodeSelector: { 'boxcar.dev/sandbox': 'gvisor' } } });
  const node = (name: string, ready: string, labels: Record<string, string>) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels },
    status: { conditions: [{ type: 'Ready', status: ready }] },
  });
  server.load([
    ...objects,
    node('plain', 'True', {}),
    node('sandbox-down', 'False', { 'boxcar.dev/sandbox': 'gvisor' }),
  ]);
  const url = await server.listen();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-doctor-'));
  t.after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  await writeFile(path.join(dir, 'kubeconfig'), server.kubeconfig(url));
  await writeFile(
    path.join(dir, 'config.yaml'),
    stringify({ executor: 'kubernetes', kubernetes: { kubeconfig: path.join(dir, 'kubeconfig') } }),
  );
  const { stdout } = await promisify(execFile)(process.execPath, [
    CLI,
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
