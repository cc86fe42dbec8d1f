import { chmod, mkdir, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { ifExists, withContext } from '../../lib/errors.js';
import { mountOverlay, mountTmpfs, unmount } from './mounts.js';

/**
 * A container job's root: the image's layers, shared read-only, under an overlay whose upper
 * layer (everything the job writes there) is on a tmpfs of the job's own, sized by its
 * `resources.rootfs`. Its pages are charged to the memory cgroup of whoever writes them: the
 * job. Mounted on the host before the container is created, at the sandbox's own path, so
 * that destroying the sandbox finds it from the sandbox id alone, also after a crash.
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

/** Mounts the job's root; returns where it is. */
export async function mountJobRoot(
  sandboxDir: string,
  layers: readonly string[],
  bytes: number,
): Promise<string> {
  const p = rootPaths(sandboxDir);
  try {
    await mountTmpfs(p.rw, { bytes, mode: 0o700 });
    // The merged root takes the upper directory's mode: 0755, as every layer's root has.
    await mkdir(p.upper);
    await chmod(p.upper, 0o755);
    await mkdir(p.work);
    await mountOverlay(p.root, { lower: layers, upper: { dir: p.upper, work: p.work } }, ['nodev', 'nosuid']);
  } catch (err) {
    throw withContext(`mounting the job's root at ${p.root}`, err);
  }
  return p.root;
}

/** Unmounts the job's root and its tmpfs and removes their mount points; nothing when they are gone. */
export async function unmountJobRoot(sandboxDir: string): Promise<void> {
  const p = rootPaths(sandboxDir);
  for (const dir of [p.root, p.rw]) {
    await unmount(dir);
    // rmdir, not rm: it never walks into a mount, and what is left under a mount point is a bug.
    await ifExists(rmdir(dir));
  }
}
