/**
 * Admission scenarios, one list for both runs: against the test API server (always) and against
 * a real cluster (when KUBECONFIG is set). Each scenario talks through the real client library to
 * a cluster that holds what `boxcar k8s manifests` makes for one tenant (its namespace, Pod
 * Security restricted, a quota `jobs`: pods 3, requests.memory 1Gi, limits.memory 2Gi) and two
 * RuntimeClasses: one with Boxcar's microVM overhead (224Mi), one with scheduling and no overhead.
 * What the two servers say differently (a schema failure's text) is asserted only as far as both
 * agree.
 */

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ApiException,
  type CoreV1Api,
  type KubernetesObject,
  type NodeV1Api,
  type V1Pod,
} from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { manifests, renderManifests } from '../manifests.js';
import { KubernetesSettings } from '../settings.js';
import { restrictedContainerSecurityContext, restrictedPodSecurityContext } from '../security.js';
import type { Hard } from '../../tenants/quota.js';
import { TenantsConfig } from '../../tenants/tenant-config.js';

export interface ClusterUnderTest {
  core: CoreV1Api;
  node: NodeV1Api;
  /** The tenant's namespace. */
  namespace: string;
  /** RuntimeClass names: with the microVM's overhead, with scheduling, and one that does not exist. */
  classes: { overhead: string; scheduling: string; missing: string };
}

const TENANT = 'team-a';
const QUOTA: Hard = {
  name: 'jobs',
  tenant: TENANT,
  pods: 3,
  requestsMemoryBytes: 2 ** 30,
  limitsMemoryBytes: 2 * 2 ** 30,
};
const SANDBOX_SELECTOR = { 'boxcar.dev/sandbox': 'gvisor' };
const SANDBOX_TOLERATION = {
  key: 'boxcar.dev/sandbox',
  operator: 'Exists' as const,
  effect: 'NoSchedule' as const,
};

/**
 * What `boxcar k8s manifests` prints for the tenant, read back as objects: every run starts from
 * these (each scenario in a cluster, or a namespace, of its own: they count against one quota).
 */
export function clusterObjects(namespacePrefix: string): KubernetesObject[] {
  const text = renderManifests(
    manifests({
      kubernetes: KubernetesSettings.parse({
        image: 'boxcar:test',
        namespace_prefix: namespacePrefix,
        runtime_classes: { gvisor: { node_selector: SANDBOX_SELECTOR, tolerations: [SANDBOX_TOLERATION] } },
      }),
      tenants: TenantsConfig.parse({ [TENANT]: { trust: 'trusted' } }),
      quotas: [QUOTA],
      webhookTenants: [],
    }),
  );
  return parseAllDocuments(text).map((d) => d.toJS() as KubernetesObject);
}

function jobPod(name: string, memory: string, runtimeClassName?: string): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, labels: { 'boxcar.dev/job': name } },
    spec: {
      runtimeClassName,
      automountServiceAccountToken: false,
      restartPolicy: 'Never',
      securityContext: restrictedPodSecurityContext(),
      containers: [
        {
          name: 'job',
          image: 'busybox',
          command: ['true'],
          resources: { requests: { memory, cpu: '100m' }, limits: { memory, cpu: '1' } },
          securityContext: restrictedContainerSecurityContext(),
        },
      ],
    },
  };
}

/** The API server's refusal, as the client library hands it over. */
async function refusal(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ApiException, String(err));
    return { code: err.code, message: (JSON.parse(err.body as string) as { message: string }).message };
  }
  assert.fail('the request was accepted');
}

/** A real cluster's quota controller releases usage on its own schedule; the test server at once. */
async function eventually(check: () => Promise<void>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(500);
    }
  }
}

const plain = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

export interface Scenario {
  name: string;
  run(c: ClusterUnderTest): Promise<void>;
}

