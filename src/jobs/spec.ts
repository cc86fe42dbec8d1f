import { z } from 'zod';
import { parseBytes, parseCpuMillis, parseDurationMs } from '../lib/quantity.js';
import { parsedField } from '../lib/validation.js';

/** A job's image is a WebAssembly module (a `.wasm` file) rather than an OCI image. */
export function isWasmModule(ref: string | undefined): boolean {
  return ref?.endsWith('.wasm') ?? false;
}

/** Every runtime Boxcar knows by name; whether one is usable on a node is the driver's fingerprint. */
export const RUNTIME_NAMES = ['runc', 'gvisor', 'firecracker', 'wasm'] as const;
export const RuntimeName = z.enum(RUNTIME_NAMES);
export type RuntimeName = z.infer<typeof RuntimeName>;

/** Where the code comes from: the seed's trust inputs. */
export const SOURCES = ['internal_repo', 'external_pr'] as const;
export const Source = z.enum(SOURCES);
export type Source = z.infer<typeof Source>;

export const DEFAULTS = {
  memory: '256Mi',
  cpus: '1',
  pids: 256,
  tmp: '64Mi',
  workspace: '256Mi',
  rootfs: '1Gi',
  timeout: '10m',
  /** As a Kubernetes LimitRange's defaultRequest: most CI jobs wait on I/O most of the time. */
  cpuRequestMillis: 100,
} as const;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const JOB_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

const Resources = z
  .strictObject({
    memory: parsedField(parseBytes).prefault(DEFAULTS.memory),
    cpus: parsedField(parseCpuMillis).prefault(DEFAULTS.cpus),
    pids: z
      .number()
      .int()
      .min(8, 'must be at least 8 (the shell and its children need a few)')
      .max(65536)
      .default(DEFAULTS.pids),
    tmp: parsedField(parseBytes).prefault(DEFAULTS.tmp),
    workspace: parsedField(parseBytes).prefault(DEFAULTS.workspace),
    /** What the job may write over its image's files (container runtimes; held in memory, like tmp). */
    rootfs: parsedField(parseBytes).prefault(DEFAULTS.rootfs),
    /**
     * What the job is expected to use, for placement and quotas (Kubernetes requests); the
     * values above are its limits. Memory defaults to its limit, CPU to 100m (or the limit if
     * lower).
     */
    requests: z
      .strictObject({
        memory: parsedField(parseBytes).optional(),
        cpus: parsedField(parseCpuMillis).optional(),
      })
      .default({}),
  })
  .prefault({});

/** The resources of a job that asks for none, parsed (bytes, millicores). */
export const DEFAULT_RESOURCES = Resources.parse({});

/**
 * The seed's rate limiter (5.3): a token bucket of `size` bytes refilled every `refill_time`
 * milliseconds. Default: 100 MB per second. (The seed's own example gives refill_time
 * 1000000000, a second in nanoseconds; Firecracker and Boxcar count milliseconds.)
 */
const Bandwidth = z.strictObject({
  size: z.number().int().positive('bytes per bucket, e.g. 100000000'),
  refill_time: z.number().int().positive('milliseconds to refill the bucket, e.g. 1000'),
});

const NetworkInput = z.union([
  z.boolean().transform((enabled) => ({ enabled, egress_rate_limiter: undefined })),
  z.strictObject({
    enabled: z.boolean().default(true),
    egress_rate_limiter: z.strictObject({ bandwidth: Bandwidth }).optional(),
  }),
]);

/** Names a job's workspace may hold: relative, inside it, no `..` (globs allowed, as in GitLab CI). */
const WorkspacePath = z
  .string()
  .min(1)
  .refine(
    (p) => !p.startsWith('/') && !p.split('/').includes('..'),
    'must be a path inside the workspace, relative and without "..", e.g. dist/ or coverage/*.xml',
  );

const COMMIT = /^[0-9a-f]{40}$/;

/**
 * The code a job runs on: one commit of a git repository, put into its /workspace before it
 * starts. The URL's transport must be allowed (https and ssh; file only where the config says).
 */
