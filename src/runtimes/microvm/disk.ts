/**
 * A VM's disks. Its root disk: the image's root filesystem (its layers' merged view, mounted
 * read-only while the disk is built) as an ext4 file, built once per image digest (`mkfs.ext4
 * -d`) and never written again, under a qcow2 overlay of the job's own, so no two jobs share
 * writable state. Its workspace disk: a raw file, empty until the job's files are put in it
 * (workspace-disk.ts). Every VM has both, and a snapshot's guest knows both at the common
 * virtual size: every job's root disk has that size, and its workspace disk holds a
 * filesystem no larger, so the guest never needs to learn another.
 */

import { existsSync } from 'node:fs';
import { mkdir, open, rename, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import { digestHex } from '../../lib/digest.js';
import { withLock } from '../../lib/fs-util.js';
import { imageLayers, type ResolvedImage } from '../../images/image.js';
import { run } from '../../lib/exec.js';
import { withMergedLayers } from '../shared/mounts.js';
import type { JobLimits } from '../../jobs/spec.js';
import { workspaceDiskBeside } from './vmm.js';

export const DISK_VIRTUAL_BYTES = 64 * 2 ** 30;
/** Room for ext4's own metadata above the files themselves. */
const FS_HEADROOM = 1.25;
const FS_MIN_BYTES = 16 * 2 ** 20;

/** The disk space a tree takes (du: links are not followed, a sparse file counts what it holds). */
export async function treeBytes(dir: string): Promise<number> {
  const { stdout } = await run('du', ['-s', '--block-size=1', dir], { timeoutMs: 120_000 });
  return Number(stdout.split('\t')[0]);
}

/** The image's ext4 file, built on first use. */
export async function imageDisk(vmDir: string, image: ResolvedImage): Promise<string> {
  const file = path.join(vmDir, 'disks', `${digestHex(image.digest)}.ext4`);
  if (existsSync(file)) return file;
  await mkdir(path.dirname(file), { recursive: true });
  return withLock(`${file}.lock`, async () => {
    if (existsSync(file)) return file;
    const tmp = `${file}.${process.pid}.tmp`;
    const scratch = `${file}.${process.pid}.mnt`;
    await mkdir(scratch, { recursive: true });
    try {
      await withMergedLayers(imageLayers(image), scratch, async (root) => {
        const bytes = Math.max(FS_MIN_BYTES, Math.ceil((await treeBytes(root)) * FS_HEADROOM));
        // No journal: the guest mounts it read-only, and a journal is only dead weight in every copy.
        await run(
          'mkfs.ext4',
          ['-q', '-F', '-L', 'root', '-O', '^has_journal', '-d', root, tmp, `${Math.ceil(bytes / 1024)}K`],
          { timeoutMs: 300_000 },
        );
      });
      await rename(tmp, file);
    } finally {
      await rm(tmp, { force: true });
      await rmdir(scratch);
    }
    return file;
  });
}

/**
 * The job's own disk over `backing` (or an empty one), at the common virtual size: a qcow2
 * overlay, or for VMMs without qcow2 (Firecracker) a sparse copy (a reflink where the
 * filesystem has them); and beside it the VM's empty workspace disk. That one is a sparse file
 * as large as its VMM may write (`fileBytes`, when it has a limit): the VMM refuses a guest's
 * writes past the end of its file, so a guest writing past its filesystem gets I/O errors,
 * never its VMM killed at the file size limit (which would pass for a broken host).
 */
export async function createJobDisk(
  format: 'qcow2' | 'raw',
  file: string,
  backing?: string,
  fileBytes?: number,
): Promise<void> {
  const workspace = await open(workspaceDiskBeside(file), 'w', 0o644);
  try {
    await workspace.truncate(fileBytes === undefined ? DISK_VIRTUAL_BYTES : fileBytes - DISK_METADATA_BYTES);
  } finally {
    await workspace.close();
  }
  if (format === 'raw') {
    if (backing)
      await run('cp', ['--sparse=always', '--reflink=auto', backing, file], { timeoutMs: 120_000 });
    await run('truncate', ['-s', String(DISK_VIRTUAL_BYTES), file]);
    return;
  }
  const args = ['create', '-q', '-f', 'qcow2'];
  if (backing) args.push('-b', backing, '-F', 'raw');
  await run('qemu-img', [...args, file, String(DISK_VIRTUAL_BYTES)], { timeoutMs: 30_000 });
}

/** ext4's own share of a workspace filesystem: one 256-byte inode per 4 KiB block (-i 4096). */
const WORKSPACE_INODE_SHARE = 256 / 4096;
const WORKSPACE_METADATA_BYTES = 4 * 2 ** 20;

/**
 * The size of a job's workspace filesystem: room for its workspace size of files (as a tmpfs
 * of that size holds), with as many inodes as blocks, so a tree of small files runs out of
 * neither before the other.
 */
export function workspaceFsBytes(workspaceBytes: number): number {
  const bytes = (workspaceBytes + WORKSPACE_METADATA_BYTES) / (1 - WORKSPACE_INODE_SHARE);
  return Math.ceil(bytes / 4096) * 4096;
}

const DISK_METADATA_BYTES = 16 * 2 ** 20;

/**
 * The largest file a job's VMM may write (its RLIMIT_FSIZE): the job's disk limit (what it may
 * write over its image), its log cap, or for a job given a workspace its workspace filesystem,
 * whichever is largest, plus room for qcow2's own tables. A guest that writes its root disk
 * further is stopped by the kernel (SIGXFSZ).
 */
export function vmFileBytes(
  limits: Pick<JobLimits, 'rootfsBytes' | 'workspaceBytes'>,
  logCapBytes: number,
  workspace: boolean,
): number {
  const workspaceFs = workspace ? workspaceFsBytes(limits.workspaceBytes) : 0;
  return Math.max(limits.rootfsBytes, workspaceFs, logCapBytes) + DISK_METADATA_BYTES;
}
