import type { TaskHandle } from '../jobs/handle.js';
import { errorMessage } from '../lib/errors.js';
import { ownerAlive } from '../lib/owner.js';
import type { StatePaths } from '../lib/state-paths.js';
import type { Logger } from '../observability/logger.js';
import type { RuntimeRegistry } from '../runtimes/registry.js';
import type { Runtime } from '../runtimes/runtime.js';
import {
  forgetSandbox,
  readSandboxRecord,
  recordedSandboxes,
  recordsSandboxes,
} from '../runtimes/sandbox-ledger.js';
import type { JobRecord, Store } from '../store/store.js';

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
  if (recordsSandboxes(driver)) await forgetSandbox(deps.paths, handle.sandboxId);
  return true;
}

/**
 * At start-up: destroys every sandbox that no live job holds (of a live process, or of a dead
 * serving one, which re-attaches when it starts) and no live process keeps idle in its warm
 * pool: those of jobs another node took over and ran again while this node was down, of jobs
 * whose process died before cleaning up, the idle pool of a process that died. They are found
 * by their records on this disk, and through drivers that find theirs by a query (a cluster's
 * Pods, by label). `keep` says which live jobs are supervised here (this process's own, after
 * it re-attached).
 */
export async function sweepStaleSandboxes(
  deps: { paths: StatePaths; store: Store; runtimes: RuntimeRegistry; logger: Logger },
  keep: (job: JobRecord) => boolean = () => false,
): Promise<string[]> {
  const { paths, store, runtimes, logger } = deps;
  // Records first, jobs second: a job's sandbox is recorded after its handle is saved, so every
  // record read here belongs to a job the listing below already shows in its current state.
  const ids = await recordedSandboxes(paths);
  if (!ids.length && !runtimes.findsStrays) return [];
  const live = await store.listJobs({ states: ['queued', 'starting', 'running'], limit: 1_000_000 });
  const holds = (j: JobRecord): boolean => {
    if (!j.owner) return false;
    if (keep(j)) return true;
    const alive = ownerAlive(j.owner, paths.root);
    // A serving process of this host that died (its job has a lease) is not done with it: its
    // next start re-attaches to the sandbox, which a command run meanwhile must leave alone.
    return alive === true || (alive === false && j.leaseUntil !== null);
  };
  const held = new Set(live.flatMap((j) => (j.handle && holds(j) ? [j.handle.sandboxId] : [])));
  const removed: string[] = [];
  for (const sandboxId of ids) {
    if (held.has(sandboxId)) continue;
    let record;
    try {
      record = await readSandboxRecord(paths, sandboxId);
    } catch (err) {
      logger.error({ err: errorMessage(err), sandboxId }, 'a sandbox record cannot be read; left alone');
      continue;
    }
    if (record.heldBy && ownerAlive(record.heldBy, paths.root) === true) continue;
    if (await destroySandbox(deps, runtimes.get(record.handle.runtime), record.handle))
      removed.push(sandboxId);
  }
  // Sandboxes a driver finds by a query rather than a record (a cluster's Pods, by label).
  try {
    removed.push(...(await runtimes.removeStrays(held)));
  } catch (err) {
    logger.error({ err }, "removing this node's stray sandboxes failed; the next start tries again");
  }
  if (removed.length)
    logger.warn({ sandboxes: removed }, 'removed sandboxes whose jobs are no longer supervised here');
  return removed;
}
