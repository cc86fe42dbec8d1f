/**
 * A job's Pod and Secret from its sandbox request: the RuntimeClass its routing chose (none for
 * runc: the nodes' default runtime), its requests and limits, its timeout as
 * activeDeadlineSeconds (a backstop: Boxcar stops it first), no service account token, the Pod
 * Security "restricted" contexts (root read-only; /tmp and /workspace are memory-backed
 * emptyDirs of the job's sizes), and labels tying it to its job, tenant, sandbox and node.
 */

import type { V1Pod, V1Secret } from '@kubernetes/client-node';
import { UserError } from '../../lib/errors.js';
import { isLocalReference } from '../../images/reference.js';
import { JOB_LABEL, MANAGED_BY, NODE_LABEL, RUNTIME_LABEL, SANDBOX_LABEL, TENANT_LABEL } from '../labels.js';
import { cpuSpec, memoryQuantity } from '../quantity.js';
import { restrictedContainerSecurityContext, restrictedPodSecurityContext } from '../security.js';
import type { SandboxRequest } from '../../runtimes/runtime.js';

/** The job's one container. */
export const CONTAINER = 'job';

export interface PodPlace {
  namespace: string;
  name: string;
  /** The RuntimeClass, or none for the nodes' default runtime. */
  runtimeClassName: string | undefined;
  /** This node's id (NODE_LABEL). */
  node: string;
  /** For jobs that name no image: what the cluster pulls instead of Boxcar's built-in base. */
  defaultImage: string | undefined;
}

/** A sandbox's Pod and Secret are named after the sandbox: found again from the handle alone. */
export const podName = (sandboxId: string): string => `boxcar-${sandboxId}`;

export function podLabels(req: SandboxRequest, place: PodPlace, runtime: string): Record<string, string> {
  return {
    ...MANAGED_BY,
    [TENANT_LABEL]: req.tenant,
    [JOB_LABEL]: req.jobId,
    [SANDBOX_LABEL]: req.sandboxId,
    [NODE_LABEL]: place.node,
    [RUNTIME_LABEL]: runtime,
  };
}

/** The image the cluster pulls: the job's (pinned at intake), or the configured default. */
export function podImage(spec: SandboxRequest['spec'], defaultImage: string | undefined): string {
  if (!spec.image) {
    if (defaultImage) return defaultImage;
    throw new UserError(
      "image: the job names none, and kubernetes.default_image is not set (Boxcar's built-in base image is not in a registry the cluster can pull from); name the job's image or set kubernetes.default_image",
    );
  }
  if (isLocalReference(spec.image))
    throw new UserError(
      `image: ${spec.image} was built on this node, and a cluster's nodes cannot pull it; push it to a registry and name that`,
    );
  return spec.image;
}

/** Whether the job gets a Secret: only a trusted job with secrets (the request holds none for others). */
export const wantsSecret = (req: SandboxRequest): boolean =>
  req.trust === 'trusted' && Object.keys(req.secrets).length > 0;

export function jobPod(req: SandboxRequest, place: PodPlace, runtime: string): V1Pod {
  const { spec } = req;
  const memory = (bytes: number) => memoryQuantity(bytes);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: place.name, namespace: place.namespace, labels: podLabels(req, place, runtime) },
    spec: {
      ...(place.runtimeClassName && { runtimeClassName: place.runtimeClassName }),
      restartPolicy: 'Never',
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      activeDeadlineSeconds: Math.max(1, Math.ceil(spec.timeoutMs / 1000)),
      securityContext: restrictedPodSecurityContext(),
      containers: [
        {
          name: CONTAINER,
          image: podImage(spec, place.defaultImage),
          ...(spec.command.length && { command: spec.command }),
          workingDir: '/workspace',
          env: Object.entries(spec.env).map(([name, value]) => ({ name, value })),
          ...(wantsSecret(req) && { envFrom: [{ secretRef: { name: place.name } }] }),
          resources: {
            requests: { memory: memory(spec.requests.memoryBytes), cpu: cpuSpec(spec.requests.cpuMillis) },
            limits: { memory: memory(spec.limits.memoryBytes), cpu: cpuSpec(spec.limits.cpuMillis) },
          },
          securityContext: restrictedContainerSecurityContext(),
          volumeMounts: [
            { name: 'tmp', mountPath: '/tmp' },
            { name: 'workspace', mountPath: '/workspace' },
          ],
        },
      ],
      volumes: [
        { name: 'tmp', emptyDir: { medium: 'Memory', sizeLimit: memory(spec.limits.tmpBytes) } },
        { name: 'workspace', emptyDir: { medium: 'Memory', sizeLimit: memory(spec.limits.workspaceBytes) } },
      ],
    },
  };
}

/** The job's secrets as a Secret owned by its Pod: the garbage collector deletes it with the Pod. */
export function jobSecret(req: SandboxRequest, place: PodPlace, runtime: string, podUid: string): V1Secret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: {
      name: place.name,
      namespace: place.namespace,
      labels: podLabels(req, place, runtime),
      ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name: place.name, uid: podUid }],
    },
    stringData: req.secrets,
  };
}
