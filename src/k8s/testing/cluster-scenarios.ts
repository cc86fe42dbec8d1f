/**
 * The Kubernetes scenarios, one list for both runs: against the test API server (always) and
 * against a real cluster (when KUBECONFIG is set). Two kinds: admission (`SCENARIOS`, the API
 * server's answers to Pods) and the executor (`EXECUTOR_SCENARIOS`, Boxcar running jobs as Pods).
 *
 * Admission: each scenario talks through the real client library to
 * a cluster that holds what `boxcar k8s manifests` makes for one tenant (its namespace, Pod
 * Security restricted, a quota `jobs`: pods 3, requests.memory 1Gi, limits.memory 2Gi) and two
 * RuntimeClasses: one with Boxcar's microVM overhead (224Mi), one with scheduling and no overhead.
 * What the two servers say differently (a schema failure's text) is asserted only as far as both
 * agree.
 */

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ApiException,
  type CoreV1Api,
  type KubernetesObject,
  type NodeV1Api,
  type V1Pod,
} from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { openBoxcar, type Boxcar } from '../../boxcar.js';
import { JobSpec } from '../../jobs/spec.js';
import { nodeId } from '../../lib/owner.js';
import { silentLogger } from '../../observability/logger.js';
import { DEFAULT_POLICY_FILE } from '../../policy/load-policy.js';
import { runLocalJob } from '../../runner/local.js';
import { reconcileOrphans } from '../../runner/reconcile.js';
import { JOB_LABEL, MANAGED_BY, NODE_LABEL, RUNTIME_LABEL, SANDBOX_LABEL, TENANT_LABEL } from '../labels.js';
import type { FakeApiServer } from './api-server.js';
import { SCRIPT_ENV, type KubeletScript } from './fake-kubelet.js';
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

// The executor: jobs run by Boxcar's own path (openBoxcar with `executor: kubernetes`, then
// runLocalJob: what `boxcar run` does), each in a cluster holding what `boxcar k8s manifests`
// makes for the tenant `local` (runLocalJob's) with a quota `jobs` of requests.memory 1Gi, and
// the two RuntimeClasses. Jobs carry two descriptions of what they do: their command, which a
// real cluster runs, and a FAKE_KUBELET script, which the test server's kubelet plays; the two
// say the same. Scenarios that need faults only the test server makes (dropped log streams, a
// sandbox that fails, throttling) are skipped on a real cluster, saying so.

export interface ExecutorCluster {
  /** A kubeconfig file for Boxcar's config. */
  kubeconfig: string;
  namespacePrefix: string;
  /** This run's RuntimeClass names. */
  classes: { firecracker: string; gvisor: string };
  /** What the nodes run for a job that names no image (a real cluster pulls it). */
  defaultImage: string;
  core: CoreV1Api;
  node: NodeV1Api;
  /** The operator deletes a RuntimeClass. */
  deleteRuntimeClass(name: string): Promise<void>;
  /** Faults only the test API server can make; absent for a real cluster. */
  faults?: Pick<
    FakeApiServer,
    'dropLogStreams' | 'failSandboxes' | 'throttle' | 'dropWatches' | 'compact' | 'requests'
  >;
}

export const EXECUTOR_TENANT = 'local';
const EXECUTOR_QUOTA: Hard = {
  name: 'jobs',
  tenant: EXECUTOR_TENANT,
  pods: 20,
  requestsMemoryBytes: 2 ** 30,
};

function executorSettings(c: Pick<ExecutorCluster, 'namespacePrefix' | 'classes'>) {
  return {
    namespace_prefix: c.namespacePrefix,
    runtime_classes: { firecracker: { name: c.classes.firecracker }, gvisor: { name: c.classes.gvisor } },
  };
}

/**
 * What `boxcar k8s manifests` prints for the executor's cluster, as objects; `handler`, when
 * given, is both classes' CRI handler (a real cluster's nodes may have neither kata-fc nor runsc).
 */
