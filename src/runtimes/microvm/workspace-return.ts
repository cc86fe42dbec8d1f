/**
 * What a microVM job left in its workspace, put back in its workspace directory once it ended
 * (capability `workspaceReturned`).
 *
 * The guest wrote that filesystem, so every byte of it is hostile: the host kernel never mounts
 * it and no privileged process parses it. debugfs (e2fsprogs' userspace reader) copies it out
 * with `rdump` inside the VMM's jail (vmm-jail.c): a uid of its own, no capabilities, a chroot
 * holding /usr, the disk read-only and one empty directory writable, a network namespace of its
 * own with nothing in it, a cgroup, and a file size limit of the job's workspace size. Whatever
 * the filesystem holds (links to /etc or `../..`, names with slashes, directory cycles, device
 * nodes, a sparse file of a terabyte), all debugfs can write is that one directory: it follows
 * links only inside the jail, cannot make devices, and the kernel kills it at the size limit.
 * The host then only gives the entries to the workspace's owner (lchown, which also clears
 * setuid bits) and renames them into place: nothing on the host follows a link the guest made.
 *
 * Rather than the agent sending a tar over its channel: there is no parser of guest bytes on
 * the host at all (an extractor would be one, running as root), the data path is the disk the
 * guest already wrote, and the guest spends nothing on packing it.
 *
 * It fails closed: a refused copy leaves the workspace directory empty and fails with one line.
 */

import { randomUUID } from 'node:crypto';
import { chown, mkdir, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { UserError, withContext } from '../../lib/errors.js';
import { ExecError, run } from '../../lib/exec.js';
import { chownTree } from '../../lib/fs-util.js';
import { treeBytes } from './disk.js';
import { claimJail, jailedCommand, releaseJail, type JailLimits } from './vmm-jail.js';

/** debugfs' own memory; the rest of its cgroup's limit is the files it writes (a tmpfs charges them). */
const DEBUGFS_MEMORY_BYTES = 64 * 2 ** 20;
const COPY_TIMEOUT_MS = 120_000;

export interface WorkspaceReturn {
  /** The VM's workspace disk, as the guest left it. */
  disk: string;
  workspaceDir: string;
  workspaceBytes: number;
  /** A directory of root's, outside anything the VMM can write: the copy's jail is claimed there. */
  claimDir: string;
  /** The built vmm-jail.c. */
  jailer: string;
}

/** The job's workspace disk's files, in place of what `workspaceDir` held; a UserError if refused. */
export async function returnWorkspace(r: WorkspaceReturn): Promise<void> {
  await emptyDirectory(r.workspaceDir);
  // Named at random inside the workspace directory: on its filesystem (a rename moves the
  // files), and no name a job could have left there.
  const out = path.join(r.workspaceDir, `.boxcar-return-${randomUUID()}`);
  await mkdir(out, { mode: 0o700 });
  try {
    const refused = await copyOut(r, out);
    if (refused) throw new UserError(`the job's workspace was not returned: ${refused}`);
    const bytes = await treeBytes(out);
    if (bytes > r.workspaceBytes)
      throw new UserError(
        `the job's workspace was not returned: its files take ${bytes} bytes, over its workspace size (resources.workspace: ${r.workspaceBytes} bytes)`,
      );
    const owner = await stat(r.workspaceDir);
    await chownTree(out, owner.uid, owner.gid);
    for (const name of await readdir(out))
      await rename(path.join(out, name), path.join(r.workspaceDir, name));
    await rmdir(out);
  } catch (err) {
    await emptyDirectory(r.workspaceDir);
    throw err instanceof UserError ? err : withContext("returning the job's workspace", err);
  }
}

/** Removes what `dir` holds (never following a link), keeping `dir` itself: it may be a mount point. */
export async function emptyDirectory(dir: string): Promise<void> {
  for (const name of await readdir(dir)) await rm(path.join(dir, name), { recursive: true, force: true });
}

/**
 * Runs debugfs' rdump of the disk's root into `out`, jailed; why it was refused, if it was.
 * debugfs exits 0 whatever went wrong, so its messages decide: it cannot give the files the
 * guest's owners (it runs as no one), and any other complaint refuses the copy.
 */
async function copyOut(r: WorkspaceReturn, out: string): Promise<string | undefined> {
  if (/["\s\\]/.test(out)) throw new Error(`debugfs cannot be given the path ${out}`);
  const limits: JailLimits = {
    memoryBytes: r.workspaceBytes + DEBUGFS_MEMORY_BYTES,
    pids: 4,
    fileBytes: r.workspaceBytes,
  };
  await mkdir(r.claimDir, { recursive: true, mode: 0o700 });
  const jail = await claimJail(r.claimDir, limits);
  try {
    await chown(out, jail.uid, jail.uid);
    const [cmd, args] = jailedCommand(
      r.jailer,
      jail,
      { files: { dir: out, owned: [], readable: [r.disk] }, limits, noNetwork: true },
      'debugfs',
      ['-R', `rdump / "${out}"`, r.disk],
    );
    let stderr: string;
    try {
      ({ stderr } = await run(cmd, args, { timeoutMs: COPY_TIMEOUT_MS }));
    } catch (err) {
      if (!(err instanceof ExecError)) throw err;
      const ended = err.cause as { signal?: string | null; killed?: boolean };
      if (ended.signal === 'SIGXFSZ')
        return `a file in it is larger than its workspace size (resources.workspace: ${r.workspaceBytes} bytes)`;
      if (ended.killed) return `copying its files out took over ${COPY_TIMEOUT_MS / 1000} s`;
      throw err; // the jail itself failed: the host's fault, not the job's
    }
    const complaint = stderr
      .split('\n')
      .find((l) => l.trim() && !/^debugfs \d/.test(l) && !/while changing ownership of/.test(l));
    // Named as the job saw them: /workspace/..., not the host's temporary directory.
    return complaint
      ?.split(out)
      .join('/workspace')
      .replace(/\/workspace\/+/g, '/workspace/')
      .trim();
  } finally {
    await releaseJail(r.claimDir);
  }
}
