import { test } from 'node:test';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CoreV1Api, KubeConfig, NodeV1Api } from '@kubernetes/client-node';
import { EXECUTOR_SCENARIOS, executorObjects, type ExecutorCluster } from './cluster-scenarios.js';
import { FakeApiServer } from './api-server.js';

/**
 * The executor scenarios against the test API server: Boxcar (executor: kubernetes) reaches it
 * through the real client library and a generated kubeconfig file; a server of its own for each,
 * with one Ready node.
 */
async function fakeExecutorCluster(t: { after(fn: () => Promise<void>): void }): Promise<ExecutorCluster> {
  const names = { namespacePrefix: 'boxcar-', classes: { firecracker: 'firecracker', gvisor: 'gvisor' } };
  const server = new FakeApiServer();
  server.load([
    ...executorObjects(names),
    {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'node-1' },
      status: { conditions: [{ type: 'Ready', status: 'True' }] },
    } as { kind: string },
  ]);
  const url = await server.listen();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-kubeconfig-'));
  t.after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  const kubeconfig = path.join(dir, 'kubeconfig');
  await writeFile(kubeconfig, server.kubeconfig(url));
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  return {
    ...names,
    kubeconfig,
    defaultImage: 'busybox:1.37',
    core: kc.makeApiClient(CoreV1Api),
    node: kc.makeApiClient(NodeV1Api),
    deleteRuntimeClass: async (name) => server.deleteRuntimeClass(name),
    faults: server,
  };
}

for (const s of EXECUTOR_SCENARIOS) test(s.name, async (t) => s.run(await fakeExecutorCluster(t), t));
