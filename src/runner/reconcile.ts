import { jobCostDollars } from '../cost/model.js';
import { errorMessage } from '../lib/errors.js';
import { IllegalTransition, type Fence, type JobPatch, type JobRecord } from '../store/store.js';
import { storeOutput, type ExecuteDeps } from './execute.js';
import { ownerAlive } from '../lib/owner.js';
import { finalState, type JobState } from '../jobs/states.js';
import { destroySandbox, sweepStaleSandboxes } from './sandbox-cleanup.js';

type ReconcileDeps = Pick<
  ExecuteDeps,
  'paths' | 'store' | 'runtimes' | 'logger' | 'prices' | 'secrets' | 'workspaces'
>;

/**
 * Gives every job whose owning boxcar process died (kill -9, power loss) its final status, so
 * that no accepted job stays "running" forever. A sandbox that already exited reports its real
 * exit code; one still running has lost the process that was to report it and is stopped.
 */
export async function reconcileOrphans(deps: ReconcileDeps): Promise<JobRecord[]> {
  const { store, logger } = deps;
  const live = await store.listJobs({ states: ['queued', 'starting', 'running'], limit: 10_000 });
  const settled: JobRecord[] = [];
  for (const job of live) {
    // Jobs of serving nodes (they hold leases) are re-attached by their scheduler instead.
    if (!job.owner || job.leaseUntil !== null || ownerAlive(job.owner, deps.paths.root) !== false) continue;
    try {
      settled.push(await settle(deps, job));
    } catch (err) {
      logger.error({ err, job_id: job.id }, 'could not settle an orphaned job');
    }
  }
  await sweepStaleSandboxes(deps);
  // Workspaces of jobs that ended while their cleanup did not run (a crash in between).
  const unfinished = new Set(live.map((j) => j.id));
  const tidied = await deps.workspaces.tidy((id) => unfinished.has(id));
  if (tidied.workspaces.length || tidied.artifacts)
    logger.info(tidied, 'removed leftover workspaces and expired artifacts');
  return settled;
}

/** Records the exit status of a job whose sandbox ended while nobody watched it. */
export async function settle(deps: ReconcileDeps, job: JobRecord): Promise<JobRecord> {
  const { store, runtimes, logger, prices } = deps;
  const died = `its boxcar process (${job.owner}) died`;
  // Written only while the job is still the dead owner's: another node may have taken it over
  // or run it again meanwhile (then this is not its result to record).
  const fence: Fence | undefined = job.owner ? { owner: job.owner, attempts: job.attempts } : undefined;
  const write = (to: JobState, patch: JobPatch, reason: string) =>
    store.transition(job.id, to, patch, reason, undefined, fence);
  if (!job.handle)
    return write(
      'error',
      { finishedAt: Date.now(), error: `${died} before the sandbox was created` },
      'orphaned',
    );
  const driver = runtimes.get(job.handle.runtime);
  try {
    const found = await driver.recover(job.handle);
    if (found.state === 'exited') {
      // What it printed while nobody watched is in its sandbox's log, which goes with the sandbox.
      await storeOutput(deps, job, driver, job.handle, { follow: false });
      const stats = await driver.stats(job.handle);
      const finishedAt = Date.now();
      const durationMs = job.startedAt ? finishedAt - job.startedAt : null;
      if (job.state !== 'running') await write('running', {}, 'recovered after its owner died');
      const state = finalState({ ...found.exit, timedOut: false, cancelled: false });
      return await write(
        state,
        {
          exitCode: found.exit.exitCode,
          oomKilled: found.exit.oomKilled,
          timedOut: false,
          durationMs,
          peakMemoryBytes: stats.peakMemoryBytes,
          cpuUsageNs: stats.cpuUsageNs,
          costDollars: jobCostDollars(
            {
              peakMemoryBytes: stats.peakMemoryBytes,
              durationMs: durationMs ?? 0,
              cpuUsageNs: stats.cpuUsageNs,
            },
            prices,
          ),
          finishedAt,
        },
        `${died}; exit status recovered from its monitor`,
      );
    }
    if (found.state === 'running' || found.state === 'created') {
      await driver.stop(job.handle, 'SIGKILL');
      return await write(
        'error',
        { finishedAt: Date.now(), error: `${died} while the job ran; the job was stopped` },
        'orphaned',
      );
    }
    return await write(
      'error',
      { finishedAt: Date.now(), error: `${died}; sandbox lost: ${found.reason}` },
      'orphaned',
    );
  } catch (err) {
    if (err instanceof IllegalTransition) return (await store.getJob(job.id)) ?? job; // it moved on
    return write(
      'error',
      { finishedAt: Date.now(), error: `${died}; recovery failed: ${errorMessage(err)}` },
      'orphaned',
    );
  } finally {
    await destroySandbox(deps, driver, job.handle);
    await deps.workspaces
      .remove(job.id)
      .catch((err: unknown) =>
        logger.error({ err, job_id: job.id }, "removing an orphaned job's workspace failed"),
      );
  }
}
