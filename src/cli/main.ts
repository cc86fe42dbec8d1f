#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { SYSTEM_CONFIG } from '../config/system-config.js';
import { defaultStateDir } from '../lib/state-paths.js';
import { UserError, errorMessage } from '../lib/errors.js';
import { createLogger, type Logger } from '../observability/logger.js';

type Register = (program: Command, logger: Logger) => void;

/**
 * Each command's module, imported only when that command runs: a command pays only for what it
 * uses (`run` loads no HTTP server, PostgreSQL driver or metrics), and the help lists commands
 * by their one-line summaries, kept here for that, without loading any.
 */
const COMMANDS: Array<{ commands: Record<string, string>; load: () => Promise<Register> }> = [
  {
    commands: { run: 'run one job in the foreground and exit with its exit code' },
    load: async () => (await import('./commands/run.js')).registerRun,
  },
  {
    commands: {
      pipeline:
        'run a CI pipeline: its jobs as a DAG (stages, needs), each checked out from --repo, with artifacts and caches; then the DAG as a tree',
    },
    load: async () => (await import('./commands/pipeline.js')).registerPipeline,
  },
  {
    commands: { jobs: "list recent jobs: this machine's, or with --server your tenant's on that server" },
    load: async () => (await import('./commands/jobs.js')).registerJobs,
  },
  {
    commands: {
      doctor: 'say, per runtime, whether it can run jobs on this machine (or the cluster) and why not',
    },
    load: async () => (await import('./commands/doctor.js')).registerDoctor,
  },
  {
    commands: { policy: 'the routing policy' },
    load: async () => (await import('./commands/policy.js')).registerPolicy,
  },
  {
    commands: {
      'verify-isolation': 'run attack probes inside real jobs on each runtime; exits non-zero if any escapes',
    },
    load: async () => (await import('./commands/verify-isolation.js')).registerVerifyIsolation,
  },
  {
    commands: { serve: 'run a node: the HTTP API and a scheduler that runs queued jobs' },
    load: async () => (await import('./commands/serve.js')).registerServe,
  },
  {
    commands: { token: 'API tokens of tenants and operators' },
    load: async () => (await import('./commands/token.js')).registerToken,
  },
  {
    commands: { secret: "tenants' secrets (encrypted in the store)" },
    load: async () => (await import('./commands/secret.js')).registerSecret,
  },
  {
    commands: {
      audit:
        'the audit trail: submissions, routing decisions, sandboxes, cancels, token and secret changes, refusals',
    },
    load: async () => (await import('./commands/audit.js')).registerAudit,
  },
  {
    commands: {
      cost: "what finished jobs cost, by tenant, repo, pipeline, runtime or trust; --scenario: the seed's cost table and the Firecracker migration's payback",
    },
    load: async () => (await import('./commands/cost.js')).registerCost,
  },
  {
    commands: { images: "this node's image cache: pull, list, remove, prune" },
    load: async () => (await import('./commands/images.js')).registerImages,
  },
  {
    commands: { registry: "tenants' own registry credentials" },
    load: async () => (await import('./commands/registry.js')).registerRegistry,
  },
  {
    commands: { k8s: 'Boxcar on a Kubernetes cluster' },
    load: async () => (await import('./commands/k8s.js')).registerK8s,
  },
  {
    commands: { submit: 'queue a job on a boxcar server and print its id (with --wait: run it to the end)' },
    load: async () => (await import('./commands/submit.js')).registerSubmit,
  },
  {
    commands: {
      logs: "print a job's output (with -f: follow it live until the job ends)",
      cancel: 'cancel a queued or running job',
    },
    load: async () => (await import('./commands/remote-jobs.js')).registerRemoteJobCommands,
  },
];

/** Global options that take a value: what comes after them is not the command's name. */
const VALUED = new Set(['--state', '--config', '--policy', '--store']);

/** The command `argv` names (`help NAME` names NAME), if it names one: then only its module is loaded. */
function commandNamed(argv: string[]): (typeof COMMANDS)[number] | undefined {
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i] as string;
    if (VALUED.has(a)) i++;
    else if (a === 'help') continue;
    else if (!a.startsWith('-')) return COMMANDS.find((c) => a in c.commands);
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
  if (named) {
    (await named.load())(program, logger);
    for (const cmd of program.commands) cmd.description(named.commands[cmd.name()] ?? '');
  } else {
    // No command named: the help, --version, or a name Commander refuses. Listing is enough.
    for (const c of COMMANDS)
      for (const [name, summary] of Object.entries(c.commands)) program.command(name).description(summary);
  }
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
