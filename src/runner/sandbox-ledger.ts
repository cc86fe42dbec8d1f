import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { readHandle, type TaskHandle } from '../jobs/handle.js';
import { errorMessage, withContext } from '../lib/errors.js';
import { ownerAlive } from '../lib/owner.js';
import type { StatePaths } from '../lib/state-paths.js';
import type { Logger } from '../observability/logger.js';
import type { RuntimeRegistry } from '../runtimes/registry.js';
import type { Runtime } from '../runtimes/runtime.js';
import type { JobRecord, Store } from '../store/store.js';

/**
 * Which sandboxes exist on this host's disk, kept beside them (`sandboxes/<id>.handle`) rather
 * than in the store: the store holds a job's latest handle only, and once another node has run
 * the job again, nothing there names the sandbox this host still holds for it. A sandbox is
 * recorded before its driver creates anything and forgotten once destroyed.
 */
const SUFFIX = '.handle';

const markerPath = (paths: StatePaths, sandboxId: string) =>
  path.join(paths.sandboxes, `${sandboxId}${SUFFIX}`);

/** Before `prepare`: the sandbox may exist from now on. Root-only, like the sandbox itself. */
export async function recordSandbox(paths: StatePaths, handle: TaskHandle): Promise<void> {
  await writeFile(markerPath(paths, handle.sandboxId), JSON.stringify(handle), { mode: 0o600 }).catch(
    (err: unknown) => {
      throw withContext(`recording sandbox ${handle.sandboxId}`, err);
    },
  );
}

/**
 * Destroys a sandbox and forgets it. A failed destroy keeps the record, so the next start-up
 * sweep tries again; the error is logged, never thrown (the caller is cleaning up after a job).
 */
export async function destroySandbox(
  deps: { paths: StatePaths; logger: Logger },
  driver: Runtime,
  handle: TaskHandle,
): Promise<boolean> {
  try {
    await driver.destroy(handle);
  } catch (err) {
    deps.logger.error(
      { err, job_id: handle.jobId, sandboxId: handle.sandboxId },
      'destroying the sandbox failed; it may hold host resources until the next start-up',
    );
    return false;
  }
  await rm(markerPath(deps.paths, handle.sandboxId), { force: true });
  return true;
}

/**
 * At start-up: destroys every sandbox on this disk that no live job of a live process holds,
 * such as those of jobs another node took over and ran again while this node was down, or
 * that ended while their process died before cleaning up. `keep` says which live jobs are
 * still supervised here (this process's own, after it re-attached).
 */
export async function sweepStaleSandboxes(
  deps: { paths: StatePaths; store: Store; runtimes: RuntimeRegistry; logger: Logger },
  keep: (job: JobRecord) => boolean = () => false,
): Promise<string[]> {
  const { paths, store, runtimes, logger } = deps;
  // Markers first, jobs second: a sandbox is recorded after its job's handle is saved, so every
  // marker read here belongs to a job the listing below already shows in its current state.
  const markers = (await readdir(paths.sandboxes)).filter((n) => n.endsWith(SUFFIX));
  if (!markers.length) return [];
  const live = await store.listJobs({ states: ['queued', 'starting', 'running'], limit: 1_000_000 });
  const held = new Set(
    live
      .filter((j) => j.handle && j.owner && (keep(j) || ownerAlive(j.owner, paths.root) === true))
      .map((j) => j.handle?.sandboxId),
  );
  const removed: string[] = [];
  for (const name of markers) {
    const sandboxId = name.slice(0, -SUFFIX.length);
    if (held.has(sandboxId)) continue;
    let handle: TaskHandle;
    try {
      handle = readHandle(JSON.parse(await readFile(path.join(paths.sandboxes, name), 'utf8')));
    } catch (err) {
      logger.error({ err: errorMessage(err), sandboxId }, 'a sandbox record cannot be read; left alone');
      continue;
    }
    if (await destroySandbox(deps, runtimes.get(handle.runtime), handle)) removed.push(sandboxId);
  }
  if (removed.length)
    logger.warn({ sandboxes: removed }, 'removed sandboxes whose jobs are no longer supervised here');
  return removed;
}
