import { test } from 'node:test';
import { CoreV1Api, KubeConfig, NodeV1Api } from '@kubernetes/client-node';
import { EXECUTOR_SCENARIOS, type ExecutorCluster } from './cluster-scenarios.js';
import { testCluster, TEST_NAMES } from './test-cluster.js';

/**
 * The executor scenarios against the test API server: Boxcar (executor: kubernetes) reaches it
 * through the real client library and a generated kubeconfig file; a server of its own for each,
 * with one Ready node.
 */
async function fakeExecutorCluster(t: { after(fn: () => Promise<void>): void }): Promise<ExecutorCluster> {
  const { server, kubeconfig } = await testCluster(t);
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  return {
    ...TEST_NAMES,
    kubeconfig,
    defaultImage: 'busybox:1.37',
    core: kc.makeApiClient(CoreV1Api),
    node: kc.makeApiClient(NodeV1Api),
    deleteRuntimeClass: async (name) => server.deleteRuntimeClass(name),
    faults: server,
  };
}

for (const s of EXECUTOR_SCENARIOS) test(s.name, async (t) => s.run(await fakeExecutorCluster(t), t));
