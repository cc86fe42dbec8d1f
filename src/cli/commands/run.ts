import type { Command } from 'commander';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { UserError } from '../../errors.js';
import { isWasmModule } from '../../images/image.js';
import { reconcileOrphans } from '../../jobs/reconcile.js';
import { cliExitCode, jobResultJson } from '../../jobs/result.js';
import { formatBytes } from '../../jobs/quantity.js';
import type { Logger } from '../../observability/logger.js';
import { addJobFlags, jobSpecFromFlags, type JobFlags } from '../job-flags.js';
import { cancelOnSignals, runLocalJob } from '../local-job.js';
import { ms } from '../table.js';

export function registerRun(program: Command, logger: Logger): void {
  const cmd = program
    .command('run')
    .description('run one job in the foreground and exit with its exit code')
    .argument('[command...]', 'the command to run, after --')
    .option('--json', 'print only one JSON result object on stdout, at the end');
  addJobFlags(cmd).action(async (command: string[], opts: JobFlags & { json?: boolean }) => {
    const { spec } = await jobSpecFromFlags(opts, command);
    if (process.getuid?.() !== 0)
      throw new UserError(
        'boxcar run needs root (it creates containers, cgroups and namespaces); run it as root',
      );
    const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
    // A WASM job's thread boots while the job is being decided.
    if (spec.runtime === 'wasm' || isWasmModule(spec.image)) void box.runtimes.get('wasm').warm?.();
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
      await box.close();
    }
  });
}
