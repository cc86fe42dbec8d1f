import type { Command } from 'commander';
import { statePaths } from '../../lib/state-paths.js';
import { hostRuntimes } from '../../runtimes/registry.js';
import { loadConfig } from '../../config/config.js';
import type { Logger } from '../../observability/logger.js';
import { formatTable } from '../table.js';

export function registerDoctor(program: Command, logger: Logger): void {
  program
    .command('doctor')
    .option('--json', 'print the fingerprints as JSON')
    .action(async (opts: { json?: boolean }) => {
      const globals = program.opts<{ state?: string; config?: string }>();
      const config = await loadConfig(globals);
      const paths = statePaths(globals.state);
      // With executor: kubernetes, jobs run on the cluster: its runtimes are the ones to judge.
      const runtimes =
        config.executor === 'kubernetes'
          ? (await import('../../k8s/executor/registry.js')).kubernetesRuntimes(
              config.kubernetes,
              paths,
              logger,
            )
          : hostRuntimes(paths, logger, {
              allowTcgForUntrusted: config.microvm.allow_tcg_for_untrusted,
            });
      const fps = await runtimes.fingerprintAll();
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(fps, null, 2)}\n`);
      } else {
        const rows = fps.map((f) => [f.runtime, f.usable ? 'yes' : 'no', f.reason]);
        process.stdout.write(`${formatTable(['RUNTIME', 'USABLE', 'WHY'], rows)}\n`);
        for (const f of fps.filter((x) => Object.keys(x.details).length)) {
          process.stdout.write(
            `\n${f.runtime}: ${Object.entries(f.details)
              .map(([k, v]) => `${k}=${v}`)
              .join(', ')}\n`,
          );
        }
      }
      if (!fps.some((f) => f.usable)) process.exitCode = 1;
    });
}
