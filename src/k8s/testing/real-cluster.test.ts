import { test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CoreV1Api,
  KubeConfig,
  KubernetesObjectApi,
  NodeV1Api,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { clusterObjects, SCENARIOS, type ClusterUnderTest } from './admission-scenarios.js';

/**
 * The admission scenarios against a real cluster, when KUBECONFIG names one (its user must be
 * able to create namespaces and RuntimeClasses). Each scenario gets a namespace of its own, and
 * the RuntimeClasses are created under names of their own, so nothing of the cluster's is
 * touched; all of it is deleted afterwards. Never run on Boxcar's own machines: no Kubernetes
 * API server can be installed there.
 */
const KUBECONFIG = process.env.KUBECONFIG;
const skip = KUBECONFIG
  ? false
  : 'KUBECONFIG is not set, so there is no cluster to run against; the same scenarios run against the test API server (api-server.test.ts)';

async function realCluster(t: { after(fn: () => Promise<void>): void }): Promise<ClusterUnderTest> {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const prefix = `boxcar-e2e-${randomBytes(4).toString('hex')}-`;
  const wanted = clusterObjects(prefix).filter((o) =>
    ['Namespace', 'ResourceQuota', 'RuntimeClass'].includes(o.kind ?? ''),
  );
  // RuntimeClasses are cluster-wide: this run's own names, never the cluster's firecracker or gvisor.
  for (const o of wanted)
    if (o.kind === 'RuntimeClass' && o.metadata) o.metadata.name = `${prefix}${o.metadata.name}`;
  const created: KubernetesObject[] = [];
  t.after(async () => {
    for (const o of created.reverse()) await objects.delete(o, undefined, undefined, 0);
  });
  for (const o of wanted) created.push(await objects.create(o));
  const core = kc.makeApiClient(CoreV1Api);
  const namespace = `${prefix}team-a`;
  // The quota admits nothing until its controller has written status.hard.
  for (let i = 0; ; i++) {
    const q = await core.readNamespacedResourceQuota({ name: 'jobs', namespace });
    if (q.status?.hard) break;
    if (i === 120) throw new Error(`quota jobs in ${namespace} has no status after a minute`);
    await sleep(500);
  }
  return {
    core,
    node: kc.makeApiClient(NodeV1Api),
    namespace,
    classes: { overhead: `${prefix}firecracker`, scheduling: `${prefix}gvisor`, missing: `${prefix}missing` },
  };
}

for (const s of SCENARIOS) test(s.name, { skip }, async (t) => s.run(await realCluster(t)));
