import type { Command } from 'commander';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { reconcileOrphans } from '../../jobs/reconcile.js';
import { formatBytes } from '../../jobs/quantity.js';
import type { Logger } from '../../observability/logger.js';
import { dollars, formatTable, ms } from '../table.js';

export function registerJobs(program: Command, logger: Logger): void {
  program
    .command('jobs')
    .description('list recent jobs')
    .option('--limit <n>', 'how many', '20')
    .option('--json', 'print a JSON array')
    .action(async (opts: { limit: string; json?: boolean }) => {
      const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
      try {
        await reconcileOrphans(box);
        const jobs = await box.store.listJobs({ limit: Math.max(1, Number(opts.limit) || 20) });
        if (opts.json) {
          process.stdout.write(
            `${JSON.stringify(
              jobs.map(({ handle: _h, owner: _o, ...j }) => j),
              null,
              2,
            )}\n`,
          );
          return;
        }
        const rows = jobs.map((j) => [
          j.id.slice(0, 8),
          j.name,
          j.state,
          j.runtime,
          j.exitCode === null ? '-' : String(j.exitCode),
          ms(j.startupMs),
          ms(j.durationMs),
          j.peakMemoryBytes === null ? '-' : formatBytes(j.peakMemoryBytes),
          dollars(j.costDollars),
          new Date(j.createdAt).toISOString().replace('T', ' ').slice(0, 19),
        ]);
        process.stdout.write(
          `${formatTable(['ID', 'NAME', 'STATE', 'RUNTIME', 'EXIT', 'STARTUP', 'DURATION', 'PEAK MEM', 'COST', 'CREATED'], rows)}\n`,
        );
      } finally {
        await box.close();
      }
    });
}
