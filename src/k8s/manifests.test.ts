import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { RuntimeClass } from 'kubernetes-models/node.k8s.io/v1';
import {
  ClusterRole,
  ClusterRoleBinding,
  Role,
  RoleBinding,
} from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import {
  LimitRange,
  Namespace,
  PersistentVolumeClaim,
  ResourceQuota,
  Service,
  ServiceAccount,
  type IPodSpec,
} from 'kubernetes-models/v1';
import { loadConfig } from '../config/config.js';
import { UserError } from '../lib/errors.js';
import { manifests, renderManifests, type ManifestInput } from './manifests.js';
import { KubernetesSettings } from './settings.js';
import { restrictedViolations } from './testing/pod-security.js';
import { BOXCAR_MAIN } from '../testing/serve-process.js';

/**
 * Golden tests of `boxcar k8s manifests`: the output for testdata/config.yaml, every document of
 * it validated against the Kubernetes OpenAPI schemas (kubernetes-models, Kubernetes 1.27), and
 * the properties that matter checked one by one. The schemas do not refuse unknown fields; the
 * builders are typed with the same models' interfaces, so the compiler does.
 * BOXCAR_UPDATE_GOLDEN=1 rewrites the golden copy after a review of the difference.
 */
const src = (p: string) => fileURLToPath(new URL(`../../../src/k8s/${p}`, import.meta.url));
const CONFIG = src('testdata/config.yaml');
const GOLDEN = src('testdata/manifests.yaml.golden');

type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [k: string]: unknown;
};
type Validator = new (data: never) => { validate(): void };
const MODELS: Record<string, Validator> = {
  'node.k8s.io/v1 RuntimeClass': RuntimeClass,
  'v1 Namespace': Namespace,
  'v1 ServiceAccount': ServiceAccount,
  'v1 ResourceQuota': ResourceQuota,
  'v1 LimitRange': LimitRange,
  'v1 PersistentVolumeClaim': PersistentVolumeClaim,
  'v1 Service': Service,
  'apps/v1 Deployment': Deployment,
  'networking.k8s.io/v1 NetworkPolicy': NetworkPolicy,
  'rbac.authorization.k8s.io/v1 Role': Role,
  'rbac.authorization.k8s.io/v1 RoleBinding': RoleBinding,
  'rbac.authorization.k8s.io/v1 ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1 ClusterRoleBinding': ClusterRoleBinding,
};

function validate(o: Obj): void {
  const Model = MODELS[`${o.apiVersion} ${o.kind}`];
  assert.ok(Model, `no schema for ${o.apiVersion} ${o.kind}`);
  new Model(o as never).validate();
}

async function exampleInput(): Promise<ManifestInput> {
  const c = await loadConfig({ config: CONFIG });
  return { kubernetes: c.kubernetes, tenants: c.tenants, quotas: c.quotas, webhookTenants: [] };
}

/** The printed output, read back as `kubectl apply` would read it. */
async function applied(): Promise<Obj[]> {
  const text = renderManifests(manifests(await exampleInput()));
  return parseAllDocuments(text).map((d) => {
    assert.deepEqual(d.errors, []);
    return d.toJS() as Obj;
  });
}

const find = (objs: Obj[], kind: string, name: string, namespace?: string) => {
  const o = objs.find(
    (x) => x.kind === kind && x.metadata.name === name && x.metadata.namespace === namespace,
  );
  assert.ok(o, `no ${kind} ${namespace ?? ''}/${name}`);
  return o;
};

test('the output for the example config is the golden copy', async () => {
  const text = renderManifests(manifests(await exampleInput()));
  if (process.env.BOXCAR_UPDATE_GOLDEN === '1') writeFileSync(GOLDEN, text);
  assert.equal(text, readFileSync(GOLDEN, 'utf8'));
});

test('`boxcar k8s manifests --config FILE` prints it', () => {
  const out = execFileSync(process.execPath, [BOXCAR_MAIN, 'k8s', 'manifests', '--config', CONFIG], {
    encoding: 'utf8',
  });
  assert.equal(out, readFileSync(GOLDEN, 'utf8'));
});