export const SCENARIOS: Scenario[] = [
  {
    name: 'the RuntimeClass and the quota read back as the manifests made them',
    async run({ core, node, namespace, classes }) {
      const rc = await node.readRuntimeClass({ name: classes.overhead });
      assert.deepEqual(rc.overhead?.podFixed, { memory: '224Mi' });
      const q = await core.readNamespacedResourceQuota({ name: 'jobs', namespace });
      assert.deepEqual(plain(q.status?.hard), {
        pods: '3',
        'requests.memory': '1Gi',
        'limits.memory': '2Gi',
      });
      assert.deepEqual(plain(q.status?.used), { pods: '0', 'requests.memory': '0', 'limits.memory': '0' });
    },
  },
  {
    name: "a Pod is admitted with its class's overhead injected, and charged to the quota with it",
    async run({ core, namespace, classes }) {
      const pod = await core.createNamespacedPod({
        namespace,
        body: jobPod('job-1', '256Mi', classes.overhead),
      });
      assert.deepEqual(pod.spec?.overhead, { memory: '224Mi' });
      const q = await core.readNamespacedResourceQuota({ name: 'jobs', namespace });
      assert.deepEqual(plain(q.status?.used), {
        pods: '1',
        'requests.memory': '480Mi',
        'limits.memory': '480Mi',
      });
      const listed = await core.listNamespacedPod({ namespace, labelSelector: 'boxcar.dev/job=job-1' });
      assert.deepEqual(
        listed.items.map((p) => p.metadata?.name),
        ['job-1'],
      );
      await core.deleteNamespacedPod({ name: 'job-1', namespace, gracePeriodSeconds: 0 });
      await eventually(async () => {
        const after = await core.readNamespacedResourceQuota({ name: 'jobs', namespace });
        assert.deepEqual(plain(after.status?.used), {
          pods: '0',
          'requests.memory': '0',
          'limits.memory': '0',
        });
      });
    },
  },
  {
    name: "a class's scheduling is merged into the Pod",
    async run({ core, namespace, classes }) {
      const pod = await core.createNamespacedPod({
        namespace,
        body: jobPod('job-2', '64Mi', classes.scheduling),
      });
      assert.deepEqual(pod.spec?.nodeSelector, SANDBOX_SELECTOR);
      assert.deepEqual(plain(pod.spec?.tolerations), [SANDBOX_TOLERATION]);
      assert.equal(pod.spec?.overhead, undefined);
    },
  },
  {
    name: "refusals in Kubernetes' words: a missing RuntimeClass, an overhead of the Pod's own, the quota",
    async run({ core, namespace, classes }) {
      assert.deepEqual(
        await refusal(core.createNamespacedPod({ namespace, body: jobPod('a', '64Mi', classes.missing) })),
        {
          code: 403,
          message: `pods "a" is forbidden: pod rejected: RuntimeClass "${classes.missing}" not found`,
        },
      );
      const own = jobPod('b', '64Mi', classes.scheduling);
      own.spec = { ...own.spec!, overhead: { memory: '10Mi' } };
      assert.deepEqual(await refusal(core.createNamespacedPod({ namespace, body: own })), {
        code: 403,
        message:
          'pods "b" is forbidden: pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead',
      });
      await core.createNamespacedPod({ namespace, body: jobPod('c', '768Mi', classes.scheduling) });
      assert.deepEqual(await refusal(core.createNamespacedPod({ namespace, body: jobPod('d', '512Mi') })), {
        code: 403,
        message:
          'pods "d" is forbidden: exceeded quota: jobs, requested: requests.memory=512Mi, used: requests.memory=768Mi, limited: requests.memory=1Gi',
      });
    },
  },
  {
    name: 'a name taken is a 409, a missing Pod a 404, a body off the schema a 400, Pod Security enforced',
    async run({ core, namespace, classes }) {
      await core.createNamespacedPod({ namespace, body: jobPod('job-3', '64Mi') });
      assert.deepEqual(
        await refusal(core.createNamespacedPod({ namespace, body: jobPod('job-3', '64Mi') })),
        {
          code: 409,
          message: 'pods "job-3" already exists',
        },
      );
      assert.deepEqual(await refusal(core.deleteNamespacedPod({ name: 'gone', namespace })), {
        code: 404,
        message: 'pods "gone" not found',
      });
      const bad = jobPod('bad', '64Mi');
      bad.spec!.containers[0]!.resources = { limits: { memory: '64 Mi' } };
      assert.equal((await refusal(core.createNamespacedPod({ namespace, body: bad }))).code, 400);
      const root = jobPod('root', '64Mi');
      root.spec = { ...root.spec!, securityContext: {} };
      root.spec.containers[0]!.securityContext = { runAsUser: 0 };
      const ps = await refusal(core.createNamespacedPod({ namespace, body: root }));
      assert.equal(ps.code, 403);
      assert.match(
        ps.message,
        /^pods "root" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false/,
      );
      // The RuntimeClass plugin mutates, so it answers before Pod Security validates.
      root.spec.runtimeClassName = classes.missing;
      assert.deepEqual(await refusal(core.createNamespacedPod({ namespace, body: root })), {
        code: 403,
        message: `pods "root" is forbidden: pod rejected: RuntimeClass "${classes.missing}" not found`,
      });
    },
  },
];
