/**
 * What admission reads, taken from the Kubernetes objects themselves (as the API server holds
 * them, or as Boxcar reads them from it): a RuntimeClass's overhead, a ResourceQuota's status,
 * a Pod's requests and limits. Quantities become Boxcar's units.
 */

import type { IRuntimeClass } from 'kubernetes-models/node.k8s.io/v1';
import type { IPod, IResourceQuota } from 'kubernetes-models/v1';
import {
  QUOTA_RESOURCES,
  type Amounts,
  type PodOverhead,
  type PodRequest,
  type QuotaResource,
  type QuotaView,
  type ResourceList,
  type RuntimeClassView,
} from './admission.js';
import { bytesOf, quantityThousandths } from './quantity.js';

type Quantities = Record<string, string | number> | undefined;

const isMemory = (r: string) => r.endsWith('memory');

function overheadOf(list: Quantities): PodOverhead | undefined {
  if (!list || Object.keys(list).length === 0) return undefined;
  return {
    ...(list.memory !== undefined && { memoryBytes: bytesOf(list.memory) }),
    ...(list.cpu !== undefined && { cpuMillis: quantityThousandths(list.cpu) }),
  };
}

export function runtimeClassView(rc: IRuntimeClass): RuntimeClassView {
  return {
    name: rc.metadata?.name ?? '',
    overhead: overheadOf(rc.overhead?.podFixed),
    nodeSelector: rc.scheduling?.nodeSelector,
  };
}

function resourceList(list: Quantities): ResourceList {
  const out: ResourceList = {};
  for (const [key, value] of Object.entries(list ?? {})) {
    if (!(QUOTA_RESOURCES as readonly string[]).includes(key)) continue;
    const r = key as QuotaResource;
    out[r] = isMemory(r)
      ? bytesOf(value)
      : r === 'pods'
        ? quantityThousandths(value) / 1000
        : quantityThousandths(value);
  }
  return out;
}

/** A quota as the quota controller reports it: `status.hard` (the spec's until it has run) and `status.used`. */
export function quotaView(q: IResourceQuota): QuotaView {
  return {
    name: q.metadata?.name ?? '',
    hard: resourceList(q.status?.hard ?? q.spec?.hard),
    used: resourceList(q.status?.used),
  };
}

/**
 * A Pod's requests and limits, summed over its containers; a container's missing request is its
 * limit, as the API server's defaulting makes it.
 */
export function podRequest(pod: IPod): PodRequest {
  const requests: Amounts = { memoryBytes: 0, cpuMillis: 0 };
  const limits: Amounts = { memoryBytes: 0, cpuMillis: 0 };
  for (const c of pod.spec?.containers ?? []) {
    const l: Quantities = c.resources?.limits;
    const r: Quantities = { ...l, ...c.resources?.requests };
    if (l?.memory !== undefined) limits.memoryBytes += bytesOf(l.memory);
    if (l?.cpu !== undefined) limits.cpuMillis += quantityThousandths(l.cpu);
    if (r.memory !== undefined) requests.memoryBytes += bytesOf(r.memory);
    if (r.cpu !== undefined) requests.cpuMillis += quantityThousandths(r.cpu);
  }
  return {
    name: pod.metadata?.name ?? '',
    runtimeClassName: pod.spec?.runtimeClassName,
    requests,
    limits,
    overhead: overheadOf(pod.spec?.overhead),
    nodeSelector: pod.spec?.nodeSelector,
  };
}
