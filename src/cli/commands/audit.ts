import type { Command } from 'commander';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { UserError } from '../../lib/errors.js';
import { parseDurationMs } from '../../lib/quantity.js';
import type { Logger } from '../../observability/logger.js';
import { verifyAudit } from '../../tenants/audit.js';
import { formatTable } from '../table.js';

/** `boxcar audit`: the audit trail (who did what, and what was refused), and `audit verify` of its hash chain. */
export function registerAudit(program: Command, logger: Logger): void {
  const audit = program
    .command('audit')
    .option('--tenant <name>', "one tenant's records")
    .option('--since <duration>', 'how far back, e.g. 24h, 30m', '24h')
    .option('--limit <n>', 'at most this many records (oldest first)', '1000')
    .option('--json', 'one JSON object per line, with each record’s hashes')
    .action(async (flags: { tenant?: string; since: string; limit: string; json?: boolean }) => {
      const since = parseDurationMs(flags.since);
      if (!since.ok) throw new UserError(`--since: ${since.message}`);
      const limit = Number(flags.limit);
      if (!Number.isInteger(limit) || limit < 1)
        throw new UserError(`--limit ${flags.limit}: use a whole number above 0`);
      const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
      try {
        const records = await box.store.auditRecords({
          tenant: flags.tenant,
          since: Date.now() - since.value,
          limit,
        });
        if (flags.json) {
          for (const r of records)
            process.stdout.write(`${JSON.stringify({ ...r, detail: JSON.parse(r.detail) })}\n`);
          return;
        }
        process.stdout.write(
          `${formatTable(
            ['SEQ', 'TIME', 'TENANT', 'ACTOR', 'ACTION', 'SUBJECT', 'DETAIL'],
            records.map((r) => [
              String(r.seq),
              new Date(r.at).toISOString().replace('T', ' ').slice(0, 19),
              r.tenant ?? '-',
              r.actor,
              r.action,
              r.subject,
              r.detail.length > 120 ? `${r.detail.slice(0, 117)}...` : r.detail,
            ]),
          )}\n`,
        );
      } finally {
        await box.close();
      }
    });

  audit
    .command('verify')
    .description(
      'check the hash chain of the whole trail; exits 1 and names the first broken record if it is not intact',
    )
    .action(async () => {
      const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
      try {
        const v = await verifyAudit(box.store);
        if (v.ok) {
          process.stdout.write(
            `audit trail intact: ${v.records} records${v.head ? `, head ${v.head}` : ''}\n`,
          );
          return;
        }
        process.stdout.write(
          `audit trail BROKEN at record ${v.broken.seq}: ${v.broken.why} (${v.records} records before it are intact)\n`,
        );
        process.exitCode = 1;
      } finally {
        await box.close();
      }
    });
}
