import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiException, CoreV1Api, KubeConfig, NodeV1Api } from '@kubernetes/client-node';
import { clusterObjects, SCENARIOS, type ClusterUnderTest } from './cluster-scenarios.js';
import { FakeApiServer } from './api-server.js';

/**
 * The admission scenarios against the test API server, driven by the real client library
 * (@kubernetes/client-node) through a generated kubeconfig; a server of its own for each.
 */
async function fakeCluster(t: { after(fn: () => Promise<void>): void }): Promise<ClusterUnderTest> {
  const server = new FakeApiServer();
  server.load(clusterObjects('boxcar-'));
  const url = await server.listen();
  t.after(() => server.close());
  const kc = new KubeConfig();
  kc.loadFromString(server.kubeconfig(url));
  return {
    core: kc.makeApiClient(CoreV1Api),
    node: kc.makeApiClient(NodeV1Api),
    namespace: 'boxcar-team-a',
    classes: { overhead: 'firecracker', scheduling: 'gvisor', missing: 'kata-qemu' },
  };
}

for (const s of SCENARIOS) test(s.name, async (t) => s.run(await fakeCluster(t)));

test("a body off the schema: the test server's own words, naming the field", async (t) => {
  const { core, namespace } = await fakeCluster(t);
  const body = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'bad' },
    spec: { containers: [{ name: 'job', image: 'busybox', resources: { limits: { memory: '64 Mi' } } }] },
  };
  await assert.rejects(core.createNamespacedPod({ namespace, body }), (err) => {
    assert.ok(err instanceof ApiException);
    assert.match(
      String(err.body),
      /Pod in body is invalid: .*limits\/memory must match format \\"quantity\\"/,
    );
    return true;
  });
});
