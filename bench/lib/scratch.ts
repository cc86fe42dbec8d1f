import { rm } from 'node:fs/promises';
import { mountsUnder, unmount } from '../../src/runtimes/shared/mounts.js';

/**
 * Removes a benchmark's scratch directory: first what is mounted under it (a Boxcar state
 * directory's runtime-state tmpfs stays mounted after Boxcar ends, for its next start), then it.
 */
export async function removeScratch(root: string): Promise<void> {
  await unmount(...mountsUnder(root).map((m) => m.target));
  await rm(root, { recursive: true, force: true });
}
