import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JobSpec } from '../jobs/spec.js';
import {
  admitPod,
  jobPodRequest,
  type PodRequest,
  type QuotaView,
  type RuntimeClassView,
} from './admission.js';

const Mi = 2 ** 20;
const Gi = 2 ** 30;

/**
 * Expected texts are the API server's: the first is the Kubernetes docs' "Configure Memory and
 * CPU Quotas for a Namespace" exercise as a cluster printed it (kubectl's "Error from server
 * (Forbidden): error when creating …:" prefix removed), the others follow the format strings
 * of the RuntimeClass admission plugin and the quota evaluator's CheckRequest.
 */
test('exceeded quota: every exceeded resource, sorted, in canonical quantities', () => {
  const pod: PodRequest = {
    name: 'quota-mem-cpu-demo-2',
    requests: { memoryBytes: 700 * Mi, cpuMillis: 400 },
    limits: { memoryBytes: Gi, cpuMillis: 800 },
  };
  const quota: QuotaView = {
    name: 'mem-cpu-demo',
    hard: { 'requests.memory': Gi, 'limits.memory': 2 * Gi, 'requests.cpu': 1000, 'limits.cpu': 2000 },
    used: {
      'requests.memory': 728 * Mi,
      'limits.memory': 1056 * Mi,
      'requests.cpu': 900,
      'limits.cpu': 1800,
    },
  };
  assert.deepEqual(admitPod(pod, [], [quota]), {
    allowed: false,
    code: 403,
    message:
      'pods "quota-mem-cpu-demo-2" is forbidden: exceeded quota: mem-cpu-demo, requested: limits.cpu=800m,limits.memory=1Gi,requests.cpu=400m,requests.memory=700Mi, used: limits.cpu=1800m,limits.memory=1056Mi,requests.cpu=900m,requests.memory=728Mi, limited: limits.cpu=2,limits.memory=2Gi,requests.cpu=1,requests.memory=1Gi',
  });
});

test('only the exceeded resources are named: pods', () => {
  const pod: PodRequest = {
    name: 'pod-4',
    requests: { memoryBytes: 128 * Mi, cpuMillis: 100 },
    limits: { memoryBytes: 128 * Mi, cpuMillis: 100 },
  };
  const quota: QuotaView = {
    name: 'compute-quota',
    hard: { pods: 3, 'requests.cpu': 4000, 'requests.memory': 8 * Gi },
    used: { pods: 3, 'requests.cpu': 300, 'requests.memory': 384 * Mi },
  };
  const r = admitPod(pod, [], [quota]);
  assert.equal(
    r.allowed || r.message,
    'pods "pod-4" is forbidden: exceeded quota: compute-quota, requested: pods=1, used: pods=3, limited: pods=3',
  );
});

const firecracker: RuntimeClassView = { name: 'firecracker', overhead: { memoryBytes: 224 * Mi } };
const job = (memoryMiB: number): PodRequest => ({
  name: 'job-1',
  runtimeClassName: 'firecracker',
  requests: { memoryBytes: memoryMiB * Mi, cpuMillis: 250 },
  limits: { memoryBytes: memoryMiB * Mi, cpuMillis: 1000 },
});
const quota: QuotaView = {
  name: 'cicd-quota',
  hard: { 'requests.memory': Gi, 'limits.memory': 2 * Gi },
  used: { 'requests.memory': 512 * Mi, 'limits.memory': 512 * Mi },
};

test("the RuntimeClass's overhead is injected and counted in requests and limits", () => {
  // 288Mi + 224Mi of overhead fits beside 512Mi in 1Gi; 289Mi does not.
  const fits = admitPod(job(288), [firecracker], [quota]);
  assert.ok(fits.allowed);
  assert.deepEqual(fits.overhead, { memoryBytes: 224 * Mi });
  assert.equal(fits.usage['requests.memory'], 512 * Mi);
  assert.equal(fits.usage['limits.memory'], 512 * Mi);
  const over = admitPod(job(289), [firecracker], [quota]);
  assert.equal(
    over.allowed || over.message,
    'pods "job-1" is forbidden: exceeded quota: cicd-quota, requested: requests.memory=513Mi, used: requests.memory=512Mi, limited: requests.memory=1Gi',
  );
  // Without the overhead the same job fits: the check that forgets it admits what Kubernetes refuses.
  assert.ok(admitPod({ ...job(289), runtimeClassName: undefined }, [], [quota]).allowed);
});