export function executorObjects(
  c: Pick<ExecutorCluster, 'namespacePrefix' | 'classes'>,
  handler?: string,
): KubernetesObject[] {
  const settings = executorSettings(c);
  if (handler) for (const rc of Object.values(settings.runtime_classes)) Object.assign(rc, { handler });
  const text = renderManifests(
    manifests({
      kubernetes: KubernetesSettings.parse({ image: 'boxcar:test', ...settings }),
      tenants: TenantsConfig.parse({ [EXECUTOR_TENANT]: { trust: 'trusted' } }),
      quotas: [EXECUTOR_QUOTA],
      webhookTenants: [],
    }),
  );
  return parseAllDocuments(text).map((d) => d.toJS() as KubernetesObject);
}

/** The default policy with a breaker that judges after 3 starts (20 by default), so a test sees it trip. */
async function testPolicy(dir: string): Promise<string> {
  const text = await readFile(DEFAULT_POLICY_FILE, 'utf8');
  const changed = text.replace(/min_samples: \d+/, 'min_samples: 3');
  assert.notEqual(changed, text, 'the default policy has a breaker min_samples to lower');
  const file = path.join(dir, 'policy.yaml');
  await writeFile(file, changed);
  return file;
}

interface TestContextLike {
  after(fn: () => Promise<void>): void;
}

/** A Boxcar with `executor: kubernetes` on the cluster, in a state directory of its own. */
async function executorBoxcar(
  c: ExecutorCluster,
  t: TestContextLike,
  opts: { defaultImage?: string; state?: string } = {},
): Promise<Boxcar> {
  const dir = opts.state ?? (await mkdtemp(path.join(os.tmpdir(), 'bx-k8s-')));
  const config = path.join(dir, 'config.yaml');
  await writeFile(
    config,
    stringify({
      executor: 'kubernetes',
      policy: await testPolicy(dir),
      kubernetes: {
        ...executorSettings(c),
        kubeconfig: c.kubeconfig,
        default_image: opts.defaultImage ?? c.defaultImage,
      },
    }),
  );
  const box = await openBoxcar({ state: dir, config }, silentLogger());
  t.after(async () => {
    await box.close();
    if (!opts.state) await rm(dir, { recursive: true, force: true });
  });
  return box;
}

/** A job for `boxcar run`: its command for a real cluster, its script for the test server's kubelet. */
function job(command: string, script: Partial<KubeletScript>, more: Record<string, unknown> = {}) {
  const { env, ...rest } = more as { env?: Record<string, string> };
  return JobSpec.parse({
    command,
    timeout: '2m',
    env: { ...env, [SCRIPT_ENV]: JSON.stringify(script) },
    ...rest,
  });
}

const untrusted = { source: 'external_pr', user_group: 'external_contributor' };

/** The job's Pods, as the API server lists them by the job's label. */
async function podsOf(c: ExecutorCluster, jobId: string): Promise<V1Pod[]> {
  const namespace = `${c.namespacePrefix}${EXECUTOR_TENANT}`;
  return (await c.core.listNamespacedPod({ namespace, labelSelector: `${JOB_LABEL}=${jobId}` })).items;
}

/** Runs a job; `whileRunning` looks at the cluster once its process runs. */
async function runJob(box: Boxcar, spec: JobSpec, whileRunning?: (jobId: string) => Promise<void>) {
  const id = randomUUID();
  let looked: Promise<void> | undefined;
  const result = await runLocalJob(box, spec, { onStartDone: () => (looked = whileRunning?.(id)) }, { id });
  await looked;
  return result;
}

export interface ExecutorScenario {
  name: string;
  /** Uses faults only the test API server makes: skipped on a real cluster. */
  needsFaults?: boolean;
  run(c: ExecutorCluster, t: TestContextLike): Promise<void>;
}

const LINES = Array.from({ length: 400 }, (_, i) => `line ${i + 1} of the job's output`);

