import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { KubeConfig } from '@kubernetes/client-node';
import { Pod } from 'kubernetes-models/v1';
import { JobSpec } from '../../jobs/spec.js';
import { unpulledImage } from '../../images/image.js';
import { executorObjects } from '../testing/cluster-scenarios.js';
import { FakeApiServer } from '../testing/api-server.js';
import { SCRIPT_ENV } from '../testing/fake-kubelet.js';
import { restrictedViolations } from '../testing/pod-security.js';
import { silentLogger } from '../../observability/logger.js';
import type { SandboxRequest } from '../../runtimes/runtime.js';
import { KubeCluster } from './cluster.js';
import { KubernetesDriver } from './driver.js';
import { jobPod } from './pod.js';

const names = { namespacePrefix: 'boxcar-', classes: { firecracker: 'firecracker', gvisor: 'gvisor' } };

function request(env: Record<string, string> = {}, more: Record<string, unknown> = {}): SandboxRequest {
  const sandboxId = randomUUID();
  return {
    jobId: randomUUID(),
    sandboxId,
    spec: JobSpec.parse({ command: 'echo hi', env, ...more }),
    image: unpulledImage(''),
    tenant: 'local',
    trust: 'trusted',
    secrets: {},
    logPath: `/nonexistent/${sandboxId}.log`,
  };
}

/** A cluster on a test API server holding the executor's objects, and that server. */
async function clusterAndServer(t: {
  after(fn: () => Promise<void>): void;
}): Promise<{ cluster: KubeCluster; server: FakeApiServer }> {
  const server = new FakeApiServer();
  server.load(executorObjects(names));
  const url = await server.listen();
  t.after(() => server.close());
  const kc = new KubeConfig();
  kc.loadFromString(server.kubeconfig(url));
  return { cluster: new KubeCluster(kc, silentLogger()), server };
}

const cluster = async (t: { after(fn: () => Promise<void>): void }) => (await clusterAndServer(t)).cluster;

const driver = (c: KubeCluster) =>
  new KubernetesDriver('gvisor', {
    cluster: c,
    runtimeClassName: 'gvisor',
    overheadBytes: 0,
    namespaceOf: (tenant) => `boxcar-${tenant}`,
    defaultImage: 'busybox:1.37',
    node: () => 'node-of-the-test',
    usageEveryMs: 50,
    logger: silentLogger(),
  });

test("a job's Pod passes the schema and the restricted profile, with the job's sizes and names", () => {
  const req = request({}, { resources: { memory: '128Mi', cpus: '500m', tmp: '32Mi' }, timeout: '90s' });
  const pod = jobPod(
    req,
    {
      namespace: 'boxcar-local',
      name: 'boxcar-x',
      runtimeClassName: 'gvisor',
      node: 'n',
      defaultImage: 'busybox:1.37',
    },
    'gvisor',
  );
  new Pod(pod as never).validate();
  assert.deepEqual(restrictedViolations(pod.spec as never), []);
  assert.equal(pod.spec?.activeDeadlineSeconds, 90);
  assert.equal(pod.spec?.containers[0]?.image, 'busybox:1.37');
  assert.deepEqual(pod.spec?.containers[0]?.command, ['sh', '-c', 'echo hi']);
  assert.deepEqual(
    pod.spec?.volumes?.map((v) => [v.name, v.emptyDir?.sizeLimit]),
    [
      ['tmp', '32Mi'],
      ['workspace', '256Mi'],
    ],
  );
});

test('a new Boxcar process finds a running Pod by its handle alone: recover, wait, the whole log', async (t) => {
  const c = await cluster(t);
  const first = driver(c);
  const script = { lines: ['one', 'two', 'three'], lineEveryMs: 150, exitCode: 2 };
  const handle = await first.prepare(request({ [SCRIPT_ENV]: JSON.stringify(script) }));
  await first.start(handle);
  // The process that made it is gone; a new driver has only the stored handle.
  const second = driver(c);
  assert.deepEqual(await second.recover(handle), { state: 'running' });
  assert.deepEqual(await second.wait(handle), { exitCode: 2, oomKilled: false });
  let text = '';
  for await (const chunk of second.output(handle, { follow: false })) text += chunk.text;
  assert.equal(text, 'one\ntwo\nthree\n');
  assert.deepEqual(await second.recover(handle), {
    state: 'exited',
    exit: { exitCode: 2, oomKilled: false },
  });
  await second.destroy(handle);
  await second.destroy(handle); // a second destroy finds nothing, and that is fine (404)
  assert.equal((await second.recover(handle)).state, 'gone');
});

