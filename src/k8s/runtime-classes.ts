/**
 * The RuntimeClasses of Boxcar's sandboxed runtimes (seed 4.1): named as Boxcar's runtimes are
 * unless the config names them (`runtime_classes.<runtime>.name`), so the routing decision's
 * runtime gives the Pod's `runtimeClassName`; the handler is what the cluster's nodes call it. runc jobs name no class: the nodes' default runtime.
 */

import type { IRuntimeClass } from 'kubernetes-models/node.k8s.io/v1';
import { MANAGED_BY } from './labels.js';
import { runtimeOverhead, type Overhead, type SandboxRuntime } from './overhead.js';
import { cpuSpec, memoryQuantity } from './quantity.js';
import type { KubernetesSettings } from './settings.js';

export interface RuntimeClassManifest {
  object: IRuntimeClass;
  overhead: Overhead;
}

/** `overhead.podFixed` as Kubernetes writes it; none when Boxcar counts no overhead. */
function podFixed(o: Overhead): Record<string, string> | undefined {
  const fixed: Record<string, string> = {};
  if (o.memoryBytes) fixed.memory = memoryQuantity(o.memoryBytes);
  if (o.cpuMillis) fixed.cpu = cpuSpec(o.cpuMillis);
  return Object.keys(fixed).length ? fixed : undefined;
}

export function runtimeClasses(k: KubernetesSettings): RuntimeClassManifest[] {
  return (Object.keys(k.runtime_classes) as SandboxRuntime[]).map((runtime) => {
    const s = k.runtime_classes[runtime];
    const overhead = runtimeOverhead(runtime, s);
    const fixed = podFixed(overhead);
    const hasScheduling = Object.keys(s.node_selector).length > 0 || s.tolerations.length > 0;
    return {
      overhead,
      object: {
        apiVersion: 'node.k8s.io/v1',
        kind: 'RuntimeClass',
        metadata: { name: s.name, labels: { ...MANAGED_BY } },
        handler: s.handler,
        ...(fixed && { overhead: { podFixed: fixed } }),
        ...(hasScheduling && {
          scheduling: {
            ...(Object.keys(s.node_selector).length && { nodeSelector: s.node_selector }),
            ...(s.tolerations.length && { tolerations: s.tolerations }),
          },
        }),
      },
    };
  });
}
