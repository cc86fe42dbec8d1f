import type { Command } from 'commander';
import { loadConfig } from '../../config/config.js';
import { manifests, renderManifests } from '../../k8s/manifests.js';

/** `boxcar k8s …`: Boxcar on a Kubernetes cluster. */
export function registerK8s(program: Command): void {
  const k8s = program.command('k8s').description('Boxcar on a Kubernetes cluster');
  k8s
    .command('manifests')
    .description(
      "print the RuntimeClasses, tenant namespaces (ResourceQuota, LimitRange, RBAC) and Boxcar's own Deployment, from the config file, for kubectl apply -f -",
    )
    .option(
      '--config <file>',
      'config file (default: the global --config, BOXCAR_CONFIG or /etc/boxcar/config.yaml)',
    )
    .action(async (opts: { config?: string }) => {
      const global = program.opts<{ config?: string }>();
      const config = await loadConfig({ config: opts.config ?? global.config });
      process.stdout.write(
        renderManifests(
          manifests({ kubernetes: config.kubernetes, tenants: config.tenants, quotas: config.quotas }),
        ),
      );
    });
}
