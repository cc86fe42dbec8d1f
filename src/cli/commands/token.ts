import type { Command } from 'commander';
import { createToken } from '../../api/tokens.js';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { UserError } from '../../lib/errors.js';
import type { Logger } from '../../observability/logger.js';
import { TENANT_NAME } from '../../tenants/tenant-config.js';
import { operatorOrigin } from '../../runner/local.js';

export function registerToken(program: Command, logger: Logger): void {
  const token = program.command('token');
  token
    .command('create')
    .description('create an API token and print it (it is stored only as a hash)')
    .option('--tenant <name>', 'the tenant whose jobs it submits and sees (a Kubernetes namespace name)')
    .option('--operator', "an operator's token: also reads /metrics and /v1/node")
    .action(async (opts: { tenant?: string; operator?: boolean }) => {
      if (opts.tenant === undefined && !opts.operator)
        throw new UserError('give --tenant NAME (a tenant’s token) or --operator (an operator’s token)');
      if (opts.tenant !== undefined && !TENANT_NAME.test(opts.tenant))
        throw new UserError(
          `--tenant ${opts.tenant}: use 1-63 lower-case letters, digits or "-", e.g. team-a`,
        );
      const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
      try {
        const { token: t, id } = await createToken(
          box.store,
          { tenant: opts.tenant ?? null, role: opts.operator ? 'operator' : 'tenant' },
          operatorOrigin().actor,
        );
        process.stdout.write(`${t}\n`);
        process.stderr.write(
          `boxcar: token ${id} created for ${opts.tenant ? `tenant ${opts.tenant}` : 'no tenant'}${opts.operator ? ' with the operator role' : ''}\n`,
        );
      } finally {
        await box.close();
      }
    });
}