test('a missing RuntimeClass is refused as the API server refuses it', () => {
  assert.deepEqual(admitPod(job(64), [], [quota]), {
    allowed: false,
    code: 403,
    message: 'pods "job-1" is forbidden: pod rejected: RuntimeClass "firecracker" not found',
  });
});

test("a Pod that sets an overhead of its own is refused unless it is the class's", () => {
  const own = (o: PodRequest['overhead'], classes: RuntimeClassView[], rc?: string) => {
    const r = admitPod({ ...job(64), runtimeClassName: rc, overhead: o }, classes, []);
    return r.allowed ? 'allowed' : r.message;
  };
  assert.equal(
    own({ memoryBytes: Mi }, [firecracker], 'firecracker'),
    `pods "job-1" is forbidden: pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead`,
  );
  assert.equal(own({ memoryBytes: 224 * Mi }, [firecracker], 'firecracker'), 'allowed');
  assert.equal(
    own({ memoryBytes: Mi }, [{ name: 'gvisor' }], 'gvisor'),
    'pods "job-1" is forbidden: pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead',
  );
  assert.equal(
    own({ cpuMillis: 10 }, []),
    'pods "job-1" is forbidden: pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead',
  );
});

test('a resource the quota does not limit, or usage it has not recorded, is left out', () => {
  const q: QuotaView = { name: 'q', hard: { 'limits.cpu': 2000 }, used: {} };
  const r = admitPod({ ...job(64), limits: { memoryBytes: 64 * Mi, cpuMillis: 3000 } }, [firecracker], [q]);
  assert.equal(
    r.allowed || r.message,
    'pods "job-1" is forbidden: exceeded quota: q, requested: limits.cpu=3, used: , limited: limits.cpu=2',
  );
});

test("a job's Pod: its requests and limits, in its class; refused only where the class's overhead tips it over", () => {
  const spec = JobSpec.parse({
    command: ['make'],
    resources: { memory: '289Mi', requests: { memory: '289Mi' } },
  });
  const inClass = admitPod(jobPodRequest('job-2', spec, 'firecracker'), [firecracker], [quota]);
  assert.match(
    inClass.allowed ? '' : inClass.message,
    /^pods "job-2" is forbidden: exceeded quota: cicd-quota, requested: requests\.memory=513Mi/,
  );
  assert.ok(admitPod(jobPodRequest('job-2', spec, undefined), [firecracker], [quota]).allowed);
});

test("the class's node selector is merged into the Pod's; a conflicting value is refused", () => {
  const gvisor: RuntimeClassView = { name: 'gvisor', nodeSelector: { 'boxcar.dev/sandbox': 'gvisor' } };
  const pod = { ...job(64), runtimeClassName: 'gvisor', nodeSelector: { zone: 'a' } };
  const ok = admitPod(pod, [gvisor], []);
  assert.deepEqual(ok.allowed && ok.nodeSelector, { zone: 'a', 'boxcar.dev/sandbox': 'gvisor' });
  const clash = admitPod({ ...pod, nodeSelector: { 'boxcar.dev/sandbox': 'any' } }, [gvisor], []);
  assert.equal(
    clash.allowed || clash.message,
    'pods "job-1" is forbidden: conflict: runtimeClass.scheduling.nodeSelector[boxcar.dev/sandbox] = gvisor; pod.spec.nodeSelector[boxcar.dev/sandbox] = any',
  );
});

test('a scheduling conflict (mutating) is named before an overhead without a class overhead (validating)', () => {
  const gvisor: RuntimeClassView = { name: 'gvisor', nodeSelector: { sandbox: 'gvisor' } };
  const pod = {
    ...job(64),
    runtimeClassName: 'gvisor',
    nodeSelector: { sandbox: 'runc' },
    overhead: { cpuMillis: 5 },
  };
  const r = admitPod(pod, [gvisor], []);
  assert.match(
    r.allowed ? '' : r.message,
    /forbidden: conflict: runtimeClass\.scheduling\.nodeSelector\[sandbox\]/,
  );
});
