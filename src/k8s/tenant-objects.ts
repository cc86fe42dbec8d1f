/**
 * One namespace per tenant (seed 4.3), with what the cluster itself enforces there: the tenant's
 * ResourceQuotas, its LimitRange, Pod Security "restricted", no API token and no network for job
 * Pods, and the Role that lets Boxcar (and only Boxcar) run jobs in it.
 */

import type { ILimitRange, INamespace, IResourceQuota, IServiceAccount } from 'kubernetes-models/v1';
import type { INetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import type { IRole, IRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { UserError } from '../lib/errors.js';
import type { Hard } from '../tenants/quota.js';
import { tenantSettings, type TenantsConfig, type TenantLimits } from '../tenants/tenant-config.js';
import { MANAGED_BY, RESTRICTED_NAMESPACE, TENANT_LABEL } from './labels.js';
import { cpuSpec, decimalQuantity, memoryQuantity } from './quantity.js';
import type { KubernetesSettings } from './settings.js';

export const SERVICE_ACCOUNT = 'boxcar';
const EXECUTOR_ROLE = 'boxcar-executor';

type TenantObject =
  INamespace | IServiceAccount | INetworkPolicy | IResourceQuota | ILimitRange | IRole | IRoleBinding;

/** Tenants that get a namespace: those the config lists, those a quota names, those webhooks feed. */
export function clusterTenants(
  tenants: TenantsConfig,
  quotas: readonly Hard[],
  webhookTenants: readonly string[],
): string[] {
  return [...new Set([...Object.keys(tenants), ...quotas.map((q) => q.tenant), ...webhookTenants])].sort();
}

export function tenantNamespace(k: KubernetesSettings, tenant: string): string {
  const name = `${k.namespace_prefix}${tenant}`;
  if (name.length > 63)
    throw new UserError(
      `kubernetes.namespace_prefix: "${name}" (tenant ${tenant}) is longer than a namespace name may be (63); use a shorter prefix`,
    );
  return name;
}

export function tenantObjects(
  k: KubernetesSettings,
  tenants: TenantsConfig,
  quotas: readonly Hard[],
  tenant: string,
): TenantObject[] {
  const namespace = tenantNamespace(k, tenant);
  const labels = { ...MANAGED_BY, [TENANT_LABEL]: tenant };
  const meta = (name: string) => ({ name, namespace, labels });
  return [
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: namespace, labels: { ...labels, ...RESTRICTED_NAMESPACE } },
    },
    // Job Pods run as the namespace's default account: with no token, a job that escaped its
    // sandbox still holds no credentials for the API server.
    {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: meta('default'),
      automountServiceAccountToken: false,
    },
    // Job Pods get no network, in or out: a Boxcar job has none unless it asks, and the
    // kubernetes executor refuses jobs that ask. Enforced where the cluster's network plugin
    // enforces NetworkPolicy.
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: meta('boxcar-no-network'),
      spec: { podSelector: {}, policyTypes: ['Ingress', 'Egress'] },
    },
    ...quotas.filter((q) => q.tenant === tenant).map((q) => resourceQuota(q, meta(q.name))),
    limitRange(tenant, tenantSettings(tenants, tenant).limits, meta('boxcar-limits')),
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'Role',
      metadata: meta(EXECUTOR_ROLE),
      rules: [
        // A job is a Pod: created, watched, its log followed, deleted when it ends; listed by
        // label to find those a restarted Boxcar left behind.
        { apiGroups: [''], resources: ['pods'], verbs: ['create', 'get', 'list', 'watch', 'delete'] },
        { apiGroups: [''], resources: ['pods/log'], verbs: ['get'] },
        // A trusted job's secrets: one Secret per job, deleted with its Pod; never read back.
        { apiGroups: [''], resources: ['secrets'], verbs: ['create', 'delete'] },
        // The quotas' status, to refuse a job the API server would refuse, with its words.
        { apiGroups: [''], resources: ['resourcequotas'], verbs: ['get', 'list'] },
        // A sandbox that fails to start (FailedCreatePodSandBox) is reported only as an Event.
        { apiGroups: [''], resources: ['events'], verbs: ['list', 'watch'] },
        // A running job's memory and CPU, as metrics-server reports them.
        { apiGroups: ['metrics.k8s.io'], resources: ['pods'], verbs: ['get'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'RoleBinding',
      metadata: meta(EXECUTOR_ROLE),
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: EXECUTOR_ROLE },
      subjects: [{ kind: 'ServiceAccount', name: SERVICE_ACCOUNT, namespace: k.namespace }],
    },
  ];
}

