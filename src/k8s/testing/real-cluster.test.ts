import { test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  KubernetesObjectApi,
  NodeV1Api,
  type KubernetesObject,
} from '@kubernetes/client-node';
import {
  clusterObjects,
  EXECUTOR_SCENARIOS,
  executorObjects,
  SCENARIOS,
  type ClusterUnderTest,
  type ExecutorCluster,
} from './cluster-scenarios.js';

/**
 * The scenarios (admission and the executor) against a real cluster, when KUBECONFIG names one
 * (its user must be able to create namespaces, RuntimeClasses, Pods and Secrets). Each scenario gets a namespace of its own, and
 * the RuntimeClasses are created under names of their own, so nothing of the cluster's is
 * touched; all of it is deleted afterwards. Never run on Boxcar's own machines: no Kubernetes
 * API server can be installed there.
 */
const KUBECONFIG = process.env.KUBECONFIG;
const skip = KUBECONFIG
  ? false
  : 'KUBECONFIG is not set, so there is no cluster to run against; the same scenarios run against the test API server (api-server.test.ts, executor.test.ts)';

type After = { after(fn: () => Promise<void>): void };

/** Creates the objects (namespaces, quotas, RuntimeClasses of them) for one test, deleted after it. */
async function createFor(t: After, kc: KubeConfig, all: KubernetesObject[]): Promise<void> {
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const wanted = all.filter((o) => ['Namespace', 'ResourceQuota', 'RuntimeClass'].includes(o.kind ?? ''));
  const created: KubernetesObject[] = [];
  t.after(async () => {
    for (const o of created.reverse())
      await objects.delete(o, undefined, undefined, 0).catch((err: unknown) => {
        // A scenario may have deleted it itself (the RuntimeClass the breaker scenario removes).
        if (!(err instanceof ApiException && err.code === 404)) throw err;
      });
  });
  for (const o of wanted) created.push(await objects.create(o));
}

/** The quota admits nothing until its controller has written status.hard. */
async function quotaReady(core: CoreV1Api, namespace: string): Promise<void> {
  for (let i = 0; ; i++) {
    const q = await core.readNamespacedResourceQuota({ name: 'jobs', namespace });
    if (q.status?.hard) return;
    if (i === 120) throw new Error(`quota jobs in ${namespace} has no status after a minute`);
    await sleep(500);
  }
}

async function realCluster(t: After): Promise<ClusterUnderTest> {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const prefix = `boxcar-e2e-${randomBytes(4).toString('hex')}-`;
  const all = clusterObjects(prefix);
  // RuntimeClasses are cluster-wide: this run's own names, never the cluster's firecracker or gvisor.
  for (const o of all)
    if (o.kind === 'RuntimeClass' && o.metadata) o.metadata.name = `${prefix}${o.metadata.name}`;
  await createFor(t, kc, all);
  const core = kc.makeApiClient(CoreV1Api);
  const namespace = `${prefix}team-a`;
  await quotaReady(core, namespace);
  return {
    core,
    node: kc.makeApiClient(NodeV1Api),
    namespace,
    classes: { overhead: `${prefix}firecracker`, scheduling: `${prefix}gvisor`, missing: `${prefix}missing` },
  };
}

for (const s of SCENARIOS) test(s.name, { skip }, async (t) => s.run(await realCluster(t)));

/**
 * The executor's cluster: its RuntimeClasses under this run's names, with the CRI handler of
 * BOXCAR_E2E_HANDLER (default runc, which containerd and CRI-O have by default: these scenarios
 * test routing, Pods and the executor, not the sandboxes' isolation). Boxcar reads the
 * cluster's kubeconfig as written out here from KUBECONFIG's current context.
 */
async function realExecutorCluster(t: After): Promise<ExecutorCluster> {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const prefix = `boxcar-e2e-${randomBytes(4).toString('hex')}-`;
  const names = {
    namespacePrefix: prefix,
    classes: { firecracker: `${prefix}firecracker`, gvisor: `${prefix}gvisor` },
  };
  await createFor(t, kc, executorObjects(names, process.env.BOXCAR_E2E_HANDLER ?? 'runc'));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-kubeconfig-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const kubeconfig = path.join(dir, 'kubeconfig');
  await writeFile(kubeconfig, kc.exportConfig(), { mode: 0o600 });
  const core = kc.makeApiClient(CoreV1Api);
  const node = kc.makeApiClient(NodeV1Api);
  await quotaReady(core, `${prefix}local`);
  return {
    ...names,
    kubeconfig,
    defaultImage: process.env.BOXCAR_E2E_IMAGE ?? 'busybox:1.37',
    core,
    node,
    deleteRuntimeClass: async (name) => void (await node.deleteRuntimeClass({ name })),
  };
}

for (const s of EXECUTOR_SCENARIOS)
  test(
    s.name,
    {
      skip:
        skip ||
        (s.needsFaults && 'it needs a fault only the test API server makes (executor.test.ts runs it there)'),
    },
    async (t) => s.run(await realExecutorCluster(t), t),
  );
