import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { UserError } from '../../lib/errors.js';
import { cliExitCode, jobResultJson } from '../../runner/result.js';
import { ApiClient, addServerFlags, type ServerFlags } from '../client.js';
import { addJobFlags, jobSpecFromFlags, type JobFlags } from '../job-flags.js';

export function registerSubmit(program: Command): void {
  const cmd = program
    .command('submit')
    .argument('[command...]', 'the command to run, after --')
    .option('--wait', 'follow the job to its end and exit with its exit code')
    .option('--json', 'with --wait: print only the JSON result object, as `boxcar run --json`');
  addServerFlags(addJobFlags(cmd)).action(
    async (command: string[], opts: JobFlags & ServerFlags & { wait?: boolean; json?: boolean }) => {
      const { server, token, wait, json, ...flags } = opts;
      const client = ApiClient.from({ server, token });
      const overridden =
        command.length > 0 || Object.entries(flags).some(([k, v]) => k !== 'file' && v !== undefined);
      let job;
      if (flags.file && !overridden) {
        // The file as written: the server's errors point at its lines.
        const text = await readFile(flags.file, 'utf8').catch((err: NodeJS.ErrnoException) => {
          throw new UserError(`cannot read ${flags.file} (${err.code ?? err.message}); check the path`);
        });
        job = await client.submitYaml(text);
      } else {
        job = await client.submitJson((await jobSpecFromFlags(flags, command)).input);
      }
      if (!wait) {
        process.stdout.write(json ? `${JSON.stringify(job)}\n` : `${job.id}\n`);
        return;
      }
      let done;
      let output = '';
      if (json) {
        done = await client.waitFor(job.id);
        output = await client.text(`/v1/jobs/${job.id}/logs`);
      } else {
        done = await client.follow(job.id, (c) =>
          (c.stream === 'stderr' ? process.stderr : process.stdout).write(c.text),
        );
        if (done.state !== 'succeeded')
          process.stderr.write(
            `boxcar: job ${done.id} ${done.state}${done.error ? ` (${done.error})` : ` (exit ${done.exitCode})`}\n`,
          );
      }
      if (json) process.stdout.write(`${JSON.stringify(jobResultJson(done, output))}\n`);
      process.exitCode = cliExitCode(done);
    },
  );
}
