import type { Command } from 'commander';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { startTracing } from '../../observability/tracing-setup.js';
import { UserError } from '../../lib/errors.js';
import { isWasmModule } from '../../jobs/spec.js';
import { reconcileOrphans } from '../../runner/reconcile.js';
import { cliExitCode, jobResultJson } from '../../runner/result.js';
import { formatBytes } from '../../lib/quantity.js';
import type { Logger } from '../../observability/logger.js';
import { addJobFlags, jobSpecFromFlags, type JobFlags } from '../job-flags.js';
import { runLocalJob } from '../../runner/local.js';
import { cancelOnSignals } from '../signals.js';
import { ms } from '../table.js';

export function registerRun(program: Command, logger: Logger): void {
  const cmd = program
    .command('run')
    .argument('[command...]', 'the command to run, after --')
    .option('--json', 'print only one JSON result object on stdout, at the end');
  addJobFlags(cmd).action(async (command: string[], opts: JobFlags & { json?: boolean }) => {
    const { spec } = await jobSpecFromFlags(opts, command);
    if (process.getuid?.() !== 0)
      throw new UserError(
        'boxcar run needs root (it creates containers, cgroups and namespaces); run it as root',
      );
    const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
    // Its span, when a collector is configured (the SDK is loaded only then).
    const tracing = await startTracing(box.config.observability.otlp_endpoint, logger);
    // The runtime a job names, or the lightweight one for a module, gets ready while the job is decided.
    const early = spec.runtime ?? (isWasmModule(spec.image) ? box.policy.lightweight?.runtime : undefined);
    if (early) void box.runtimes.get(early).warm?.();
    const cancel = cancelOnSignals();
    try {
      await reconcileOrphans(box);
      const { record, output } = await runLocalJob(box, spec, {
        signal: cancel.signal,
        onOutput: opts.json
          ? undefined
          : (c) => (c.stream === 'stdout' ? process.stdout : process.stderr).write(c.text),
      });
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(jobResultJson(record, output))}\n`);
      } else if (record.state !== 'succeeded') {
        const detail =
          record.error ??
          `exit ${record.exitCode}${record.oomKilled ? ', out of memory' : ''}, ran ${ms(record.durationMs)}, peak ${formatBytes(record.peakMemoryBytes ?? 0)}`;
        process.stderr.write(`boxcar: job ${record.id} ${record.state} (${detail})\n`);
      }
      process.exitCode = cliExitCode(record);
    } finally {
      cancel.dispose();
      await tracing?.shutdown();
      await box.close();
    }
  });
}
