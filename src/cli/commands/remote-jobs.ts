import type { Command } from 'commander';
import type { JobView } from '../../api/job-view.js';
import { ApiClient, addServerFlags, type ServerFlags } from '../client.js';

/** `boxcar logs` and `boxcar cancel`: a job on a server. */
export function registerRemoteJobCommands(program: Command): void {
  addServerFlags(
    program
      .command('logs')
      .argument('<id>', 'job id')
      .option('-f, --follow', 'follow the output until the job ends'),
  ).action(async (id: string, opts: ServerFlags & { follow?: boolean }) => {
    const client = ApiClient.from(opts);
    if (!opts.follow) {
      process.stdout.write(await client.text(`/v1/jobs/${encodeURIComponent(id)}/logs`));
      return;
    }
    await client.follow(id, (c) => (c.stream === 'stderr' ? process.stderr : process.stdout).write(c.text));
  });

  addServerFlags(program.command('cancel').argument('<id>', 'job id')).action(
    async (id: string, opts: ServerFlags) => {
      const job = await ApiClient.from(opts).json<JobView>(`/v1/jobs/${encodeURIComponent(id)}/cancel`, {
        method: 'POST',
      });
      process.stdout.write(
        `${job.id} ${job.state}${job.cancelRequested && job.state !== 'cancelled' ? ' (stopping)' : ''}\n`,
      );
    },
  );
}