const Checkout = z.strictObject({
  url: z.string().min(1, 'give the repository to clone, e.g. https://github.com/org/repo.git'),
  commit: z.string().regex(COMMIT, 'must be a full 40-character commit id, e.g. from `git rev-parse HEAD`'),
  /** Off unless asked: a submodule is more code from another repository. */
  submodules: z.boolean().default(false),
});

/** Files kept from the job's workspace when it ends, for later jobs (`needs`) and for download. */
const Artifacts = z.strictObject({
  paths: z.array(WorkspacePath).min(1, 'name at least one path, e.g. [dist/]'),
  expire_in: parsedField(parseDurationMs).prefault('7d'),
  /** Also kept when the job fails (as GitLab's `artifacts:when: always`). */
  when: z.enum(['on_success', 'on_failure', 'always']).default('on_success'),
});

/**
 * Files restored into the workspace before the job and saved after it, per tenant, repository
 * and key; untrusted jobs read and write caches of their own.
 */
const Cache = z.strictObject({
  key: z
    .union([
      z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'use 1-64 letters, digits, ".", "_" or "-"'),
      z.strictObject({
        /** The key is the digest of these files' contents (as GitLab's `cache:key:files`). */
        files: z.array(WorkspacePath).min(1).max(2, 'at most two files, as in GitLab CI'),
        prefix: z
          .string()
          .regex(/^[A-Za-z0-9._-]{1,32}$/)
          .optional(),
      }),
    ])
    .default('default'),
  paths: z.array(WorkspacePath).min(1, 'name at least one path, e.g. [node_modules/]'),
  /** pull-push (default), pull (restore only) or push (save only), as in GitLab CI. */
  policy: z.enum(['pull-push', 'pull', 'push']).default('pull-push'),
});

/**
 * A job as written in a YAML job file (snake_case like the seed's policy) or assembled from
 * CLI flags. `command` as a string is a shell script run by `sh -c`.
 */
export const JobSpecInput = z.strictObject({
  name: z.string().regex(JOB_NAME, 'use 1-63 letters, digits, ".", "_" or "-"').default('job'),
  image: z.string().min(1).optional(),
  /** A string runs with `sh -c`; a list as is. For a WASM module: its arguments (optional). */
  command: z
    .union([
      z
        .string()
        .min(1, 'give the command to run, e.g. "make test"')
        .transform((s) => ['sh', '-c', s]),
      z.array(z.string()).min(1, 'give the command to run, e.g. [make, test]'),
    ])
    .optional(),
  env: z
    .record(
      z.string().regex(ENV_NAME, 'environment names are letters, digits and _, not starting with a digit'),
      z.union([z.string(), z.number(), z.boolean()]).transform(String),
    )
    .default({}),
  /** Names of secrets the job wants as environment variables; untrusted jobs never get them. */
  secrets: z.array(z.string().regex(ENV_NAME, 'secret names are environment variable names')).default([]),
  runtime: RuntimeName.optional(),
  source: Source.optional(),
  user_group: z.string().min(1).optional(),
  repository: z.string().min(1).optional(),
  resources: Resources,
  /** Higher runs first among queued jobs of the same tenant and across tenants. */
  priority: z.number().int().min(-1000).max(1000).default(0),
  timeout: parsedField(parseDurationMs).prefault(DEFAULTS.timeout),
  /** Off by default: a job has only its own loopback unless it asks. */
  network: NetworkInput.default(false as never),
  /** MicroVM jobs only: boot the VM from scratch instead of restoring a snapshot (to measure). */
  cold_boot: z.boolean().default(false),
  checkout: Checkout.optional(),
  artifacts: Artifacts.optional(),
  cache: Cache.optional(),
});

export type JobSpecInput = z.output<typeof JobSpecInput>;

/**
 * A job runs a command in an image, except a WASM module, whose command is its arguments. A
 * registry reference may name a module published as an artifact: whether it needs a command is
 * known once it is pinned (see images/resolve.ts).
 */
