import { Option, type Command } from 'commander';
import { z } from 'zod';
import { loadYamlFile } from '../lib/yaml.js';
import { UserError } from '../lib/errors.js';
import { commandGiven, JobSpec, RUNTIME_NAMES, SOURCES } from '../jobs/spec.js';
import { parseOrThrow, yamlPath, type FieldNamer } from '../lib/validation.js';

/** The flags that describe a job, shared by `run` (and later `submit`). */
export interface JobFlags {
  file?: string;
  name?: string;
  runtime?: string;
  source?: string;
  userGroup?: string;
  repository?: string;
  image?: string;
  memory?: string;
  cpus?: string;
  pids?: string;
  timeout?: string;
  tmpSize?: string;
  workspaceSize?: string;
  rootfsSize?: string;
  memoryRequest?: string;
  cpuRequest?: string;
  priority?: string;
  env?: string[];
  network?: boolean;
  cold?: boolean;
}

export function addJobFlags(cmd: Command): Command {
  return cmd
    .option('-f, --file <job.yaml>', 'a job file (flags given too override its fields)')
    .option('--name <name>', 'job name')
    .addOption(new Option('--runtime <runtime>', 'sandbox runtime').choices(RUNTIME_NAMES))
    .addOption(new Option('--source <source>', 'where the code comes from').choices(SOURCES))
    .option('--user-group <group>', 'the submitter’s group, e.g. internal_team')
    .option('--repository <repo>', 'repository the code comes from, e.g. org/app')
    .option('--image <ref>', 'image (default: the built-in busybox image)')
    .option('--memory <size>', 'memory limit, e.g. 256Mi')
    .option('--cpus <cpus>', 'CPU limit in cores, e.g. 1, 0.5, 500m')
    .option('--pids <n>', 'process limit')
    .option('--timeout <duration>', 'time limit, e.g. 10m, 30s')
    .option('--tmp-size <size>', 'size of the writable /tmp')
    .option('--workspace-size <size>', 'size of the writable /workspace')
    .option('--rootfs-size <size>', 'what the job may write over its image’s files (container runtimes)')
    .option(
      '--memory-request <size>',
      'memory the job is expected to use, for placement and quotas (default: its limit)',
    )
    .option(
      '--cpu-request <cpus>',
      'CPU the job is expected to use, for placement and quotas (default: its limit)',
    )
    .option('--priority <n>', 'queue priority, -1000..1000 (default 0; higher runs first)')
    .option('-e, --env <KEY=VALUE...>', 'environment variables')
    .option('--network', 'give the job network (public destinations only, rate-limited; off by default)')
    .option('--cold', 'microVM jobs: boot the VM from scratch, not from a snapshot (for measurement)');
}

const FLAG_FOR: Record<string, string> = {
  'resources.memory': '--memory',
  'resources.cpus': '--cpus',
  'resources.pids': '--pids',
  'resources.tmp': '--tmp-size',
  'resources.workspace': '--workspace-size',
  'resources.rootfs': '--rootfs-size',
  'resources.requests.memory': '--memory-request',
  'resources.requests.cpus': '--cpu-request',
  priority: '--priority',
  cold_boot: '--cold',
  timeout: '--timeout',
  runtime: '--runtime',
  source: '--source',
  user_group: '--user-group',
  repository: '--repository',
  image: '--image',
  name: '--name',
  command: 'the command after --',
};

const flagName: FieldNamer = (path) => {
  const p = yamlPath(path);
  if (p.startsWith('env.')) return `--env ${p.slice(4)}`;
  return FLAG_FOR[p] ?? p;
};

const FileMapping = z.record(z.string(), z.unknown());

const integerOr = (v: string | undefined) =>
  v === undefined ? undefined : Number.isInteger(Number(v)) ? Number(v) : v;

/**
 * The validated job from `-f FILE`, flags and the command after `--`, and the job as written
 * (the file's vocabulary), which is what a server is sent.
 */
export async function jobSpecFromFlags(
  flags: JobFlags,
  command: string[],
): Promise<{ spec: JobSpec; input: Record<string, unknown> }> {
  const { file, ...overrides } = flags;
  const overridden = command.length > 0 || Object.values(overrides).some((v) => v !== undefined);
  // A file alone is validated as written, so errors point at its lines.
  if (file && !overridden)
    return { spec: await loadYamlFile(file, JobSpec), input: await loadYamlFile(file, FileMapping) };
  const base: Record<string, unknown> = file ? { ...(await loadYamlFile(file, FileMapping)) } : {};
  const resources: Record<string, unknown> = {
    ...((base.resources as Record<string, unknown> | undefined) ?? {}),
  };
  const set = (obj: Record<string, unknown>, key: string, v: unknown) => {
    if (v !== undefined) obj[key] = v;
  };
  set(base, 'name', flags.name);
  set(base, 'runtime', flags.runtime);
  set(base, 'source', flags.source);
  set(base, 'user_group', flags.userGroup);
  set(base, 'repository', flags.repository);
  set(base, 'image', flags.image);
  set(base, 'timeout', flags.timeout);
  set(base, 'network', flags.network);
  set(base, 'cold_boot', flags.cold);
  set(resources, 'memory', flags.memory);
  set(resources, 'cpus', flags.cpus);
  set(resources, 'pids', integerOr(flags.pids));
  set(resources, 'tmp', flags.tmpSize);
  set(resources, 'workspace', flags.workspaceSize);
  set(resources, 'rootfs', flags.rootfsSize);
  if (flags.memoryRequest !== undefined || flags.cpuRequest !== undefined) {
    const requests: Record<string, unknown> = {
      ...((resources.requests as Record<string, unknown> | undefined) ?? {}),
    };
    set(requests, 'memory', flags.memoryRequest);
    set(requests, 'cpus', flags.cpuRequest);
    resources.requests = requests;
  }
  base.resources = resources;
  set(base, 'priority', integerOr(flags.priority));
  if (flags.env?.length) {
    const env: Record<string, string> = { ...((base.env as Record<string, string> | undefined) ?? {}) };
    for (const kv of flags.env) {
      const i = kv.indexOf('=');
      if (i <= 0) throw new UserError(`--env ${kv}: expected KEY=VALUE`);
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
    base.env = env;
  }
  if (command.length) base.command = command;
  if (
    !commandGiven({
      command: base.command as string[] | undefined,
      image: typeof base.image === 'string' ? base.image : undefined,
    })
  ) {
    throw new UserError('missing command: give it after --, e.g. boxcar run -- make test');
  }
  return { spec: parseOrThrow(JobSpec, base, file ?? 'boxcar run', flagName), input: base };
}
