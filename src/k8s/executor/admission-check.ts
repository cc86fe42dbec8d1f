/**
 * The API server's admission of a job's Pod, predicted from what the cluster holds now (its
 * RuntimeClass, the namespace's ResourceQuotas with their `status.used`) before the Pod is sent:
 * a job the API server would refuse is refused by Boxcar first, in the API server's words
 * (../admission.ts), with its class's overhead counted as Kubernetes counts it. A missing
 * RuntimeClass is the cluster's failure, not the job's: it is a sandbox failure (the breaker
 * counts it); a quota refusal is the job's (it asks for more than its tenant has).
 */

import type { IRuntimeClass } from 'kubernetes-models/node.k8s.io/v1';
import type { IResourceQuota } from 'kubernetes-models/v1';
import { UserError } from '../../lib/errors.js';
import type { JobSpec } from '../../jobs/spec.js';
import { admitPod, jobPodRequest } from '../admission.js';
import { quotaView, runtimeClassView } from '../admission-views.js';
import type { KubeCluster } from './cluster.js';

/** A sandbox the cluster cannot make (its RuntimeClass is missing, its nodes fail to start it). */
export class SandboxFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SandboxFailure';
  }
}

/** Why the API server would refuse the Pod, as a refusal of the right kind; nothing when it would admit it. */
export async function predictAdmission(
  cluster: KubeCluster,
  pod: { namespace: string; name: string; runtimeClassName: string | undefined },
  spec: JobSpec,
): Promise<void> {
  const [classes, quotas] = await Promise.all([
    cluster.call('listing RuntimeClasses', () => cluster.node.listRuntimeClass()),
    cluster.call(`listing the ResourceQuotas of namespace ${pod.namespace}`, () =>
      cluster.core.listNamespacedResourceQuota({ namespace: pod.namespace }),
    ),
  ]);
  // The client library's objects are the API's JSON, which is what kubernetes-models describes.
  const admission = admitPod(
    jobPodRequest(pod.name, spec, pod.runtimeClassName),
    classes.items.map((c) => runtimeClassView(c as unknown as IRuntimeClass)),
    quotas.items.map((q) => quotaView(q as unknown as IResourceQuota)),
  );
  if (admission.allowed) return;
  throw refusalOf(admission.message);
}

/** The API server's 403 for a Pod (predicted or answered) as Boxcar's failure of the right kind. */
export function refusalOf(message: string): Error {
  return /RuntimeClass ".*" not found/.test(message) ? new SandboxFailure(message) : new UserError(message);
}
