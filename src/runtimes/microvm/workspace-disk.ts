/**
 * A microVM job's files (SandboxRequest.workspaceDir) in its VM: the VM's workspace disk
 * (disk.ts) made an ext4 filesystem of that directory, which the agent mounts at /workspace.
 *
 * A disk rather than the agent's channel: the files stay in the host's page cache instead of
 * filling a tmpfs in guest memory, a checkout of any size costs one mkfs instead of a transfer
 * through an emulated device, and what the job leaves comes back from the same disk
 * (workspace-return.ts) without the guest packing anything. Raw, not qcow2: a pooled VM's QEMU
 * has the file open before its job is known, and the filesystem is made in place under it;
 * QEMU keeps nothing of a raw file's contents (it would keep qcow2's tables), and the agent
 * drops what the guest read of the device while it was empty (BLKFLSBUF).
 */

import { lstat } from 'node:fs/promises';
import path from 'node:path';
import { ifExists, UserError, withContext } from '../../lib/errors.js';
import { ExecError, run } from '../../lib/exec.js';
import { workspaceFsBytes } from './disk.js';

/** What mkfs.ext4 says when the files do not fit. */
const NO_ROOM = /Could not allocate (block|inode)|No space left/;
const MKFS_TIMEOUT_MS = 300_000;

/**
 * Makes `disk` (the VM's workspace disk, possibly open in its VMM) an ext4 filesystem holding
 * exactly what `dir` holds. `mkfs.ext4 -d` reads the tree with lstat and readlink: a symlink
 * is copied as a symlink, never followed (the files come from a pull request); modes, owners,
 * empty directories and hard links are kept. Device nodes come as they are, but the agent
 * mounts the workspace nodev and nosuid.
 */
export async function seedWorkspaceDisk(disk: string, dir: string, workspaceBytes: number): Promise<void> {
  const fsBytes = workspaceFsBytes(workspaceBytes);
  try {
    // No journal (the VM serves one job), no reserved blocks. mkfs discards its range of the
    // file first, and since a file's holes read as zeros it then skips zeroing inode tables.
    await run(
      'mkfs.ext4',
      [
        ...['-q', '-F', '-L', 'workspace', '-O', '^has_journal', '-m', '0', '-b', '4096', '-i', '4096'],
        ...['-d', dir, disk, `${fsBytes / 1024}K`],
      ],
      { timeoutMs: MKFS_TIMEOUT_MS },
    );
    // mkfs always makes one; the job's workspace holds the job's files only.
    if (!(await ifExists(lstat(path.join(dir, 'lost+found')))))
      await run('debugfs', ['-w', '-R', 'rmdir lost+found', disk]);
  } catch (err) {
    if (err instanceof ExecError && NO_ROOM.test(err.stderr))
      throw new UserError(
        `the files given to the job's workspace do not fit its workspace size (resources.workspace: ${workspaceBytes} bytes)`,
      );
    throw withContext(`putting ${dir} on the job's workspace disk`, err);
  }
}
