/**
 * The API server's admission of a job's Pod, mirrored so Boxcar refuses first and in the same
 * words: the RuntimeClass plugin (the class must exist; its `overhead.podFixed` is set on the
 * Pod, and a Pod that sets a different overhead itself is refused), then ResourceQuota, whose
 * arithmetic counts that overhead in requests and in limits. Quantities are Boxcar's units
 * (bytes, millicores, counts); messages print them as Kubernetes does.
 *
 * Sources: plugin/pkg/admission/runtimeclass/admission.go and the quota evaluator's
 * CheckRequest (staging/src/k8s.io/apiserver/pkg/admission/plugin/resourcequota/controller.go),
 * with apierrors.NewForbidden for the `pods "NAME" is forbidden: …` frame.
 */

import type { JobSpec } from '../jobs/spec.js';
import { countQuantity, cpuQuantity, memoryQuantity } from './quantity.js';

/** The quota resources a Boxcar job's Pod uses; `memory` and `cpu` are requests' other names. */
export const QUOTA_RESOURCES = [
  'pods',
  'requests.memory',
  'memory',
  'limits.memory',
  'requests.cpu',
  'cpu',
  'limits.cpu',
] as const;
export type QuotaResource = (typeof QUOTA_RESOURCES)[number];
export type ResourceList = Partial<Record<QuotaResource, number>>;

const SHOW: Record<QuotaResource, (n: number) => string> = {
  pods: countQuantity,
  'requests.memory': memoryQuantity,
  memory: memoryQuantity,
  'limits.memory': memoryQuantity,
  'requests.cpu': cpuQuantity,
  cpu: cpuQuantity,
  'limits.cpu': cpuQuantity,
};

export interface Amounts {
  memoryBytes: number;
  cpuMillis: number;
}

export interface PodOverhead {
  memoryBytes?: number;
  cpuMillis?: number;
}

/** A job's Pod as admission sees it: one container's requests and limits. */
export interface PodRequest {
  name: string;
  runtimeClassName?: string;
  requests: Amounts;
  limits: Amounts;
  /** `spec.overhead` as the Pod was sent (Boxcar's executor sends none). */
  overhead?: PodOverhead;
}

/**
 * A job's Pod as admission will see it: the job's own requests and limits (its one container),
 * in the RuntimeClass its routing chose (none for the nodes' default runtime), no overhead of
 * its own: the class's is added by admission, and counted against quotas.
 */
export function jobPodRequest(name: string, spec: JobSpec, runtimeClassName: string | undefined): PodRequest {
  return {
    name,
    runtimeClassName,
    requests: { memoryBytes: spec.requests.memoryBytes, cpuMillis: spec.requests.cpuMillis },
    limits: { memoryBytes: spec.limits.memoryBytes, cpuMillis: spec.limits.cpuMillis },
  };
}

/** A RuntimeClass as the API server holds it: only what admission reads. */
export interface RuntimeClassView {
  name: string;
  overhead?: PodOverhead;
}

/** A ResourceQuota's status: `hard` and `used` as the quota controller last wrote them. */
export interface QuotaView {
  name: string;
  hard: ResourceList;
  used: ResourceList;
}

export type PodAdmission =
  | { allowed: true; overhead: PodOverhead | undefined; usage: ResourceList }
  | { allowed: false; code: 403; message: string };

/** apierrors.NewForbidden's message for a pod. */
const forbidden = (pod: string, err: string) =>
  pod ? `pods "${pod}" is forbidden: ${err}` : `pods is forbidden: ${err}`;

/** apiequality.Semantic.DeepEqual of two resource lists: the same resources, the same amounts. */
const sameOverhead = (a: PodOverhead | undefined, b: PodOverhead | undefined) =>
  a?.memoryBytes === b?.memoryBytes && a?.cpuMillis === b?.cpuMillis;
const hasOverhead = (o: PodOverhead | undefined) =>
  o?.memoryBytes !== undefined || o?.cpuMillis !== undefined;

/**
 * What the Pod counts against a quota (the pod evaluator's usage): its requests and limits plus
 * the overhead, which is added to limits only where the Pod has a limit, as PodLimits does.
 */
