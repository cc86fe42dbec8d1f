import { link, rm } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode, withContext } from '../lib/errors.js';
import { run } from '../lib/exec.js';

/**
 * The two marks overlayfs reads in a lower layer: whiteouts (a 0:0 character device hides the
 * name in the layers under it) and opaque directories (`trusted.overlay.opaque=y`: nothing of
 * the directories under it shows through).
 */

/**
 * Whiteouts for one layer, made as hard links to one device node (as overlayfs itself shares
 * its whiteouts): `mknod` is a process, a link a system call. The devices live in `scratch`,
 * outside the layer's own directory, and go with `dispose`.
 */
export class Whiteouts {
  private device: string | undefined;
  private readonly devices: string[] = [];

  constructor(private readonly scratch: string) {}

  async make(at: string): Promise<void> {
    if (!this.device) {
      const device = path.join(this.scratch, `whiteout-${this.devices.length}`);
      await run('mknod', ['-m', '0', device, 'c', '0', '0']);
      this.devices.push(device);
      this.device = device;
    }
    try {
      await link(this.device, at);
    } catch (err) {
      if (errnoCode(err) !== 'EMLINK') throw err;
      this.device = undefined; // as many links as the filesystem allows: the next device
      await this.make(at);
    }
  }

  /** Removes the devices; the whiteouts linked to them stay. */
  async dispose(): Promise<void> {
    for (const d of this.devices) await rm(d, { force: true });
  }
}

/** Arguments per `setfattr` call: well under ARG_MAX, whatever the paths' lengths. */
const ARGS_BYTES = 64 * 1024;

/** Marks directories opaque, a few hundred per `setfattr` call (Debian's package attr). */
export async function markOpaque(dirs: readonly string[]): Promise<void> {
  let batch: string[] = [];
  let bytes = 0;
  const flush = async () => {
    if (!batch.length) return;
    try {
      // -h: never through a symlink (these are directories Boxcar made, checked to be real).
      await run('setfattr', ['-h', '-n', 'trusted.overlay.opaque', '-v', 'y', '--', ...batch]);
    } catch (err) {
      throw withContext('marking opaque directories for overlayfs (setfattr, Debian package attr)', err);
    }
    batch = [];
    bytes = 0;
  };
  for (const d of dirs) {
    if (bytes + d.length > ARGS_BYTES) await flush();
    batch.push(d);
    bytes += d.length + 1;
  }
  await flush();
}
