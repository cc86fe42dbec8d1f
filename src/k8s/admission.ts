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

const FORMAT: Record<QuotaResource, (n: number) => string> = {
  pods: countQuantity,
  'requests.memory': memoryQuantity,
  memory: memoryQuantity,
  'limits.memory': memoryQuantity,
  'requests.cpu': cpuQuantity,
  cpu: cpuQuantity,
  'limits.cpu': cpuQuantity,
};

/** An amount of a quota resource as the API server prints it. */
export const formatQuota = (r: QuotaResource, n: number): string => FORMAT[r](n);

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
  nodeSelector?: Record<string, string>;
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
  /** `scheduling.nodeSelector`: merged into the Pod's. */
  nodeSelector?: Record<string, string>;
}

/** A ResourceQuota's status: `hard` and `used` as the quota controller last wrote them. */
export interface QuotaView {
  name: string;
  hard: ResourceList;
  used: ResourceList;
}

export type PodAdmission =
  | {
      allowed: true;
      overhead: PodOverhead | undefined;
      nodeSelector: Record<string, string> | undefined;
      usage: ResourceList;
    }
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

export type RuntimeClassMutation =
  | { overhead: PodOverhead | undefined; nodeSelector: Record<string, string> | undefined }
  | { refusal: string };

/**
 * The RuntimeClass plugin's Admit, among the mutating plugins: the class must exist; its
 * overhead replaces the Pod's (a different one the Pod set is refused); its node selector is
 * merged into the Pod's (a conflicting value is refused). Gives the Pod's overhead and selector.
 */
export function mutateRuntimeClass(
  pod: PodRequest,
  classes: readonly RuntimeClassView[],
): RuntimeClassMutation {
  const refuse = (why: string) => ({ refusal: forbidden(pod.name, why) });
  const rc = classes.find((c) => c.name === pod.runtimeClassName);
  if (pod.runtimeClassName !== undefined && !rc)
    return refuse(`pod rejected: RuntimeClass "${pod.runtimeClassName}" not found`);
  if (hasOverhead(rc?.overhead) && hasOverhead(pod.overhead) && !sameOverhead(pod.overhead, rc?.overhead))
    return refuse("pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead");
  for (const [key, want] of Object.entries(rc?.nodeSelector ?? {})) {
    const have = pod.nodeSelector?.[key];
    if (have !== undefined && have !== want)
      return refuse(
        `conflict: runtimeClass.scheduling.nodeSelector[${key}] = ${want}; pod.spec.nodeSelector[${key}] = ${have}`,
      );
  }
  return {
    overhead: hasOverhead(rc?.overhead) ? rc?.overhead : pod.overhead,
    nodeSelector: rc?.nodeSelector ? { ...pod.nodeSelector, ...rc.nodeSelector } : pod.nodeSelector,
  };
}

/**
 * The RuntimeClass plugin's Validate, among the validating plugins (after Pod Security, before
 * ResourceQuota): an overhead on the Pod that no class overhead put there.
 */
export function validateRuntimeClass(
  pod: PodRequest,
  classes: readonly RuntimeClassView[],
  overhead: PodOverhead | undefined,
): string | undefined {
  const rc = classes.find((c) => c.name === pod.runtimeClassName);
  if (hasOverhead(overhead) && !hasOverhead(rc?.overhead))
    return forbidden(
      pod.name,
      'pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead',
    );
  return undefined;
}

/** prettyPrint: `key=value` sorted by key, joined by commas. */
function prettyPrint(list: ResourceList, keys: readonly QuotaResource[]): string {
  return [...keys]
    .filter((k) => list[k] !== undefined)
    .sort()
    .map((k) => `${k}=${formatQuota(k, list[k] as number)}`)
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

/**
 * Both plugins in the API server's order: RuntimeClass's Admit among the mutating plugins, its
 * Validate among the validating ones, ResourceQuota last. Pod Security, which validates between
 * them, is left out: Boxcar's own Pods pass the restricted profile by construction.
 */
export function admitPod(
  pod: PodRequest,
  classes: readonly RuntimeClassView[],
  quotas: readonly QuotaView[],
): PodAdmission {
  const mutated = mutateRuntimeClass(pod, classes);
  if ('refusal' in mutated) return { allowed: false, code: 403, message: mutated.refusal };
  const refusal =
    validateRuntimeClass(pod, classes, mutated.overhead) ??
    quotaRefusal(pod.name, podUsage(pod, mutated.overhead), quotas);
  if (refusal) return { allowed: false, code: 403, message: refusal };
  return { allowed: true, ...mutated, usage: podUsage(pod, mutated.overhead) };
}