export const EXECUTOR_SCENARIOS: ExecutorScenario[] = [
  {
    name: 'an untrusted job runs in a Pod of RuntimeClass firecracker, a trusted one in a Pod with none',
    async run(c, t) {
      const box = await executorBoxcar(c, t);
      const pods: V1Pod[] = [];
      const look = async (id: string) => void pods.push(...(await podsOf(c, id)));
      const spec = (more: Record<string, unknown>) =>
        job('echo hi; sleep 1', { lines: ['hi'], lineEveryMs: 300 }, more);
      const bad = await runJob(box, spec(untrusted), look);
      const good = await runJob(box, spec({ source: 'internal_repo' }), look);
      for (const r of [bad, good]) {
        assert.equal(r.record.state, 'succeeded', r.record.error ?? '');
        assert.equal(r.output, 'hi\n');
      }
      assert.equal(bad.record.runtime, 'firecracker');
      assert.equal(good.record.runtime, 'runc');
      const [u, tr] = pods;
      assert.equal(u?.spec?.runtimeClassName, c.classes.firecracker);
      assert.equal(tr?.spec?.runtimeClassName, undefined);
      for (const [pod, r] of [
        [u, bad],
        [tr, good],
      ] as const) {
        assert.equal(pod?.spec?.automountServiceAccountToken, false);
        assert.equal(pod?.spec?.activeDeadlineSeconds, 120);
        assert.equal(pod?.metadata?.labels?.[TENANT_LABEL], EXECUTOR_TENANT);
        assert.equal(pod?.metadata?.labels?.[JOB_LABEL], r.record.id);
        assert.deepEqual(plain(pod?.spec?.containers[0]?.resources), {
          requests: { memory: '256Mi', cpu: '100m' },
          limits: { memory: '256Mi', cpu: '1' },
        });
      }
      // The Pods go with their jobs.
      assert.deepEqual(await podsOf(c, bad.record.id), []);
      assert.deepEqual(await podsOf(c, good.record.id), []);
    },
  },
  {
    name: 'the log arrives whole, in order and once, through three dropped streams',
    needsFaults: true,
    async run(c, t) {
      const box = await executorBoxcar(c, t);
      // Cut mid-line: 1000 bytes is not a line boundary of these lines with their timestamps.
      c.faults?.dropLogStreams(3, 1000);
      const r = await runJob(
        box,
        job(`for i in $(seq 1 ${LINES.length}); do echo "line $i of the job's output"; done`, {
          lines: LINES,
          // Long enough (2 s) for three drops and their resumptions while it still prints.
          lineEveryMs: 5,
        }),
      );
      assert.equal(r.record.state, 'succeeded', r.record.error ?? '');
      assert.equal(r.output, LINES.map((l) => `${l}\n`).join(''));
      const reads = c.faults?.requests.filter((q) => q.endsWith('/log')).length ?? 0;
      assert.ok(reads >= 4, `the log was read ${reads} times: three drops need at least four reads`);
    },
  },
  {
    name: "an over-quota job is refused by Boxcar in Kubernetes' words, the class's overhead counted, before any Pod is sent",
    async run(c, t) {
      const box = await executorBoxcar(c, t);
      // 900Mi fits the quota's 1Gi alone; with firecracker's 224Mi overhead it does not.
      const r = await runJob(box, job('true', {}, { ...untrusted, resources: { memory: '900Mi' } }));
      assert.equal(r.record.state, 'error');
      assert.match(
        r.record.error ?? '',
        /^pods "boxcar-[0-9a-f-]+" is forbidden: exceeded quota: jobs, requested: requests\.memory=1124Mi, used: requests\.memory=0, limited: requests\.memory=1Gi$/,
      );
      assert.equal(r.record.infraFailure, false, 'a refusal is no sandbox failure');
      assert.deepEqual(await podsOf(c, r.record.id), []);
      if (c.faults)
        assert.equal(c.faults.requests.filter((q) => q.startsWith('POST') && q.endsWith('/pods')).length, 0);
    },
  },
  {
    name: 'a missing RuntimeClass is a sandbox failure: it trips the breaker, and untrusted jobs go to gvisor with the reason',
    async run(c, t) {
      const box = await executorBoxcar(c, t);
      const spec = job('echo ok', { lines: ['ok'] }, untrusted);
      const first = await runJob(box, spec);
      assert.equal(first.record.runtime, 'firecracker');
      assert.equal(first.record.state, 'succeeded', first.record.error ?? '');
      await c.deleteRuntimeClass(c.classes.firecracker);
      // Until the breaker has seen enough starts (min_samples 3, the first one's success included).
      let after = await runJob(box, spec);
      let failed = 0;
      for (; after.record.runtime === 'firecracker' && failed < 5; failed++) {
        assert.equal(after.record.state, 'error');
        assert.equal(after.record.infraFailure, true);
        assert.match(
          after.record.error ?? '',
          new RegExp(`RuntimeClass "${c.classes.firecracker}" not found`),
        );
        after = await runJob(box, spec);
      }
      assert.equal(failed, 2, 'the third start of the window trips it: two failures of three');
      assert.equal(after.record.runtime, 'gvisor');
      assert.equal(after.record.state, 'succeeded', after.record.error ?? '');
      assert.equal(after.output, 'ok\n');
      assert.deepEqual(after.record.decision.fellBack, { from: 'firecracker', reason: 'breaker_open' });
      assert.match(after.record.decision.reasons.join('; '), /firecracker_failure_rate/);
    },
  },
  {
    name: 'FailedCreatePodSandBox is a sandbox failure the breaker counts',
    needsFaults: true,
    async run(c, t) {
      const box = await executorBoxcar(c, t);
      c.faults?.failSandboxes(c.classes.firecracker);
      const r = await runJob(box, job('true', {}, untrusted));
      assert.equal(r.record.state, 'error');
      assert.equal(r.record.infraFailure, true);
      assert.match(r.record.error ?? '', /FailedCreatePodSandBox: Failed to create pod sandbox/);
      assert.deepEqual(await podsOf(c, r.record.id), []);
      const starts = await box.store.recentStarts('firecracker', 10);
      assert.deepEqual(
        starts.map((s) => s.ok),
        [false],
      );
    },
  },
  {
    name: 'the exit code and OOMKilled come from the container status',
    async run(c, t) {
      const box = await executorBoxcar(c, t);
      const failed = await runJob(box, job('echo bye; exit 3', { lines: ['bye'], exitCode: 3 }));
      assert.equal(failed.record.state, 'failed');
      assert.equal(failed.record.exitCode, 3);
      assert.equal(failed.record.oomKilled, false);
      assert.equal(failed.output, 'bye\n');
      const oom = await runJob(
        box,
        job(
          'tail /dev/zero',
          { oomKilled: true },
          { resources: { memory: '16Mi', requests: { memory: '16Mi' } } },
        ),
      );
      assert.equal(oom.record.state, 'oom');
      assert.equal(oom.record.exitCode, 137);
      assert.equal(oom.record.oomKilled, true);
    },
  },
  {
    name: 'a job past its timeout is stopped (its Pod deleted) and ends timed out',
    async run(c, t) {
      const box = await executorBoxcar(c, t);
      const started = Date.now();
      const r = await runJob(
        box,
        job(
          'echo started; sleep 60',
          { lines: ['started', 'never'], lineEveryMs: 30_000 },
          { timeout: '2s' },
        ),
      );
      assert.equal(r.record.state, 'timeout', r.record.error ?? '');
      assert.equal(r.record.timedOut, true);
      assert.ok(Date.now() - started < 30_000, 'stopped at its timeout, not at its end');
      assert.deepEqual(await podsOf(c, r.record.id), []);
    },
  },
  {
    name: 'an image the nodes cannot pull fails the job at once with ErrImagePull, not as a sandbox failure',
    async run(c, t) {
      const box = await executorBoxcar(c, t, { defaultImage: 'registry.invalid/boxcar/none:1' });
      const started = Date.now();
      const r = await runJob(box, job('true', { pullFails: 'ErrImagePull' }));
      assert.equal(r.record.state, 'error');
      assert.equal(r.record.infraFailure, false);
      assert.match(
        r.record.error ?? '',
        /^image registry\.invalid\/boxcar\/none:1: the cluster's node could not pull it \((ErrImagePull|ImagePullBackOff): /,
      );
      assert.ok(Date.now() - started < 60_000, 'fails fast, not at the job timeout');
      assert.deepEqual(await podsOf(c, r.record.id), []);
    },
  },
  {
    name: "a trusted job's secrets are in a Secret of its own while it runs and gone after; an untrusted job gets none",
    async run(c, t) {
      const box = await executorBoxcar(c, t);
      const name = 'BOXCAR_SECRET_K8S_TEST_TOKEN';
      process.env[name] = 's3cr3t-value';
      t.after(async () => void delete process.env[name]);
      const namespace = `${c.namespacePrefix}${EXECUTOR_TENANT}`;
      const secretsOf = async (id: string) =>
        (await c.core.listNamespacedSecret({ namespace, labelSelector: `${JOB_LABEL}=${id}` })).items;
      const seen: Record<string, string[]> = {};
      const look = async (id: string) => {
        seen[id] = (await secretsOf(id)).map((s) => Object.keys({ ...s.data, ...s.stringData }).join(','));
      };
      const spec = (more: Record<string, unknown>) =>
        job('sleep 1', { lineEveryMs: 500, lines: ['.'] }, { secrets: ['K8S_TEST_TOKEN'], ...more });
      const trusted = await runJob(box, spec({ source: 'internal_repo' }), look);
      const other = await runJob(box, spec(untrusted), look);
      assert.equal(trusted.record.state, 'succeeded', trusted.record.error ?? '');
      assert.equal(other.record.state, 'succeeded', other.record.error ?? '');
      assert.deepEqual(seen[trusted.record.id], ['K8S_TEST_TOKEN']);
      assert.deepEqual(seen[other.record.id], []);
      assert.deepEqual(await secretsOf(trusted.record.id), []);
    },
  },
  {
    name: "a restart deletes this node's Pods that no job holds, and keeps another node's",
    async run(c, t) {
      const box = await executorBoxcar(c, t);
      const namespace = `${c.namespacePrefix}${EXECUTOR_TENANT}`;
      const stray = (name: string, node: string): V1Pod => ({
        ...jobPod(name, '64Mi'),
        metadata: {
          name,
          labels: {
            ...MANAGED_BY,
            [NODE_LABEL]: node,
            [RUNTIME_LABEL]: 'runc',
            [SANDBOX_LABEL]: randomUUID(),
          },
        },
      });
      await c.core.createNamespacedPod({ namespace, body: stray('stray-mine', nodeId(box.paths.root)) });
      // Left for the cluster's clean-up (the namespace goes after the test).
      await c.core.createNamespacedPod({ namespace, body: stray('stray-theirs', randomUUID()) });
      await reconcileOrphans(box);
      // A real cluster deletes with a grace period of its own; the test server at once.
      await eventually(async () => {
        const now = (await c.core.listNamespacedPod({ namespace })).items.map((p) => p.metadata?.name);
        assert.deepEqual(now, ['stray-theirs']);
      });
    },
  },
  {
    name: 'throttling (429 with Retry-After) and watches that drop or expire (410 Gone) do not fail a job',
    needsFaults: true,
    async run(c, t) {
      const box = await executorBoxcar(c, t);
      const started = Date.now();
      c.faults?.throttle(2, 1);
      const running = runJob(
        box,
        job('sleep 2; exit 4', { lines: ['a', 'b', 'c'], lineEveryMs: 600, exitCode: 4 }),
        async () => {
          c.faults?.dropWatches();
          await sleep(300);
          c.faults?.compact();
        },
      );
      const r = await running;
      assert.equal(r.record.state, 'failed', r.record.error ?? '');
      assert.equal(r.record.exitCode, 4);
      assert.equal(r.output, 'a\nb\nc\n');
      assert.ok(Date.now() - started >= 2000, 'two 429s with Retry-After: 1 were waited out');
    },
  },
];
