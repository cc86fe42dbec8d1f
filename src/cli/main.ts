#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { SYSTEM_CONFIG } from '../config/config.js';
import { defaultStateDir } from '../lib/state-paths.js';
import { UserError, errorMessage } from '../lib/errors.js';
import { createLogger, type Logger } from '../observability/logger.js';

type Register = (program: Command, logger: Logger) => void;

/**
 * Each command's module, imported only when that command runs (all of them for the help): a
 * command pays only for what it uses (`run` loads no HTTP server, PostgreSQL driver or metrics).
 */
const COMMANDS: Array<{ names: string[]; load: () => Promise<Register> }> = [
  { names: ['run'], load: async () => (await import('./commands/run.js')).registerRun },
  { names: ['pipeline'], load: async () => (await import('./commands/pipeline.js')).registerPipeline },
  { names: ['jobs'], load: async () => (await import('./commands/jobs.js')).registerJobs },
  { names: ['doctor'], load: async () => (await import('./commands/doctor.js')).registerDoctor },
  { names: ['policy'], load: async () => (await import('./commands/policy.js')).registerPolicy },
  {
    names: ['verify-isolation'],
    load: async () => (await import('./commands/verify-isolation.js')).registerVerifyIsolation,
  },
  { names: ['serve'], load: async () => (await import('./commands/serve.js')).registerServe },
  { names: ['token'], load: async () => (await import('./commands/token.js')).registerToken },
  { names: ['secret'], load: async () => (await import('./commands/secret.js')).registerSecret },
  { names: ['audit'], load: async () => (await import('./commands/audit.js')).registerAudit },
  { names: ['cost'], load: async () => (await import('./commands/cost.js')).registerCost },
  { names: ['images'], load: async () => (await import('./commands/images.js')).registerImages },
  { names: ['registry'], load: async () => (await import('./commands/registry.js')).registerRegistry },
  {
    names: ['k8s'],
    load: async () => {
      const { registerK8s } = await import('./commands/k8s.js');
      return (p) => registerK8s(p);
    },
  },
  {
    names: ['submit'],
    load: async () => {
      const { registerSubmit } = await import('./commands/submit.js');
      return (p) => registerSubmit(p);
    },
  },
  {
    names: ['logs', 'cancel'],
    load: async () => {
      const { registerRemoteJobCommands } = await import('./commands/remote-jobs.js');
      return (p) => registerRemoteJobCommands(p);
    },
  },
];

/** Global options that take a value: what comes after them is not the command's name. */
const VALUED = new Set(['--state', '--config', '--policy', '--store']);

/** The command `argv` names, if it names one: then only its module is loaded. */
function commandNamed(argv: string[]): (typeof COMMANDS)[number] | undefined {
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i] as string;
    if (VALUED.has(a)) i++;
    else if (!a.startsWith('-')) return COMMANDS.find((c) => c.names.includes(a));
  }
  return undefined;
}

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
  const named = commandNamed(argv);
  for (const c of named ? [named] : COMMANDS) (await c.load())(program, logger);
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
