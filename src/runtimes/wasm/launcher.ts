import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { digestHex, sha256 } from '../../lib/digest.js';
import { writeFileAtomic } from '../../lib/fs-util.js';
import { builtCProgram } from '../../lib/c-program.js';
import { ensureSystemUser, type SystemUser } from '../../lib/system-user.js';
import { compileSeccomp } from '../shared/seccomp-bpf.js';
import { seccompProfile, type SeccompProfile } from '../shared/seccomp.js';

const LAUNCHER_SOURCE = fileURLToPath(new URL('../../../../src/runtimes/wasm/launcher.c', import.meta.url));
const WORKER_SCRIPT = fileURLToPath(new URL('./worker.js', import.meta.url));

/** The account every WASM worker process runs as. */
export const WORKER_USER = 'boxcar-wasm';

/**
 * What a worker process is denied on top of the container jobs' profile: making sockets (its
 * only channel is the one it was born with), signalling other processes (other workers run as
 * the same user), and starting programs or processes.
 */
const WORKER_DENIED = new Set([
  'socket',
  'socketpair',
  'connect',
  'bind',
  'listen',
  'accept',
  'accept4',
  'kill',
  'tkill',
  'tgkill',
  'rt_sigqueueinfo',
  'rt_tgsigqueueinfo',
  'pidfd_open',
  'pidfd_getfd',
  'pidfd_send_signal',
  'execveat',
  'fork',
  'vfork',
]);

export function workerSeccompProfile(): SeccompProfile {
  const base = seccompProfile();
  return {
    ...base,
    syscalls: base.syscalls.map((rule) => ({
      ...rule,
      names: rule.names.filter((n) => !WORKER_DENIED.has(n)),
    })),
  };
}

/**
 * What is covered by an empty read-only tmpfs in every worker's mount namespace: Boxcar's
 * state (other jobs' workspaces, the store, secrets) first, then where the host keeps files
 * and processes. A directory under one covered earlier is gone by then, and skipped.
 */
export function hiddenDirs(stateRoot: string): string[] {
  return [
    stateRoot,
    '/proc',
    '/sys',
    '/var/tmp',
    '/var/lib',
    '/root',
    '/home',
    '/dev/shm',
    '/srv',
    '/mnt',
    '/media',
    '/run',
  ];
}

/** Everything needed to start confined workers, built once per driver. */
export interface Confinement {
  launcher: string;
  seccompFile: string;
  user: SystemUser;
  /** worker.js's text, run by `node -e`: the worker's user need not be able to read Boxcar's files. */
  workerSource: string;
  stateRoot: string;
}

/**
 * Builds launcher.c (once per source digest), compiles the workers' seccomp program, and
 * creates the workers' system user if the host has none yet.
 */
export async function prepareConfinement(stateRoot: string, dir: string): Promise<Confinement> {
  const launcher = await builtCProgram(LAUNCHER_SOURCE, dir, 'the wasm runtime');
  const bpf = compileSeccomp(workerSeccompProfile());
  const seccompFile = path.join(dir, `worker-seccomp-${digestHex(sha256(bpf)).slice(0, 12)}.bpf`);
  if (!existsSync(seccompFile)) await writeFileAtomic(seccompFile, bpf);
  return {
    launcher,
    seccompFile,
    user: await ensureSystemUser(WORKER_USER),
    workerSource: await readFile(WORKER_SCRIPT, 'utf8'),
    stateRoot,
  };
}

/** V8's heap in a worker (its own objects; modules' memories and code live outside it). */
export const WORKER_HEAP_MIB = 32;

/**
 * The launcher's command line for one worker, joining the cgroup whose `cgroup.procs` files are
 * given; its workspace a tmpfs of `workspace` bytes, or the job's own directory.
 */
export function workerCommand(
  c: Confinement,
  workspace: number | { dir: string },
  procsFiles: string[],
): [string, string[]] {
  return [
    c.launcher,
    [
      String(c.user.uid),
      String(c.user.gid),
      c.seccompFile,
      typeof workspace === 'number' ? String(workspace) : workspace.dir,
      ...hiddenDirs(c.stateRoot),
      '--',
      ...procsFiles,
      '--',
      process.execPath,
      '--no-warnings', // no ExperimentalWarning for node:wasi on the job's output
      '--expose-gc',
      `--max-old-space-size=${WORKER_HEAP_MIB}`,
      '--input-type=module',
      '-e',
      c.workerSource,
    ],
  ];
}
