/**
 * Security contexts that pass the Pod Security "restricted" profile: no root, no privilege
 * escalation, every capability dropped, the runtime's default seccomp filter. Boxcar's own Pod
 * uses them, and so will its job Pods; the sandbox (gVisor, a microVM) is a boundary on top.
 */

import type { IPodSecurityContext, ISecurityContext } from 'kubernetes-models/v1';

/** An unprivileged user with no entry in most images (distroless's "nonroot"). */
export const NON_ROOT_UID = 65532;

export function restrictedPodSecurityContext(): IPodSecurityContext {
  return {
    runAsNonRoot: true,
    runAsUser: NON_ROOT_UID,
    runAsGroup: NON_ROOT_UID,
    // Volumes (Boxcar's state) are made writable by this group.
    fsGroup: NON_ROOT_UID,
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

export function restrictedContainerSecurityContext(): ISecurityContext {
  return {
    allowPrivilegeEscalation: false,
    capabilities: { drop: ['ALL'] },
    readOnlyRootFilesystem: true,
    runAsNonRoot: true,
    seccompProfile: { type: 'RuntimeDefault' },
  };
}
