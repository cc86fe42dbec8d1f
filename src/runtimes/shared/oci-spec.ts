import type { JobSpec } from '../../jobs/spec.js';
import type { ResolvedImage } from '../../images/image.js';
import { seccompProfile } from './seccomp.js';
import { swapAccounting } from './cgroups.js';

export const CPU_PERIOD_US = 100_000;

/** Docker's default set minus NET_RAW, MKNOD, SYS_CHROOT, SETFCAP, SETPCAP: enough for CI tooling. */
export const CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FOWNER',
  'CAP_FSETID',
  'CAP_KILL',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_NET_BIND_SERVICE',
  'CAP_AUDIT_WRITE',
];

/**
 * Bit numbers (linux/capability.h) of the granted capabilities and of those a pooled init holds
 * for its own work, for places that set them by mask.
 */
const CAPABILITY_BITS: Record<string, number> = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_FOWNER: 3,
  CAP_FSETID: 4,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_SETPCAP: 8,
  CAP_NET_BIND_SERVICE: 10,
  CAP_SYS_ADMIN: 21,
  CAP_AUDIT_WRITE: 29,
};

export function capabilityMask(caps: readonly string[] = CAPABILITIES): bigint {
  return caps.reduce((m, c) => {
    const bit = CAPABILITY_BITS[c];
    if (bit === undefined) throw new Error(`no bit number known for ${c}`);
    return m | (1n << BigInt(bit));
  }, 0n);
}

const MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];

const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

export const WORKSPACE_DIR = '/workspace';

export interface OciSpecInput {
  jobId: string;
  spec: JobSpec;
  image: ResolvedImage;
  /** The job's own root, mounted over the image (see job-root.ts): the job may write to it. */
  rootPath: string;
  cgroupsPath: string;
  secrets?: Record<string, string>;
  /** The job's own network namespace (with a veth); absent: a new one with only loopback. */
  netnsPath?: string;
  /** A host directory filled for the job (SandboxRequest.workspaceDir); absent: an empty tmpfs. */
  workspaceDir?: string;
}

/** A hostname that names the job and is valid (RFC 1123 label). */
export function jobHostname(name: string, jobId: string): string {
  const label = name
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40);
  return `${label || 'job'}-${jobId.slice(0, 8)}`;
}

export function jobEnv(input: Pick<OciSpecInput, 'jobId' | 'spec' | 'image' | 'secrets'>): string[] {
  const env = new Map<string, string>();
  for (const kv of input.image.config.env) {
    const i = kv.indexOf('=');
    if (i > 0) env.set(kv.slice(0, i), kv.slice(i + 1));
  }
  if (!env.has('PATH')) env.set('PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  env.set('HOME', '/root');
  env.set('CI', 'true');
  env.set('BOXCAR', 'true');
  env.set('BOXCAR_JOB_ID', input.jobId);
  env.set('BOXCAR_JOB_NAME', input.spec.name);
  for (const [k, v] of Object.entries(input.spec.env)) env.set(k, v);
  for (const [k, v] of Object.entries(input.secrets ?? {})) env.set(k, v);
  return [...env].map(([k, v]) => `${k}=${v}`);
}

/**
 * The OCI runtime config for one container job: everything the job may do is written here.
 * Starting point: `runc spec` defaults (masked and read-only /proc paths, devices), tightened.
 */
export function ociSpec(input: OciSpecInput): Record<string, unknown> {
  const { spec } = input;
  const l = spec.limits;
  const memory: Record<string, number> = { limit: l.memoryBytes };
  if (swapAccounting()) memory.swap = l.memoryBytes; // memory+swap = memory: no swap at all
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: spec.command,
      env: jobEnv(input),
      cwd: WORKSPACE_DIR,
      capabilities: {
        bounding: CAPABILITIES,
        effective: CAPABILITIES,
        permitted: CAPABILITIES,
        inheritable: [],
        ambient: [],
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: input.rootPath, readonly: false },
    hostname: jobHostname(spec.name, input.jobId),
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      {
        destination: '/dev/mqueue',
        type: 'mqueue',
        source: 'mqueue',
        options: ['nosuid', 'noexec', 'nodev'],
      },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      {
        destination: '/sys/fs/cgroup',
        type: 'cgroup',
        source: 'cgroup',
        options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
      },
      {
        destination: '/tmp',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'nodev', 'mode=1777', `size=${l.tmpBytes}`],
      },
      input.workspaceDir
        ? {
            destination: WORKSPACE_DIR,
            type: 'bind',
            source: input.workspaceDir,
            options: ['rbind', 'nosuid', 'nodev', 'rw'],
          }
        : {
            destination: WORKSPACE_DIR,
            type: 'tmpfs',
            source: 'tmpfs',
            options: ['nosuid', 'nodev', 'mode=0755', `size=${l.workspaceBytes}`],
          },
    ],
    linux: {
      cgroupsPath: input.cgroupsPath,
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        memory,
        cpu: {
          quota: Math.round((l.cpuMillis / 1000) * CPU_PERIOD_US),
          period: CPU_PERIOD_US,
          shares: Math.max(2, Math.round((l.cpuMillis * 1024) / 1000)),
        },
        pids: { limit: l.pids },
      },
      namespaces: [
        { type: 'pid' },
        input.netnsPath ? { type: 'network', path: input.netnsPath } : { type: 'network' },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
        { type: 'cgroup' },
      ],
      seccomp: seccompProfile(),
      // Mounts the host makes later (other jobs' roots) stay out of this job's mount namespace:
      // as a slave of the host's, every job would hold a copy of every later job's mounts.
      rootfsPropagation: 'rprivate',
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
    },
  };
}
