import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseYaml } from '../lib/yaml.js';
import { JobSpec } from '../jobs/spec.js';
import { admit, hardLimits, ResourceQuota } from './quota.js';
import { ZERO_USAGE } from '../store/store.js';

/** The seed's manifest (4.3), verbatim but for the namespace that names the tenant. */
const SEED = `apiVersion: v1
kind: ResourceQuota
metadata:
  name: cicd-quota
  namespace: team-a
spec:
  hard:
    requests.memory: 1000Gi
    limits.memory: 2000Gi
    requests.cpu: "500"
    limits.cpu: "1000"
    pods: "10000"
  scopes:
    - NotTerminating
`;

test('the seed’s ResourceQuota is accepted and read in bytes and millicores', () => {
  const q = hardLimits(parseYaml(SEED, 'quota.yaml', ResourceQuota));
  assert.deepEqual(q, {
    name: 'cicd-quota',
    tenant: 'team-a',
    pods: 10000,
    requestsMemoryBytes: 1000 * 2 ** 30,
    limitsMemoryBytes: 2000 * 2 ** 30,
    requestsCpuMillis: 500_000,
    limitsCpuMillis: 1_000_000,
  });
});

test('quota errors name the line, the field and the fix', () => {
  const bad = (text: string) => () => parseYaml(text, 'quota.yaml', ResourceQuota);
  assert.throws(
    bad(SEED.replace('pods: "10000"', 'pods: "many"')),
    /quota\.yaml:12: spec\.hard\.pods: .*whole number/,
  );
  assert.throws(
    bad(SEED.replace('pods: "10000"', 'gpus: "1"')),
    /spec\.hard\.gpus: is not a resource Boxcar accounts; use one of pods/,
  );
  assert.throws(
    bad(SEED.replace('- NotTerminating', '- Terminating')),
    /spec\.scopes\[0\]: matches no Boxcar job/,
  );
  assert.throws(bad(SEED.replace('  namespace: team-a\n', '')), /metadata\.namespace/);
});

test('admission: requests and limits add up per tenant; a job alone over a hard limit can never fit', () => {
  const quotas = [
    hardLimits(
      ResourceQuota.parse({
        apiVersion: 'v1',
        kind: 'ResourceQuota',
        metadata: { name: 'q', namespace: 't' },
        spec: { hard: { pods: 3, 'requests.cpu': '1', 'limits.memory': '1Gi' } },
      }),
    ),
  ];
  const job = JobSpec.parse({
    command: 'true',
    resources: { memory: '256Mi', cpus: '2', requests: { cpus: '400m' } },
  });
  assert.deepEqual(admit(quotas, 't', ZERO_USAGE, job), { admit: true });
  assert.deepEqual(admit(quotas, 'other-tenant', { ...ZERO_USAGE, pods: 99 }, job), { admit: true });
  const busy = { ...ZERO_USAGE, pods: 2, requestsCpuMillis: 800, limitsMemoryBytes: 512 * 2 ** 20 };
  const waiting = admit(quotas, 't', busy, job);
  assert.equal(waiting.admit, false);
  assert.match(
    !waiting.admit ? waiting.reason : '',
    /waiting for quota q: requests\.cpu used 800m \+ requested 400m > hard 1000m/,
  );
  const huge = JobSpec.parse({ command: 'true', resources: { memory: '2Gi' } });
  const never = admit(quotas, 't', ZERO_USAGE, huge);
  assert.ok(!never.admit && never.never);
});
