import type { Command } from 'commander';
import { loadConfig } from '../../config/config.js';
import { manifests, renderManifests } from '../../k8s/manifests.js';

/** `boxcar k8s …`: Boxcar on a Kubernetes cluster. */
export function registerK8s(program: Command): void {
  const k8s = program.command('k8s');
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
      // A forge whose webhook is configured sends its jobs to its tenant and its repositories' tenants.
      const webhookTenants = [config.webhooks.github, config.webhooks.gitlab]
        .filter((forge) => forge.secret !== undefined)
        .flatMap((forge) => [forge.tenant, ...Object.values(forge.repositories)]);
      const { kubernetes, tenants, quotas } = config;
      process.stdout.write(renderManifests(manifests({ kubernetes, tenants, quotas, webhookTenants })));
    });
}
