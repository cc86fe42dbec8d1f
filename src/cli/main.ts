#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { SYSTEM_CONFIG } from '../config/config.js';
import { defaultStateDir } from '../lib/state-paths.js';
import { UserError, errorMessage } from '../lib/errors.js';
import { createLogger } from '../observability/logger.js';
import { registerAudit } from './commands/audit.js';
import { registerCost } from './commands/cost.js';
import { registerDoctor } from './commands/doctor.js';
import { registerImages } from './commands/images.js';
import { registerRegistry } from './commands/registry.js';
import { registerJobs } from './commands/jobs.js';
import { registerK8s } from './commands/k8s.js';
import { registerPipeline } from './commands/pipeline.js';
import { registerPolicy } from './commands/policy.js';
import { registerRemoteJobCommands } from './commands/remote-jobs.js';
import { registerRun } from './commands/run.js';
import { registerSecret } from './commands/secret.js';
import { registerServe } from './commands/serve.js';
import { registerSubmit } from './commands/submit.js';
import { registerToken } from './commands/token.js';
import { registerVerifyIsolation } from './commands/verify-isolation.js';

const { version } = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

async function main(argv: string[]): Promise<void> {
  const logger = createLogger();
  const program = new Command('boxcar')
    .description('Boxcar: CI jobs in sandboxes chosen by trust (runc, gVisor, microVMs, WASM)')
    .version(version)
    .option('--state <dir>', 'state directory (or BOXCAR_STATE)', defaultStateDir())
    .option('--config <file>', `config file (or BOXCAR_CONFIG; default ${SYSTEM_CONFIG} when it exists)`)
    .option('--policy <file>', 'routing policy file (default: the config file’s, else the built-in one)')
    .option(
      '--store <url>',
      'job store: postgres://… for several nodes (default: SQLite in the state directory)',
    )
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(`boxcar: ${text.replace(/^error: /, '')}`) });
  registerRun(program, logger);
  registerPipeline(program, logger);
  registerJobs(program, logger);
  registerDoctor(program, logger);
  registerPolicy(program, logger);
  registerVerifyIsolation(program, logger);
  registerServe(program, logger);
  registerToken(program, logger);
  registerSecret(program, logger);
  registerAudit(program, logger);
  registerCost(program, logger);
  registerImages(program, logger);
  registerRegistry(program, logger);
  registerK8s(program);
  registerSubmit(program);
  registerRemoteJobCommands(program);
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const cmd of all(program).slice(1)) cmd.exitOverride().configureOutput(program.configureOutput());

  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has printed its message already; help and --version are successes.
      process.exitCode = err.exitCode === 0 ? 0 : 125;
      return;
    }
    if (err instanceof UserError) {
      process.stderr.write(`boxcar: ${err.message}\n`);
      process.exitCode = err.exitCode;
      return;
    }
    logger.error({ err }, 'unexpected failure');
    process.stderr.write(
      `boxcar: internal error: ${errorMessage(err)} (BOXCAR_LOG_LEVEL=debug shows details)\n`,
    );
    process.exitCode = 125;
  }
}

await main(process.argv);
