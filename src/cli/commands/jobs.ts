import type { Command } from 'commander';
import type { JobView } from '../../api/job-view.js';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { reconcileOrphans } from '../../runner/reconcile.js';
import { formatBytes } from '../../lib/quantity.js';
import type { Logger } from '../../observability/logger.js';
import { ApiClient, addServerFlags, type ServerFlags } from '../client.js';
import { dollars, formatTable, ms } from '../table.js';

type Listed = Pick<
  JobView,
  | 'id'
  | 'name'
  | 'state'
  | 'runtime'
  | 'exitCode'
  | 'startupMs'
  | 'durationMs'
  | 'peakMemoryBytes'
  | 'costDollars'
  | 'createdAt'
>;

function table(jobs: Listed[]): string {
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
  return formatTable(
    ['ID', 'NAME', 'STATE', 'RUNTIME', 'EXIT', 'STARTUP', 'DURATION', 'PEAK MEM', 'COST', 'CREATED'],
    rows,
  );
}

export function registerJobs(program: Command, logger: Logger): void {
  addServerFlags(
    program.command('jobs').option('--limit <n>', 'how many', '20').option('--json', 'print a JSON array'),
  ).action(async (opts: ServerFlags & { limit: string; json?: boolean }) => {
    const limit = Math.max(1, Number(opts.limit) || 20);
    let jobs: Listed[];
    if (opts.server || opts.token) {
      jobs = await ApiClient.from(opts).json<JobView[]>(`/v1/jobs?limit=${limit}`);
    } else {
      const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
      try {
        await reconcileOrphans(box);
        jobs = (await box.store.listJobs({ limit })).map(
          ({ handle: _h, owner: _o, leaseUntil: _l, ...j }) => j,
        );
      } finally {
        await box.close();
      }
    }
    process.stdout.write(opts.json ? `${JSON.stringify(jobs, null, 2)}\n` : `${table(jobs)}\n`);
  });
}
