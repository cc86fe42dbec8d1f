import { mkdir } from 'node:fs/promises';
import type { StatePaths } from '../../lib/state-paths.js';
import { withLock } from '../../lib/fs-util.js';
import { mountTable } from '../../lib/proc.js';
import type { Logger } from '../../observability/logger.js';
import { mountTmpfs } from './mounts.js';

/**
 * Its size cap (pages are used as files are written, not reserved): containers' bundles and
 * monitor files are a few kB each, a gVisor pooled init ~0.8 MiB until it starts.
 */
const RUN_TMPFS = { bytes: 512 * 2 ** 20, mode: 0o700, noexec: true };

/**
 * Makes `paths.run` a tmpfs, once per boot: the state of runtimes and containers, which lives
 * as long as they do (a host's restart ends both), as runc's and CRI-O's own live under /run.
 * A start makes and removes ~20 files there; on ext4 that was a sixth of a serving node's CPU
 * per container start (`bench/serve-load 1000`: 68 → 58 ms, 28 → 32 starts/s). A host where
 * it cannot be mounted (no privilege) keeps a plain directory and says so.
 */
export async function prepareRuntimeState(paths: StatePaths, logger: Logger): Promise<void> {
  await mkdir(paths.run, { recursive: true, mode: 0o700 });
  // Two Boxcars opening one state directory at once must not stack two mounts.
  await withLock(`${paths.run}.lock`, async () => {
    if (mountTable().some((m) => m.target === paths.run)) return;
    try {
      await mountTmpfs(paths.run, RUN_TMPFS);
    } catch (err) {
      logger.warn({ err, dir: paths.run }, 'runtime state stays on the state directory’s own file system');
    }
  });
  await mkdir(paths.containers, { recursive: true, mode: 0o700 });
}
