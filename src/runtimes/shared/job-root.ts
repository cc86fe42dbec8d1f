import { mkdir, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errnoCode, ifExists, withContext } from '../../lib/errors.js';
import { run, sleep } from '../../lib/exec.js';
import { builtCProgram } from '../../lib/c-program.js';
import { overlayOptions, tmpfsOptions, unmount } from './mounts.js';

/**
 * A container job's root: the image's layers, shared read-only, under an overlay whose upper
 * layer (everything the job writes there) is on a tmpfs of the job's own, sized by its
 * `resources.rootfs`. Its pages are charged to the memory cgroup of whoever writes them: the
 * job. Its mount points are at the sandbox's own path; a container's root is mounted in the
 * mount namespace of its monitor (see conmon-driver.ts), which holds it while the sandbox
 * lives and takes it along when it ends. `unmountJobRoot` removes what is left either way.
 */

function rootPaths(sandboxDir: string) {
  const rw = path.join(sandboxDir, 'rootfs-rw');
  return {
    root: path.join(sandboxDir, 'rootfs'),
    rw,
    upper: path.join(rw, 'upper'),
    work: path.join(rw, 'work'),
  };
}

const LAUNCHER_SOURCE = fileURLToPath(
  new URL('../../../../src/runtimes/shared/job-launcher.c', import.meta.url),
);

/**
 * The program that mounts a job's root (`JobRootMount.args`) in a mount namespace of its own and
 * starts the container's monitor there (job-launcher.c), built once per host.
 */
export function jobLauncher(binDir: string): Promise<string> {
  return builtCProgram(LAUNCHER_SOURCE, binDir, 'container jobs', ['-static']);
}

/**
 * How to mount a job's root: the tmpfs, the upper and work directories in it, the overlay, in
 * one process, since a process started from Boxcar costs more than the mounts themselves.
 * `args` are the positional parameters of `script` (a shell's, $1…$7: `mountJobRoot`) and the
 * first of job-launcher.c's (a container's start); the mount points are made first
 * (`prepareJobRoot`).
 */
export interface JobRootMount {
  root: string;
  script: string;
  args: string[];
}

export async function prepareJobRoot(
  sandboxDir: string,
  layers: readonly string[],
  bytes: number,
): Promise<JobRootMount> {
  const p = rootPaths(sandboxDir);
  const overlay = overlayOptions(p.root, { lower: layers, upper: { dir: p.upper, work: p.work } }, [
    'nodev',
    'nosuid',
  ]);
  await mkdir(p.rw);
  await mkdir(p.root);
  return {
    root: p.root,
    // The merged root takes the upper directory's mode: 0755, as every layer's root has.
    script:
      'mount -t tmpfs -o "$1" tmpfs "$2"; mkdir -m 0755 "$3"; mkdir "$4"; cd "$5"; mount -t overlay -o "$6" overlay "$7"',
    args: [tmpfsOptions({ bytes, mode: 0o700 }), p.rw, p.upper, p.work, overlay.cwd, overlay.options, p.root],
  };
}

/** Mounts the job's root in this (the host's) mount namespace; returns where it is. */
export async function mountJobRoot(
  sandboxDir: string,
  layers: readonly string[],
  bytes: number,
): Promise<string> {
  try {
    const m = await prepareJobRoot(sandboxDir, layers, bytes);
    await run('sh', ['-ec', m.script, 'sh', ...m.args]);
    return m.root;
  } catch (err) {
    throw withContext(`mounting the job's root at ${rootPaths(sandboxDir).root}`, err);
  }
}

/** Unmounts the job's root and its tmpfs and removes their mount points; nothing when they are gone. */
export async function unmountJobRoot(sandboxDir: string): Promise<void> {
  const p = rootPaths(sandboxDir);
  await unmount(p.root, p.rw);
  for (const dir of [p.root, p.rw]) await removeMountPoint(dir);
}

/**
 * rmdir, not rm: it never walks into a mount, and what is left under a mount point is a bug.
 * The job's own mount namespace held a private copy of its root (see `rootfsPropagation` in
 * oci-spec.ts): until the kernel has finished tearing that namespace down, a moment after the
 * job's last process exits, the directory is still a mount point there (EBUSY).
 */
async function removeMountPoint(dir: string): Promise<void> {
  for (let waited = 0; ; waited += BUSY_STEP_MS) {
    try {
      await ifExists(rmdir(dir));
      return;
    } catch (err) {
      if (errnoCode(err) !== 'EBUSY' || waited >= BUSY_WAIT_MS) throw withContext(`removing ${dir}`, err);
      await sleep(BUSY_STEP_MS);
    }
  }
}

const BUSY_STEP_MS = 20;
const BUSY_WAIT_MS = 5000;
