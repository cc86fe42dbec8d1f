import type { Command } from 'commander';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { UserError } from '../../lib/errors.js';
import type { Logger } from '../../observability/logger.js';
import { operatorOrigin } from '../../runner/local.js';
import { TENANT_NAME } from '../../tenants/tenant-config.js';
import { readStdin } from '../stdin.js';
import { formatTable } from '../table.js';

function checkTenant(tenant: string): void {
  if (!TENANT_NAME.test(tenant))
    throw new UserError(`--tenant ${tenant}: use 1-63 lower-case letters, digits or "-", e.g. team-a`);
}

/** `ghcr.io`, `127.0.0.1:5000`, `localhost:5000`: a registry host as image references name it. */
const REGISTRY = /^(?:localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+|\[[0-9a-f:]+\])(?::\d{1,5})?$|^localhost$/i;

function checkRegistry(registry: string): string {
  if (!REGISTRY.test(registry))
    throw new UserError(
      `registry ${registry}: give its host[:port] as image references name it, e.g. ghcr.io`,
    );
  return registry;
}

/**
 * `boxcar registry login|logout|ls --tenant T`: a tenant's own credentials for a registry,
 * sealed in the store. Its jobs' images are pinned and pulled with them, never with the node's.
 */
export function registerRegistry(program: Command, logger: Logger): void {
  const registry = program.command('registry');
  const open = () => openBoxcar(program.opts<BoxcarOptions>(), logger);

  registry
    .command('login')
    .description('store a tenant’s credentials for a registry, the password (or token) read from stdin')
    .argument('<registry>', 'host[:port], e.g. ghcr.io')
    .requiredOption('--tenant <name>', 'the tenant')
    .requiredOption('--username <name>', 'the registry user')
    .action(async (host: string, flags: { tenant: string; username: string }) => {
      checkTenant(flags.tenant);
      checkRegistry(host);
      const password = await readStdin();
      const box = await open();
      try {
        await box.registryLogins.set(
          flags.tenant,
          host,
          { username: flags.username, password },
          operatorOrigin().actor,
        );
        process.stderr.write(`boxcar: tenant ${flags.tenant} now pulls from ${host} as ${flags.username}\n`);
      } finally {
        await box.close();
      }
    });

  registry
    .command('logout')
    .description('forget a tenant’s credentials for a registry')
    .argument('<registry>', 'host[:port]')
    .requiredOption('--tenant <name>', 'the tenant')
    .action(async (host: string, flags: { tenant: string }) => {
      checkTenant(flags.tenant);
      const box = await open();
      try {
        if (!(await box.registryLogins.remove(flags.tenant, checkRegistry(host), operatorOrigin().actor)))
          throw new UserError(`tenant ${flags.tenant} has no credentials for ${host}`);
      } finally {
        await box.close();
      }
    });

  registry
    .command('ls')
    .description('the registries a tenant has credentials for (never the credentials)')
    .requiredOption('--tenant <name>', 'the tenant')
    .option('--json', 'print a JSON array')
    .action(async (flags: { tenant: string; json?: boolean }) => {
      checkTenant(flags.tenant);
      const box = await open();
      try {
        const list = await box.registryLogins.list(flags.tenant);
        if (flags.json) process.stdout.write(`${JSON.stringify(list)}\n`);
        else
          process.stdout.write(
            `${formatTable(
              ['REGISTRY', 'UPDATED'],
              list.map((l) => [l.registry, new Date(l.updatedAt).toISOString()]),
            )}\n`,
          );
      } finally {
        await box.close();
      }
    });
}