export const commandGiven = (s: Pick<JobSpecInput, 'command' | 'image'>) =>
  s.command !== undefined ||
  isWasmModule(s.image) ||
  (s.image !== undefined && !s.image.startsWith('boxcar/'));
export const COMMAND_MISSING = 'is required: give the command to run, e.g. "make test"';
/** zod's refinement parameters (zod takes the object over: read the text from COMMAND_MISSING). */
export const COMMAND_REQUIRED = { message: COMMAND_MISSING, path: ['command'] };

/** From the file's vocabulary to the normalized job (camelCase, bytes, millicores, ms). */
export const normalizeJobSpec = (s: JobSpecInput) => ({
  name: s.name,
  image: s.image,
  /** A WASM module (a file, or an artifact in a registry, known once pinned) or an OCI image. */
  imageKind: (isWasmModule(s.image) ? 'wasm' : 'oci') as 'wasm' | 'oci',
  command: s.command ?? [],
  env: s.env,
  secrets: s.secrets,
  runtime: s.runtime,
  source: s.source,
  userGroup: s.user_group,
  repository: s.repository,
  limits: {
    memoryBytes: s.resources.memory,
    cpuMillis: s.resources.cpus,
    pids: s.resources.pids,
    tmpBytes: s.resources.tmp,
    workspaceBytes: s.resources.workspace,
    rootfsBytes: s.resources.rootfs,
  },
  requests: {
    memoryBytes: s.resources.requests.memory ?? s.resources.memory,
    cpuMillis: s.resources.requests.cpus ?? Math.min(s.resources.cpus, DEFAULTS.cpuRequestMillis),
  },
  priority: s.priority,
  timeoutMs: s.timeout,
  coldBoot: s.cold_boot,
  checkout: s.checkout,
  artifacts: s.artifacts && {
    paths: s.artifacts.paths,
    expireInMs: s.artifacts.expire_in,
    when: s.artifacts.when,
  },
  cache: s.cache,
  /**
   * Jobs of the same pipeline whose artifacts go into this job's workspace (its `needs`):
   * set by the pipeline when it queues the job, never by a job file or an API body.
   */
  artifactsFrom: [] as Array<{ jobId: string; name: string }>,
  network: {
    enabled: s.network.enabled,
    egress: {
      sizeBytes: s.network.egress_rate_limiter?.bandwidth.size ?? 100_000_000,
      refillMs: s.network.egress_rate_limiter?.bandwidth.refill_time ?? 1000,
    },
  },
});

/** As in Kubernetes, a request above its limit is an error, not a silent raise of the limit. */
export const requestsWithinLimits = (s: Pick<JobSpecInput, 'resources'>, ctx: z.RefinementCtx) => {
  const { requests, memory, cpus } = s.resources;
  if (requests.memory !== undefined && requests.memory > memory)
    ctx.addIssue({
      code: 'custom',
      message: `${requests.memory} bytes is more than the memory limit (${memory}); lower the request or raise resources.memory`,
      path: ['resources', 'requests', 'memory'],
    });
  if (requests.cpus !== undefined && requests.cpus > cpus)
    ctx.addIssue({
      code: 'custom',
      message: `${requests.cpus}m is more than the CPU limit (${cpus}m); lower the request or raise resources.cpus`,
      path: ['resources', 'requests', 'cpus'],
    });
};

export const JobSpec = JobSpecInput.refine(commandGiven, COMMAND_REQUIRED)
  .superRefine(requestsWithinLimits)
  .transform(normalizeJobSpec);

/** The validated, normalized job: what the store records and drivers receive. */
export type JobSpec = z.output<typeof JobSpec>;
export type JobLimits = JobSpec['limits'];
export type JobNetwork = JobSpec['network'];
export type JobCheckout = NonNullable<JobSpec['checkout']>;
export type JobArtifacts = NonNullable<JobSpec['artifacts']>;
export type JobCache = NonNullable<JobSpec['cache']>;