test('without kubernetes.image the command prints nothing and says what to set (exit 125)', () => {
  const r = spawnSync(process.execPath, [BOXCAR_MAIN, 'k8s', 'manifests', '--config', '/dev/null'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 125);
  assert.equal(r.stdout, '');
  assert.match(
    r.stderr,
    /^boxcar: kubernetes\.image: Boxcar's own container image is not set; set it in the config file/,
  );
});

test("a configured webhook's tenants get namespaces, listed or not", (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'boxcar-k8s-'));
  t.after(() => rmSync(dir, { recursive: true }));
  const config = path.join(dir, 'config.yaml');
  writeFileSync(
    config,
    [
      'kubernetes: { image: boxcar:1 }',
      "webhooks: { github: { secret: 'a-secret-of-16-chars', repositories: { 'acme/*': partners } } }",
    ].join('\n'),
  );
  const out = execFileSync(process.execPath, [BOXCAR_MAIN, 'k8s', 'manifests', '--config', config], {
    encoding: 'utf8',
  });
  const namespaces = parseAllDocuments(out)
    .map((d) => d.toJS() as Obj)
    .filter((o) => o.kind === 'Namespace')
    .map((o) => o.metadata.name);
  assert.deepEqual(namespaces, ['boxcar', 'boxcar-github', 'boxcar-partners']);
});

test('every object validates against the Kubernetes OpenAPI schemas', async () => {
  const objs = await applied();
  assert.equal(objs.length, 22); // 2 RuntimeClasses, Boxcar's 7, 6 for forks, 7 for team-a (its quota)
  for (const o of objs) assert.doesNotThrow(() => validate(o), `${o.kind} ${o.metadata.name}`);
});

test('the schema check can fail: a RuntimeClass without a handler, a bad quantity', () => {
  const rc = { apiVersion: 'node.k8s.io/v1', kind: 'RuntimeClass', metadata: { name: 'x' } };
  assert.throws(() => validate(rc), /handler/);
  const bad = { ...rc, handler: 'runsc', overhead: { podFixed: { memory: '12 Mi' } } };
  assert.throws(() => validate(bad), /quantity/);
});