export function podUsage(pod: PodRequest, overhead: PodOverhead | undefined): ResourceList {
  const requestsMemory = pod.requests.memoryBytes + (overhead?.memoryBytes ?? 0);
  const requestsCpu = pod.requests.cpuMillis + (overhead?.cpuMillis ?? 0);
  return {
    pods: 1,
    'requests.memory': requestsMemory,
    memory: requestsMemory,
    'limits.memory': pod.limits.memoryBytes + (overhead?.memoryBytes ?? 0),
    'requests.cpu': requestsCpu,
    cpu: requestsCpu,
    'limits.cpu': pod.limits.cpuMillis + (overhead?.cpuMillis ?? 0),
  };
}

/** The RuntimeClass plugin: the overhead the Pod gets, or its refusal. */
export function admitRuntimeClass(
  pod: PodRequest,
  classes: readonly RuntimeClassView[],
): { overhead: PodOverhead | undefined } | { refusal: string } {
  if (pod.runtimeClassName === undefined) {
    if (hasOverhead(pod.overhead))
      return {
        refusal: forbidden(
          pod.name,
          'pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead',
        ),
      };
    return { overhead: undefined };
  }
  const rc = classes.find((c) => c.name === pod.runtimeClassName);
  if (!rc)
    return { refusal: forbidden(pod.name, `pod rejected: RuntimeClass "${pod.runtimeClassName}" not found`) };
  if (!hasOverhead(rc.overhead)) {
    if (hasOverhead(pod.overhead))
      return {
        refusal: forbidden(
          pod.name,
          'pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead',
        ),
      };
    return { overhead: undefined };
  }
  if (hasOverhead(pod.overhead) && !sameOverhead(pod.overhead, rc.overhead))
    return {
      refusal: forbidden(
        pod.name,
        "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead",
      ),
    };
  return { overhead: rc.overhead };
}

/** prettyPrint: `key=value` sorted by key, joined by commas. */
function prettyPrint(list: ResourceList, keys: readonly QuotaResource[]): string {
  return [...keys]
    .filter((k) => list[k] !== undefined)
    .sort()
    .map((k) => `${k}=${SHOW[k](list[k] as number)}`)
    .join(',');
}

/**
 * ResourceQuota's CheckRequest for one Pod: for each quota, the Pod's usage of the resources the
 * quota limits, added to what it has used; the first quota that would pass a hard limit refuses,
 * naming every resource it would pass. Quotas are checked in name order; the API server takes
 * them in its cache's order, so with two quotas exceeded at once it may name the other.
 */
export function quotaRefusal(
  pod: string,
  usage: ResourceList,
  quotas: readonly QuotaView[],
): string | undefined {
  for (const q of [...quotas].sort((a, b) => a.name.localeCompare(b.name))) {
    const limited = QUOTA_RESOURCES.filter((r) => q.hard[r] !== undefined && usage[r] !== undefined);
    const exceeded = limited.filter((r) => (q.used[r] ?? 0) + (usage[r] as number) > (q.hard[r] as number));
    if (exceeded.length)
      return forbidden(
        pod,
        `exceeded quota: ${q.name}, requested: ${prettyPrint(usage, exceeded)}, used: ${prettyPrint(q.used, exceeded)}, limited: ${prettyPrint(q.hard, exceeded)}`,
      );
  }
  return undefined;
}

/** Both plugins in the API server's order: RuntimeClass (mutating, then validating), ResourceQuota last. */
export function admitPod(
  pod: PodRequest,
  classes: readonly RuntimeClassView[],
  quotas: readonly QuotaView[],
): PodAdmission {
  const rc = admitRuntimeClass(pod, classes);
  if ('refusal' in rc) return { allowed: false, code: 403, message: rc.refusal };
  const usage = podUsage(pod, rc.overhead);
  const refusal = quotaRefusal(pod.name, usage, quotas);
  if (refusal) return { allowed: false, code: 403, message: refusal };
  return { allowed: true, overhead: rc.overhead, usage };
}