/**
 * The quota as Boxcar enforces it, in the canonical keys. Its scopes are left out: in a
 * namespace that holds nothing but Boxcar's job Pods, NotTerminating and NotBestEffort match
 * every job only while jobs carry no `activeDeadlineSeconds`; without scopes the quota covers
 * every job however the executor enforces timeouts, as Boxcar's own accounting does.
 */
function resourceQuota(q: Hard, metadata: IResourceQuota['metadata']): IResourceQuota {
  const hard: Record<string, string> = {};
  if (q.pods !== undefined) hard.pods = String(q.pods);
  if (q.requestsMemoryBytes !== undefined) hard['requests.memory'] = memoryQuantity(q.requestsMemoryBytes);
  if (q.limitsMemoryBytes !== undefined) hard['limits.memory'] = memoryQuantity(q.limitsMemoryBytes);
  if (q.requestsCpuMillis !== undefined) hard['requests.cpu'] = cpuSpec(q.requestsCpuMillis);
  if (q.limitsCpuMillis !== undefined) hard['limits.cpu'] = cpuSpec(q.limitsCpuMillis);
  return { apiVersion: 'v1', kind: 'ResourceQuota', metadata, spec: { hard } };
}

/**
 * The tenant's limits as a LimitRange on containers. Boxcar's executor writes every request and
 * limit itself, so the defaults matter only to Pods made by other means; `max` and
 * `maxLimitRequestRatio` are the cluster's own guard. `pids` and `timeout` have no LimitRange
 * counterpart: the kubelet's podPidsLimit and the Pod's activeDeadlineSeconds carry them.
 */
function limitRange(tenant: string, l: TenantLimits, metadata: ILimitRange['metadata']): ILimitRange {
  checkLimitOrder(tenant, l);
  const amounts = (a: { memory?: number; cpu?: number }) => {
    const out: Record<string, string> = {};
    if (a.memory !== undefined) out.memory = memoryQuantity(a.memory);
    if (a.cpu !== undefined) out.cpu = cpuSpec(a.cpu);
    return Object.keys(out).length ? out : undefined;
  };
  const ratio: Record<string, string> = {};
  for (const key of ['memory', 'cpu'] as const) {
    const r = l.maxLimitRequestRatio[key];
    if (r !== undefined) ratio[key] = decimalQuantity(Math.round(r * 1000));
  }
  const item = {
    type: 'Container',
    default: amounts(l.default),
    defaultRequest: amounts(l.defaultRequest),
    max: amounts(l.max),
    maxLimitRequestRatio: Object.keys(ratio).length ? ratio : undefined,
  };
  const defined = Object.fromEntries(Object.entries(item).filter(([, v]) => v !== undefined));
  return { apiVersion: 'v1', kind: 'LimitRange', metadata, spec: { limits: [defined as { type: string }] } };
}

/** The API server refuses a LimitRange whose default exceeds its max, or whose default request exceeds either. */
function checkLimitOrder(tenant: string, l: TenantLimits): void {
  const at = `tenants.${tenant}.limits`;
  const show = { memory: memoryQuantity, cpu: cpuSpec };
  for (const key of ['memory', 'cpu'] as const) {
    const pairs: Array<[string, number | undefined, string, number | undefined]> = [
      ['default', l.default[key], 'max', l.max[key]],
      ['defaultRequest', l.defaultRequest[key], 'default', l.default[key]],
      ['defaultRequest', l.defaultRequest[key], 'max', l.max[key]],
    ];
    for (const [low, a, high, b] of pairs)
      if (a !== undefined && b !== undefined && a > b)
        throw new UserError(
          `${at}.${low}.${key}: ${show[key](a)} is more than ${at}.${high}.${key} (${show[key](b)}), which Kubernetes refuses in a LimitRange; make ${low} at most ${high}`,
        );
  }
}
