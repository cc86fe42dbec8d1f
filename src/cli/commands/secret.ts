import type { Command } from 'commander';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { UserError } from '../../lib/errors.js';
import type { Logger } from '../../observability/logger.js';
import type { SecretScope } from '../../store/store.js';
import { TENANT_NAME } from '../../tenants/tenant-config.js';
import { operatorOrigin } from '../../runner/local.js';
import { formatTable } from '../table.js';
import { readStdin } from '../stdin.js';

interface ScopeFlags {
  tenant: string;
  repo?: string;
}

const REPO = /^[^/\s]+\/[^/\s]+$/;

function scope(flags: ScopeFlags, name: string): SecretScope {
  if (!TENANT_NAME.test(flags.tenant))
    throw new UserError(`--tenant ${flags.tenant}: use 1-63 lower-case letters, digits or "-", e.g. team-a`);
  if (flags.repo !== undefined && !REPO.test(flags.repo))
    throw new UserError(`--repo ${flags.repo}: use owner/name, e.g. org/app`);
  return { tenant: flags.tenant, repository: flags.repo ?? '', name };
}

/**
 * `boxcar secret set|ls|rm`: a tenant's secrets (or one repository's of it), on this node's
 * store. Values come from stdin, are sealed before they are stored and never printed.
 */
export function registerSecret(program: Command, logger: Logger): void {
  const secret = program.command('secret');
  const withScope = (cmd: Command) =>
    cmd
      .requiredOption('--tenant <name>', 'the tenant the secret belongs to')
      .option(
        '--repo <owner/name>',
        "only for jobs from this repository's webhooks (default: every job of the tenant)",
      );
  const open = () => openBoxcar(program.opts<BoxcarOptions>(), logger);

  withScope(
    secret.command('set').description('set a secret, its value read from stdin').argument('<NAME>'),
  ).action(async (name: string, flags: ScopeFlags) => {
    const s = scope(flags, name);
    const value = await readStdin();
    const box = await open();
    try {
      await box.secrets.set(s, value, operatorOrigin().actor);
      process.stderr.write(
        `boxcar: secret ${name} set for tenant ${s.tenant}${s.repository ? `, repository ${s.repository}` : ''}\n`,
      );
    } finally {
      await box.close();
    }
  });

  secret
    .command('ls')
    .description("list a tenant's secrets (names, never values)")
    .requiredOption('--tenant <name>', 'the tenant')
    .option('--json', 'print a JSON array')
    .action(async (flags: { tenant: string; json?: boolean }) => {
      scope(flags, 'X');
      const box = await open();
      try {
        const list = await box.secrets.list(flags.tenant);
        if (flags.json) process.stdout.write(`${JSON.stringify(list)}\n`);
        else
          process.stdout.write(
            `${formatTable(
              ['NAME', 'REPOSITORY', 'UPDATED'],
              list.map((x) => [x.name, x.repository || '(every job)', new Date(x.updatedAt).toISOString()]),
            )}\n`,
          );
      } finally {
        await box.close();
      }
    });

  withScope(secret.command('rm').description('remove a secret').argument('<NAME>')).action(
    async (name: string, flags: ScopeFlags) => {
      const s = scope(flags, name);
      const box = await open();
      try {
        if (!(await box.secrets.remove(s, operatorOrigin().actor)))
          throw new UserError(
            `no secret ${name} for tenant ${s.tenant}${s.repository ? `, repository ${s.repository}` : ''}; see \`boxcar secret ls --tenant ${s.tenant}\``,
          );
      } finally {
        await box.close();
      }
    },
  );
}
