import { fileURLToPath } from 'node:url';
import type { ResolvedImage } from '../../images/image.js';
import type { JobSpec } from '../../jobs/spec.js';
import { builtCProgram } from '../../lib/c-program.js';
import { digestHex, sha256 } from '../../lib/digest.js';
import type { Logger } from '../../observability/logger.js';
import type { SandboxRequest } from '../runtime.js';
import { IdlePool } from './idle-pool.js';

const INIT_SOURCE = fileURLToPath(new URL('../../../../src/runtimes/shared/pool-init.c', import.meta.url));

/**
 * How a pooled container's init is started and gets its job (pool-init.c): `fd`, runc executes
 * the fd the host opened on the init and passes it a FIFO; `stdin`, for runsc, which passes no
 * fds: the init is copied into the container's root, and the job comes on its stdin.
 */
export type PoolEntry = 'fd' | 'stdin';

/** Where runc finds the init (`fd`). */
export const POOL_INIT_PATH = '/proc/self/fd/3';
/** Where the init is in the container's root (`stdin`) until it unlinks itself. */
export const POOL_INIT_IN_ROOT = '/.boxcar-pool-init';

/** The init's command line in the container. */
export function poolInitArgs(entry: PoolEntry): string[] {
  return entry === 'fd' ? [POOL_INIT_PATH, 'fd'] : [POOL_INIT_IN_ROOT, 'stdin'];
}

/**
 * conmon runs `<runtime> <runtime args…> create … ID`; for a pooled container the runtime is
 * this script: it opens the init binary (fd 3) and the command FIFO (fd 4, made with the
 * container's root by job-launcher.c), and hands both to the container with
 * `create --preserve-fds 2`. Arguments: init, FIFO, then the OCI runtime's own command line.
 */
export const POOL_WRAPPER = [
  'init=$1 channel=$2; shift 2',
  'added=0',
  'for a do',
  '  shift',
  '  if [ $added = 0 ] && [ "$a" = create ]; then set -- "$@" create --preserve-fds 2; added=1',
  '  else set -- "$@" "$a"; fi',
  'done',
  'exec 3<"$init" 4<>"$channel"',
  'exec "$@"',
].join('\n');

/** Per key: as many idle containers as jobs in the last 10 s; none after 5 idle minutes. */
const DEMAND = { burstMs: 10_000, idleMs: 5 * 60_000 };

/** An idle container: created, started, its first process waiting on its FIFO for a job. */
export interface PoolMember {
  id: string;
  logPath: string;
  conmonPid: number;
  /** The container's first process (the init, until the job's exec replaces it). */
  containerPid: number;
  /** Capabilities the init had for its own work and drops before the job (a hex mask). */
  dropCapabilities: string;
}

/** What every container of one pool key is made from: the first job of that shape's spec and image. */
export interface PoolTemplate {
  spec: JobSpec;
  image: ResolvedImage;
}

/**
 * A driver's warm pool of containers (config `warm_pools`: the most per key), by key: containers whose OCI config
 * would be the same but for the job's command, environment, hostname and cgroup limits, which
 * are what a job brings when it takes one over. A request with a workspace or network never
 * takes one (their mounts and namespaces are the job's own); each member serves one job.
 */
export class ContainerPool {
  private readonly pool: IdlePool<PoolMember>;
  private readonly templates = new Map<string, PoolTemplate>();

  constructor(
    readonly size: number,
    create: (template: PoolTemplate) => Promise<PoolMember>,
    dispose: (member: PoolMember) => Promise<void>,
    logger: Logger,
  ) {
    this.pool = new IdlePool(
      size,
      (key) => {
        const template = this.templates.get(key);
        if (!template) throw new Error(`unknown container pool key ${key}`);
        return create(template);
      },
      dispose,
      logger,
      DEMAND,
    );
  }

  get enabled(): boolean {
    return this.pool.enabled;
  }

  /**
   * The pool key of a request, or undefined when it cannot take a pooled container. `shape` is
   * the request's OCI config with everything a job brings at take-over left out.
   */
  keyOf(req: SandboxRequest, shape: Record<string, unknown>): string | undefined {
    if (!this.enabled || req.workspaceDir || req.spec.network.enabled) return undefined;
    const key = `${digestHex(req.image.digest).slice(0, 12)}-${digestHex(sha256(JSON.stringify(shape))).slice(0, 16)}`;
    if (!this.templates.has(key)) this.templates.set(key, { spec: req.spec, image: req.image });
    return key;
  }

  take(key: string): PoolMember | undefined {
    return this.pool.take(key);
  }

  refill(key: string): void {
    this.pool.refill(key);
  }

  /** Keys whose containers are being made now. */
  filling(): number {
    return this.pool.fillingCount();
  }

  entries(): Array<{ key: string; member: PoolMember }> {
    return this.pool.entries();
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/** The pooled containers' init, built static: it runs inside images that may have no libc. */
export function poolInit(dir: string): Promise<string> {
  return builtCProgram(INIT_SOURCE, dir, 'the warm pool of containers', ['-static']);
}

/**
 * The OCI config without what a job brings at take-over: what all members of a key share.
 * `keepMemory`: the sandbox sizes itself by its memory limit when it starts (gVisor's sentry
 * reports it as MemTotal), so a member serves only jobs of its limit.
 */
export function poolShape(spec: Record<string, unknown>, keepMemory = false): Record<string, unknown> {
  const s = structuredClone(spec) as {
    process: Record<string, unknown>;
    root: Record<string, unknown>;
    linux: Record<string, unknown>;
    hostname?: string;
  };
  delete s.process.args;
  delete s.process.env;
  delete s.process.cwd;
  delete s.hostname;
  delete s.root.path;
  delete s.linux.cgroupsPath;
  const memory = (s.linux.resources as { memory?: unknown } | undefined)?.memory;
  delete s.linux.resources;
  if (keepMemory) s.linux.resources = { memory };
  return s;
}

/** What a job brings to a pooled container, as pool-init.c reads it. */
export interface JobMessage {
  /** Set by the init ("": the host sets it, or none). */
  hostname: string;
  /** Hex mask of the capabilities the init drops before the job ("0": none). */
  dropCapabilities: string;
  cwd: string;
  args: readonly string[];
  env: readonly string[];
}

/** The bytes pool-init.c reads: length, then hostname, capability mask, cwd, argc, argv…, env…, each NUL-terminated. */
export function jobMessage(m: JobMessage): Buffer {
  const strings = [m.hostname, m.dropCapabilities, m.cwd, String(m.args.length), ...m.args, ...m.env];
  for (const s of strings)
    if (s.includes('\0')) throw new Error('a command, argument or variable of the job holds a NUL byte');
  const body = Buffer.from(strings.map((s) => `${s}\0`).join(''));
  const head = Buffer.alloc(4);
  head.writeUInt32LE(body.length);
  return Buffer.concat([head, body]);
}
