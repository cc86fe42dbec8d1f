import { Option, type Command } from 'commander';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { UserError } from '../../lib/errors.js';
import { verifyIsolation, type ProbeResult } from '../../isolation/verify.js';
import { RUNTIME_NAMES, type RuntimeName } from '../../jobs/spec.js';
import type { Logger } from '../../observability/logger.js';
import { formatTable } from '../table.js';

export function registerVerifyIsolation(program: Command, logger: Logger): void {
  program
    .command('verify-isolation')
    .addOption(
      new Option('--runtime <runtime...>', 'runtimes to verify (default: every one usable here)').choices(
        RUNTIME_NAMES,
      ),
    )
    .option('--json', 'print the results as JSON')
    .action(async (opts: { runtime?: RuntimeName[]; json?: boolean }) => {
      if (process.getuid?.() !== 0)
        throw new UserError('boxcar verify-isolation needs root (it runs real jobs); run it as root');
      const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
      try {
        const fps = await box.runtimes.fingerprintAll();
        const usable = fps.filter((f) => f.usable).map((f) => f.runtime);
        const runtimes = opts.runtime ?? usable;
        for (const r of runtimes) {
          if (!usable.includes(r))
            throw new UserError(
              `runtime ${r} cannot run jobs here: ${fps.find((f) => f.runtime === r)?.reason}`,
            );
        }
        const results = await verifyIsolation(
          box,
          runtimes,
          opts.json ? undefined : (r) => process.stderr.write(`${r.runtime} ${r.probe}: ${r.verdict}\n`),
        );
        const failed = results.filter((r) => r.verdict !== 'blocked');
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ passed: failed.length === 0, results })}\n`);
        } else {
          process.stdout.write(`${table(results, runtimes)}\n\n`);
          for (const f of failed)
            process.stdout.write(`${f.runtime} ${f.probe}: ${f.verdict}: ${f.detail}\n`);
          process.stdout.write(
            `${results.length - failed.length} blocked, ${failed.length} escaped or errored\n`,
          );
        }
        if (failed.length) process.exitCode = 1;
      } finally {
        await box.close();
      }
    });
}

function table(results: ProbeResult[], runtimes: RuntimeName[]): string {
  const probes = [...new Set(results.map((r) => r.probe))];
  const rows = probes.map((p) => [
    p,
    ...runtimes.map((rt) => results.find((r) => r.probe === p && r.runtime === rt)?.verdict ?? '-'),
  ]);
  return formatTable(['PROBE', ...runtimes.map((r) => r.toUpperCase())], rows);
}
