/**
 * The Pod Security "restricted" profile's checks on a Pod spec (Kubernetes' pod-security-admission
 * policy, restricted level, latest), for tests and the test API server: each violation is named
 * as the profile's check is. Only fields Boxcar's Pods could carry are checked.
 */

import type { IContainer, IPodSpec } from 'kubernetes-models/v1';

const ALLOWED_VOLUMES = [
  'configMap',
  'csi',
  'downwardAPI',
  'emptyDir',
  'ephemeral',
  'persistentVolumeClaim',
  'projected',
  'secret',
];

export function restrictedViolations(spec: IPodSpec): string[] {
  const out: string[] = [];
  const containers: IContainer[] = [...(spec.initContainers ?? []), ...spec.containers];
  if (spec.hostNetwork || spec.hostPID || spec.hostIPC) out.push('host namespaces');
  for (const v of spec.volumes ?? []) {
    const kinds = Object.keys(v).filter((k) => k !== 'name');
    if (!kinds.every((k) => ALLOWED_VOLUMES.includes(k)))
      out.push(`restricted volume types (${v.name}: ${kinds})`);
  }
  const pod = spec.securityContext ?? {};
  for (const c of containers) {
    const sc = c.securityContext ?? {};
    if (sc.privileged) out.push(`privileged (${c.name})`);
    if (sc.allowPrivilegeEscalation !== false) out.push(`allowPrivilegeEscalation != false (${c.name})`);
    const add = sc.capabilities?.add ?? [];
    if (!sc.capabilities?.drop?.includes('ALL') || add.some((a) => a !== 'NET_BIND_SERVICE'))
      out.push(`unrestricted capabilities (${c.name})`);
    if ((sc.runAsNonRoot ?? pod.runAsNonRoot) !== true) out.push(`runAsNonRoot != true (${c.name})`);
    if ((sc.runAsUser ?? pod.runAsUser) === 0) out.push(`runAsUser=0 (${c.name})`);
    const seccomp = (sc.seccompProfile ?? pod.seccompProfile)?.type;
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') out.push(`seccompProfile (${c.name})`);
    if (c.ports?.some((p) => p.hostPort)) out.push(`hostPort (${c.name})`);
  }
  return out;
}
