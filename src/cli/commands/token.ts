import type { Command } from 'commander';
import { newToken, tokenHash } from '../../api/tokens.js';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { UserError } from '../../errors.js';
import type { Logger } from '../../observability/logger.js';

const TENANT = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function registerToken(program: Command, logger: Logger): void {
  const token = program.command('token').description('API tokens of tenants');
  token
    .command('create')
    .description('create an API token for a tenant and print it (it is stored only as a hash)')
    .requiredOption('--tenant <name>', 'the tenant (a Kubernetes namespace name: a-z, 0-9, -)')
    .action(async (opts: { tenant: string }) => {
      if (!TENANT.test(opts.tenant))
        throw new UserError(
          `--tenant ${opts.tenant}: use 1-63 lower-case letters, digits or "-", e.g. team-a`,
        );
      const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
      try {
        const t = newToken();
        await box.store.addToken(tokenHash(t), opts.tenant);
        process.stdout.write(`${t}\n`);
      } finally {
        await box.close();
      }
    });
}
