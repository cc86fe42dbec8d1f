import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiException, CoreV1Api, KubeConfig, NodeV1Api, type V1Pod } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { manifests, renderManifests } from '../manifests.js';
import { KubernetesSettings } from '../settings.js';
import { restrictedContainerSecurityContext, restrictedPodSecurityContext } from '../security.js';
import { TenantsConfig } from '../../tenants/tenant-config.js';
import { FakeApiServer } from './api-server.js';

/**
 * The test API server, driven by the real client library (@kubernetes/client-node) through a
 * generated kubeconfig, loaded with what `boxcar k8s manifests` prints: what Kubernetes'
 * admission would do to a job's Pod is what it does here.
 */
async function cluster(t: { after(fn: () => Promise<void>): void }) {
  const server = new FakeApiServer();
  const text = renderManifests(
    manifests({
      kubernetes: KubernetesSettings.parse({
        image: 'boxcar:test',
        runtime_classes: {
          gvisor: {
            node_selector: { 'boxcar.dev/sandbox': 'gvisor' },
            tolerations: [{ key: 'boxcar.dev/sandbox', operator: 'Exists', effect: 'NoSchedule' }],
          },
        },
      }),
      tenants: TenantsConfig.parse({ 'team-a': { trust: 'trusted' } }),
      webhookTenants: [],
      quotas: [
        {
          name: 'jobs',
          tenant: 'team-a',
          pods: 3,
          requestsMemoryBytes: 2 ** 30,
          limitsMemoryBytes: 2 * 2 ** 30,
        },
      ],
    }),
  );
  server.load(parseAllDocuments(text).map((d) => d.toJS()));
  const url = await server.listen();
  t.after(() => server.close());
  const kc = new KubeConfig();
  kc.loadFromString(server.kubeconfig(url));
  return { server, core: kc.makeApiClient(CoreV1Api), node: kc.makeApiClient(NodeV1Api) };
}

const NS = 'boxcar-team-a';
const jobPod = (name: string, memory: string, runtimeClassName?: string): V1Pod => ({
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
});

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

test('RuntimeClasses and ResourceQuotas read back as the manifests made them', async (t) => {
  const { core, node } = await cluster(t);
  const rc = await node.readRuntimeClass({ name: 'firecracker' });
  assert.equal(rc.handler, 'firecracker');
  assert.deepEqual(rc.overhead?.podFixed, { memory: '224Mi' });
  assert.deepEqual(
    (await node.listRuntimeClass()).items.map((c) => c.metadata?.name),
    ['firecracker', 'gvisor'],
  );
  const q = await core.readNamespacedResourceQuota({ name: 'jobs', namespace: NS });
  assert.deepEqual(q.status?.used, { pods: '0', 'requests.memory': '0', 'limits.memory': '0' });
});

test('a Pod is admitted with its class’s overhead injected, and charged to the quota with it', async (t) => {
  const { core } = await cluster(t);
  const pod = await core.createNamespacedPod({
    namespace: NS,
    body: jobPod('job-1', '256Mi', 'firecracker'),
  });
  assert.deepEqual(pod.spec?.overhead, { memory: '224Mi' });
  assert.equal(pod.status?.phase, 'Pending');
  const q = await core.readNamespacedResourceQuota({ name: 'jobs', namespace: NS });
  assert.deepEqual(q.status?.used, { pods: '1', 'requests.memory': '480Mi', 'limits.memory': '480Mi' });
  const listed = await core.listNamespacedPod({ namespace: NS, labelSelector: 'boxcar.dev/job=job-1' });
  assert.deepEqual(
    listed.items.map((p) => p.metadata?.name),
    ['job-1'],
  );
  await core.deleteNamespacedPod({ name: 'job-1', namespace: NS });
  const after = await core.readNamespacedResourceQuota({ name: 'jobs', namespace: NS });
  assert.deepEqual(after.status?.used, { pods: '0', 'requests.memory': '0', 'limits.memory': '0' });
});

test("refusals: a missing RuntimeClass, an overhead of the Pod's own, the quota — 403s in Kubernetes' words", async (t) => {
  const { core, server } = await cluster(t);
  server.deleteRuntimeClass('firecracker');
  assert.deepEqual(
    await refusal(core.createNamespacedPod({ namespace: NS, body: jobPod('a', '64Mi', 'firecracker') })),
    {
      code: 403,
      message: 'pods "a" is forbidden: pod rejected: RuntimeClass "firecracker" not found',
    },
  );
  const own = jobPod('b', '64Mi', 'gvisor');
  own.spec!.overhead = { memory: '10Mi' };
  assert.deepEqual(await refusal(core.createNamespacedPod({ namespace: NS, body: own })), {
    code: 403,
    message:
      'pods "b" is forbidden: pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead',
  });
  await core.createNamespacedPod({ namespace: NS, body: jobPod('c', '768Mi', 'gvisor') });
  assert.deepEqual(await refusal(core.createNamespacedPod({ namespace: NS, body: jobPod('d', '512Mi') })), {
    code: 403,
    message:
      'pods "d" is forbidden: exceeded quota: jobs, requested: requests.memory=512Mi, used: requests.memory=768Mi, limited: requests.memory=1Gi',
  });
});

test('the same name twice is a 409; a missing Pod a 404; a body off the schema a 400; Pod Security enforced', async (t) => {
  const { core } = await cluster(t);
  await core.createNamespacedPod({ namespace: NS, body: jobPod('job-1', '64Mi') });
  assert.deepEqual(
    await refusal(core.createNamespacedPod({ namespace: NS, body: jobPod('job-1', '64Mi') })),
    {
      code: 409,
      message: 'pods "job-1" already exists',
    },
  );
  assert.deepEqual(await refusal(core.deleteNamespacedPod({ name: 'gone', namespace: NS })), {
    code: 404,
    message: 'pods "gone" not found',
  });
  const bad = jobPod('bad', '64Mi');
  bad.spec!.containers[0]!.resources = { limits: { memory: '64 Mi' } };
  const r = await refusal(core.createNamespacedPod({ namespace: NS, body: bad }));
  assert.equal(r.code, 400);
  assert.match(r.message, /Pod in body is invalid: .*limits\/memory must match format "quantity"/);
  const root = jobPod('root', '64Mi');
  root.spec!.securityContext = {};
  root.spec!.containers[0]!.securityContext = { runAsUser: 0 };
  const ps = await refusal(core.createNamespacedPod({ namespace: NS, body: root }));
  assert.equal(ps.code, 403);
  assert.match(
    ps.message,
    /^pods "root" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false/,
  );
});

test("the class's scheduling is merged into the stored Pod", async (t) => {
  const { core } = await cluster(t);
  const pod = await core.createNamespacedPod({ namespace: NS, body: jobPod('job-1', '64Mi', 'gvisor') });
  assert.deepEqual(pod.spec?.nodeSelector, { 'boxcar.dev/sandbox': 'gvisor' });
  assert.deepEqual(
    pod.spec?.tolerations?.map((x) => ({ ...x })),
    [{ key: 'boxcar.dev/sandbox', operator: 'Exists', effect: 'NoSchedule' }],
  );
  assert.equal(pod.spec?.overhead, undefined);
});