test('RuntimeClasses: named as the runtimes, handlers and placement from the config, overhead from the driver', async () => {
  const objs = await applied();
  const fc = find(objs, 'RuntimeClass', 'firecracker');
  assert.equal(fc.handler, 'kata-fc');
  // 96 MiB of guest (GUEST_OVERHEAD_MIB) + 128 MiB of VMM (VMM_OVERHEAD_BYTES).
  assert.deepEqual(fc.overhead, { podFixed: { memory: '224Mi' } });
  assert.deepEqual(fc.scheduling, {
    nodeSelector: { 'boxcar.dev/sandbox': 'firecracker' },
    tolerations: [
      { key: 'boxcar.dev/sandbox', operator: 'Equal', value: 'firecracker', effect: 'NoSchedule' },
    ],
  });
  const gv = find(objs, 'RuntimeClass', 'gvisor');
  assert.equal(gv.handler, 'runsc');
  assert.equal(gv.overhead, undefined);
  const text = renderManifests(manifests(await exampleInput()));
  assert.match(text, /# overhead.podFixed from Boxcar's microVM driver .*96 MiB.*128 MiB/);
});

test('an overhead measured on the cluster replaces the driver’s, and the comment says so', async () => {
  const input = await exampleInput();
  input.kubernetes = KubernetesSettings.parse({
    image: 'boxcar:1',
    runtime_classes: { gvisor: { overhead: { memory: '40Mi', cpu: '100m' } } },
  });
  const list = manifests(input);
  const gv = list.find((m) => m.object.kind === 'RuntimeClass' && m.object.metadata?.name === 'gvisor');
  assert.deepEqual((gv?.object as Obj).overhead, { podFixed: { memory: '40Mi', cpu: '100m' } });
  assert.match(gv?.comment ?? '', /kubernetes\.runtime_classes\.gvisor\.overhead/);
  const fc = list.find((m) => m.object.metadata?.name === 'firecracker');
  assert.equal((fc?.object as Obj).handler, 'firecracker', "the seed's handler by default");
});

test('tenant namespaces: restricted Pod Security, no token for job Pods, quota and limits from the config', async () => {
  const objs = await applied();
  for (const ns of ['boxcar-team-a', 'boxcar-forks', 'boxcar']) {
    const labels = find(objs, 'Namespace', ns).metadata.labels ?? {};
    assert.equal(labels['pod-security.kubernetes.io/enforce'], 'restricted');
  }
  assert.equal(find(objs, 'ServiceAccount', 'default', 'boxcar-forks').automountServiceAccountToken, false);
  const q = find(objs, 'ResourceQuota', 'cicd-quota', 'boxcar-team-a');
  // The seed's quota; its NotTerminating scope is dropped (see tenant-objects.ts).
  assert.deepEqual(q.spec, {
    hard: {
      pods: '10000',
      'requests.memory': '1000Gi',
      'limits.memory': '2000Gi',
      'requests.cpu': '500',
      'limits.cpu': '1000',
    },
  });
  assert.deepEqual(find(objs, 'LimitRange', 'boxcar-limits', 'boxcar-team-a').spec, {
    limits: [
      {
        type: 'Container',
        default: { memory: '512Mi', cpu: '1' },
        defaultRequest: { memory: '256Mi', cpu: '250m' },
        max: { memory: '4Gi', cpu: '4' },
        maxLimitRequestRatio: { memory: '4' },
      },
    ],
  });
  assert.equal(objs.filter((o) => o.kind === 'ResourceQuota').length, 1, 'forks has no quota in the config');
});

test("Boxcar's Pod passes the restricted profile; the check can fail", async () => {
  const d = find(await applied(), 'Deployment', 'boxcar', 'boxcar');
  const spec = (d.spec as { template: { spec: IPodSpec } }).template.spec;
  assert.deepEqual(restrictedViolations(spec), []);
  const root = structuredClone(spec);
  root.containers[0] = { ...root.containers[0]!, securityContext: { runAsUser: 0 } };
  root.volumes = [...(root.volumes ?? []), { name: 'host', hostPath: { path: '/' } }];
  assert.deepEqual(restrictedViolations(root), [
    'restricted volume types (host: hostPath)',
    'allowPrivilegeEscalation != false (boxcar)',
    'unrestricted capabilities (boxcar)',
    'runAsUser=0 (boxcar)',
  ]);
});

test('RBAC: a ClusterRole only for reading RuntimeClasses, Nodes and Namespaces, everything else per tenant namespace, no wildcard', async () => {
  const objs = await applied();
  const rules = (o: Obj) => o.rules as Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }>;
  const clusterRoles = objs.filter((o) => o.kind === 'ClusterRole');
  assert.deepEqual(clusterRoles.map(rules), [
    [
      { apiGroups: ['node.k8s.io'], resources: ['runtimeclasses'], verbs: ['get', 'list'] },
      { apiGroups: [''], resources: ['nodes', 'namespaces'], verbs: ['list'] },
    ],
  ]);
  const roles = objs.filter((o) => o.kind === 'Role');
  assert.deepEqual(roles.map((r) => r.metadata.namespace).sort(), ['boxcar-forks', 'boxcar-team-a']);
  const granted = rules(roles[0]!).flatMap((r) => r.verbs.map((v) => `${r.resources[0]}:${v}`));
  assert.deepEqual(granted, [
    'pods:create',
    'pods:get',
    'pods:list',
    'pods:watch',
    'pods:delete',
    'pods/log:get',
    'secrets:create',
    'secrets:delete',
    'resourcequotas:get',
    'resourcequotas:list',
    'events:list',
    'events:watch',
    'pods:get', // metrics.k8s.io
  ]);
  for (const o of [...roles, ...clusterRoles])
    for (const r of rules(o)) assert.ok(![...r.resources, ...r.verbs, ...r.apiGroups].includes('*'));
  for (const b of objs.filter((o) => o.kind.endsWith('Binding')))
    assert.deepEqual(b.subjects, [{ kind: 'ServiceAccount', name: 'boxcar', namespace: 'boxcar' }]);
});

test('what the cluster would refuse is refused here, naming the field and the fix', async () => {
  const input = await exampleInput();
  const without = { ...input, kubernetes: KubernetesSettings.parse({}) };
  assert.throws(
    () => manifests(without),
    (e) => e instanceof UserError && /^kubernetes\.image: .*set it/.test(e.message),
  );
  const long = {
    ...input,
    kubernetes: KubernetesSettings.parse({ image: 'b:1', namespace_prefix: 'a'.repeat(30) }),
  };
  assert.throws(
    () => manifests({ ...long, tenants: { ['t'.repeat(40)]: input.tenants['forks']! } }),
    /kubernetes\.namespace_prefix: .* longer than .* \(63\); use a shorter prefix/,
  );
  const inverted = structuredClone(input.tenants);
  inverted['team-a']!.limits.default.memory = 8 * 2 ** 30;
  assert.throws(
    () => manifests({ ...input, tenants: inverted }),
    /tenants\.team-a\.limits\.default\.memory: 8Gi is more than tenants\.team-a\.limits\.max\.memory \(4Gi\)/,
  );
});