test("a start the API server had already taken (409) is the same Pod; another sandbox's is refused", async (t) => {
  const c = await cluster(t);
  const d = driver(c);
  const precreated = async (req: SandboxRequest, sandbox: string) => {
    const body = jobPod(
      req,
      {
        namespace: 'boxcar-local',
        name: `boxcar-${req.sandboxId}`,
        runtimeClassName: 'gvisor',
        node: 'n',
        defaultImage: 'busybox:1.37',
      },
      'gvisor',
    );
    body.metadata = { ...body.metadata, labels: { ...body.metadata?.labels, 'boxcar.dev/sandbox': sandbox } };
    await c.core.createNamespacedPod({ namespace: 'boxcar-local', body });
  };
  const mine = request({ [SCRIPT_ENV]: JSON.stringify({ lines: ['x'] }) });
  const handle = await d.prepare(mine);
  await precreated(mine, mine.sandboxId);
  await d.start(handle);
  assert.deepEqual(await d.wait(handle), { exitCode: 0, oomKilled: false });
  await d.destroy(handle);
  const other = request();
  const taken = await d.prepare(other);
  await precreated(other, randomUUID());
  await assert.rejects(d.start(taken), /exists and is not sandbox/);
});

test('a job that asks for network is refused, naming the field: its namespace denies all traffic', async (t) => {
  const d = driver(await cluster(t));
  await assert.rejects(
    d.prepare(request({}, { network: { enabled: true } })),
    /^UserError: network: the kubernetes executor runs jobs without network/,
  );
});

test('a Pod that never starts fails its start at the job timeout, saying where it waits', async (t) => {
  const d = driver(await cluster(t));
  const handle = await d.prepare(
    request({ [SCRIPT_ENV]: JSON.stringify({ startAfterMs: 600_000 }) }, { timeout: '1s' }),
  );
  await assert.rejects(
    d.start(handle),
    /^SandboxFailure: pod boxcar-local\/boxcar-[0-9a-f-]+ did not start within the job's timeout \(1 s\): ContainerCreating$/,
  );
  await d.destroy(handle);
});

test("a job's memory and CPU come from the metrics API while it runs; without the API, none", async (t) => {
  const { cluster: c, server } = await clusterAndServer(t);
  const d = driver(c);
  const script = { lines: ['a', 'b', 'c', 'd'], lineEveryMs: 100, usage: { cpu: '500m', memory: '64Mi' } };
  const run = async () => {
    const handle = await d.prepare(request({ [SCRIPT_ENV]: JSON.stringify(script) }));
    await d.start(handle);
    await d.wait(handle);
    const stats = await d.stats(handle);
    await d.destroy(handle);
    return stats;
  };
  const measured = await run();
  assert.equal(measured.peakMemoryBytes, 64 * 2 ** 20);
  // Half a core for about 0.4 s, sampled every 50 ms: roughly 0.2 s of CPU.
  assert.ok(measured.cpuUsageNs > 0.05e9 && measured.cpuUsageNs < 0.5e9, String(measured.cpuUsageNs));
  server.removeMetricsApi();
  assert.deepEqual(await run(), { memoryBytes: 0, peakMemoryBytes: 0, cpuUsageNs: 0, pids: 0 });
});

test('a job that starts with files (a checkout, artifacts, a cache) is refused: its Pod would not get them', async (t) => {
  const d = driver(await cluster(t));
  await assert.rejects(
    d.prepare({ ...request(), workspaceDir: '/var/lib/boxcar/workspaces/x' }),
    /^UserError: checkout, artifacts, cache and needs: the kubernetes executor gives a job an empty \/workspace/,
  );
});
