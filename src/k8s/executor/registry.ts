/**
 * The `kubernetes` executor's runtimes (config `executor: kubernetes`): one driver per runtime,
 * each running Pods of its RuntimeClass on the cluster of `kubernetes.kubeconfig` (or the one
 * Boxcar runs in). RuntimeClasses are named as `boxcar k8s manifests` names them
 * (`kubernetes.runtime_classes.<runtime>.name`, by default the runtime's own name).
 */

import type { KubernetesSettings } from '../settings.js';
import { runtimeOverhead, type SandboxRuntime } from '../overhead.js';
import { tenantNamespace } from '../tenant-objects.js';
import { UserError } from '../../lib/errors.js';
import { nodeId } from '../../lib/owner.js';
import type { StatePaths } from '../../lib/state-paths.js';
import type { Logger } from '../../observability/logger.js';
import { RuntimeRegistry } from '../../runtimes/registry.js';
import { KubeCluster } from './cluster.js';
import { KubernetesDriver } from './driver.js';

export function kubernetesRuntimes(
  settings: KubernetesSettings,
  paths: StatePaths,
  logger: Logger,
): RuntimeRegistry {
  const log = logger.child({ executor: 'kubernetes' });
  const cluster = connect(settings, log);
  const common = {
    cluster,
    namespaceOf: (tenant: string) => tenantNamespace(settings, tenant),
    defaultImage: settings.default_image,
    node: () => nodeId(paths.root),
    // metrics-server scrapes every 15 s by default: a few samples per scrape catch each new one.
    usageEveryMs: 5000,
  };
  const sandboxed = (runtime: SandboxRuntime) =>
    new KubernetesDriver(runtime, {
      ...common,
      runtimeClassName: settings.runtime_classes[runtime].name,
      overheadBytes: runtimeOverhead(runtime, settings.runtime_classes[runtime]).memoryBytes ?? 0,
      logger: log.child({ runtime }),
    });
  return new RuntimeRegistry(
    [
      new KubernetesDriver('runc', {
        ...common,
        runtimeClassName: undefined,
        overheadBytes: 0,
        logger: log.child({ runtime: 'runc' }),
      }),
      sandboxed('gvisor'),
      sandboxed('firecracker'),
    ],
    {
      wasm: "WASM modules run in Boxcar's own worker on its node, and the kubernetes executor runs OCI images only; run wasm jobs with executor: local",
    },
  );
}

function connect(settings: KubernetesSettings, logger: Logger): KubeCluster {
  if (!settings.kubeconfig && !process.env.KUBERNETES_SERVICE_HOST)
    throw new UserError(
      "kubernetes.kubeconfig is not set and Boxcar is not running in a Pod (no KUBERNETES_SERVICE_HOST): set kubernetes.kubeconfig to the cluster's kubeconfig file",
    );
  try {
    return KubeCluster.load(settings.kubeconfig, logger);
  } catch (err) {
    throw new UserError(
      `kubernetes.kubeconfig: ${settings.kubeconfig ?? 'the in-cluster credentials'} could not be read (${(err as Error).message}); point it at a kubeconfig file`,
    );
  }
}
