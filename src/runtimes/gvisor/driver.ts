import type { Capabilities, Fingerprint, SandboxRequest } from '../runtime.js';
import type { TaskHandle } from '../../jobs/handle.js';
import {
  ConmonDriver,
  type ConmonDriverOptions,
  type OciTool,
  type ToolOptions,
} from '../shared/conmon-driver.js';
import { poolShape, type PoolEntry } from '../shared/container-pool.js';
import { ociRuntimeFingerprint } from '../shared/fingerprint.js';
import type { SeccompProfile } from '../shared/seccomp.js';
import { choosePlatform, type Platform } from './platform.js';

/**
 * runsc inside the job's namespace, where this runsc build's "root namespace" check (does
 * /proc/sys/net/core/rmem_default exist? — it does in every namespace on kernels ≥ 5.x) is
 * answered no: a private mount namespace hides that directory under an empty tmpfs. /proc/sys/net
 * shows the namespace of whoever looks, so the mount is made from inside the job's namespace.
 */
export function netstackWrapper(netnsPath: string): string[] {
  return [
    '/usr/bin/nsenter',
    `--net=${netnsPath}`,
    '/usr/bin/unshare',
    '--mount',
    '--propagation',
    'private',
    '/bin/sh',
    '-c',
    'mount -t tmpfs -o size=4k,mode=0555 boxcar-netstack /proc/sys/net/core && exec "$@"',
    'runsc-netstack',
  ];
}

/** Host tasks gVisor's own processes need (measured ≈ 54 idle), with headroom for load. */
export const SANDBOX_TASKS = 128;

/**
 * Untrusted jobs on gVisor (`runsc`): the job's syscalls go to gVisor's own kernel (the
 * sentry), not the host's. Same conmon monitor, OCI bundle and limits as runc; the sentry and
 * the gofer run inside the job's cgroup, so its limits and peak memory cover them too.
 */
export class GvisorDriver extends ConmonDriver {
  readonly name = 'gvisor' as const;
  /** The sentry and gofer are in the job's cgroup: its limits and figures cover them. */
  readonly capabilities: Capabilities = {
    sharedKernel: false,
    workload: 'image',
    memoryMeasure: 'cgroup',
    memoryOverheadBytes: () => 0,
    gracefulStop: true,
    hostCgroup: true,
    network: true,
    survivesRestart: true,
    writableRoot: true,
    workspaceReturned: true,
  };
  /** runsc passes a container no fds: a pooled init is in its root, its job comes on stdin. */
  protected override readonly poolEntry: PoolEntry = 'stdin';
  private readonly binary: string;
  private platform: Platform | undefined;

  constructor(opts: ConmonDriverOptions & { runsc?: string }) {
    super(opts);
    this.binary = opts.runsc ?? '/usr/bin/runsc';
  }

  protected tool(opts: ToolOptions = {}): OciTool {
    return {
      binary: this.binary,
      globalArgs: [
        '--root',
        this.opts.paths.runscRoot,
        `--platform=${this.platform ?? 'ptrace'}`,
        // none: loopback only. With network, gVisor's own stack (netstack) takes the namespace's
        // interfaces and routes, so the job's sockets never reach the host kernel's.
        `--network=${opts.netnsPath ? 'sandbox' : 'none'}`,
        // Apply the job's own seccomp profile inside the sandbox too, so blocked calls fail alike.
        '--oci-seccomp',
      ],
      wrapper: opts.netnsPath ? netstackWrapper(opts.netnsPath) : undefined,
    };
  }

  /**
   * dmesg inside gVisor reads the sentry's own log, not the host's: allow syslog there. The
   * pids cgroup counts host tasks: the sentry's and gofer's own threads (~50 idle) on top of one
   * stub process per sandbox process (ptrace platform), so the job's limit gets that budget added.
   */
  protected override adjustSpec(spec: Record<string, unknown>): Record<string, unknown> {
    const linux = spec.linux as { seccomp: SeccompProfile; resources: { pids: { limit: number } } };
    const [allow, ...rest] = linux.seccomp.syscalls;
    if (allow) linux.seccomp.syscalls = [{ ...allow, names: [...allow.names, 'syslog'] }, ...rest];
    linux.resources.pids.limit += SANDBOX_TASKS;
    return spec;
  }

  /** The sentry sizes itself (MemTotal) by the memory limit it boots with: part of the pool key. */
  protected override poolShape(spec: Record<string, unknown>): Record<string, unknown> {
    return poolShape(spec, true);
  }

  override async prepare(req: SandboxRequest): Promise<TaskHandle> {
    if (!this.platform) await this.fingerprint(); // the platform comes from the fingerprint
    return super.prepare(req);
  }

  async fingerprint(): Promise<Fingerprint> {
    const fp = await ociRuntimeFingerprint(this.name, this.conmon, this.binary, 'runsc');
    if (!fp.ok) return fp.fingerprint;
    const { version, details } = fp;
    const choice = await choosePlatform(this.binary, version);
    this.platform = choice.platform;
    details.platform = choice.platform;
    details.network = 'netstack (--network=sandbox)';
    return {
      runtime: this.name,
      usable: true,
      reason: `${version}, platform ${choice.platform} (${choice.why})`,
      details,
    };
  }
}
