import type { Command } from 'commander';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { loadYamlFile } from '../../lib/yaml.js';
import { UserError } from '../../lib/errors.js';
import { PipelineSpec, pipelineJobs, type PipelineJob } from '../../jobs/pipeline.js';
import { pinSpec } from '../../images/resolve.js';
import { formatBytes } from '../../lib/quantity.js';
import { reconcileOrphans } from '../../runner/reconcile.js';
import { jobResultJson } from '../../runner/result.js';
import type { Logger } from '../../observability/logger.js';
import type { JobRecord } from '../../store/store.js';
import { runLocalJob } from '../../runner/local.js';
import { cancelOnSignals } from '../signals.js';
import { dollars, formatTable, ms } from '../table.js';

export function registerPipeline(program: Command, logger: Logger): void {
  program
    .command('pipeline')
    .description('run a CI pipeline file: its jobs in order, then a summary table')
    .argument('<file>', 'pipeline YAML file')
    .option('--json', 'print one JSON object with every job result')
    .action(async (file: string, opts: { json?: boolean }) => {
      const pipeline = await loadYamlFile(file, PipelineSpec);
      if (process.getuid?.() !== 0)
        throw new UserError('boxcar pipeline needs root (it creates containers); run it as root');
      const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
      const cancel = cancelOnSignals();
      const results: Array<{ record: JobRecord; output: string; allowFailure: boolean }> = [];
      try {
        await reconcileOrphans(box);
        const say = (s: string) => (opts.json ? process.stderr : process.stdout).write(s);
        // Every image is pinned before the first job runs: a pipeline whose image cannot be
        // found fails now, naming its job, not halfway through with jobs already run.
        const jobs: PipelineJob[] = [];
        for (const job of pipelineJobs(pipeline)) {
          const spec = await pinSpec(job.spec, box.puller).catch((err: unknown) => {
            throw err instanceof UserError ? new UserError(`job ${job.spec.name}: ${err.message}`) : err;
          });
          jobs.push({ ...job, spec });
        }
        say(`pipeline ${pipeline.name}: ${pipeline.jobs.length} jobs\n`);
        for (const job of jobs) {
          if (cancel.signal.aborted) break;
          say(`\n── ${job.spec.name} ──\n`);
          const r = await runLocalJob(box, job.spec, {
            signal: cancel.signal,
            onOutput: (c) => say(c.text.replace(/^(?=.)/gm, '│ ')),
          });
          results.push({ ...r, allowFailure: job.allowFailure });
          say(
            `└ ${r.record.state}${r.record.exitCode !== null ? ` (exit ${r.record.exitCode})` : ''}${r.record.error ? `: ${r.record.error}` : ''}\n`,
          );
        }
        const failed = results.filter((r) => r.record.state !== 'succeeded' && !r.allowFailure);
        const passed = !cancel.signal.aborted && failed.length === 0;
        if (opts.json) {
          process.stdout.write(
            `${JSON.stringify({ pipeline: pipeline.name, passed, jobs: results.map((r) => ({ ...jobResultJson(r.record, r.output), allowFailure: r.allowFailure })) })}\n`,
          );
        } else {
          const rows = results.map(({ record: j, allowFailure }) => [
            j.name,
            j.runtime,
            j.state === 'succeeded' ? 'ok' : allowFailure ? `${j.state} (allowed)` : j.state.toUpperCase(),
            j.exitCode === null ? '-' : String(j.exitCode),
            ms(j.startupMs),
            ms(j.durationMs),
            j.peakMemoryBytes === null ? '-' : formatBytes(j.peakMemoryBytes),
            dollars(j.costDollars),
          ]);
          process.stdout.write(
            `\n${formatTable(['JOB', 'RUNTIME', 'RESULT', 'EXIT', 'STARTUP', 'DURATION', 'PEAK MEM', 'COST'], rows)}\n`,
          );
          process.stdout.write(
            `\npipeline ${pipeline.name}: ${passed ? 'passed' : 'FAILED'} (${results.length} jobs, ${failed.length} failed${results.some((r) => r.allowFailure && r.record.state !== 'succeeded') ? ', allowed failures not counted' : ''})\n`,
          );
        }
        process.exitCode = passed ? 0 : 1;
      } finally {
        cancel.dispose();
        await box.close();
      }
    });
}
