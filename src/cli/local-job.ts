import { randomUUID } from 'node:crypto';
import type { Boxcar } from '../boxcar.js';
import { UserError } from '../errors.js';
import { executeJob, type ExecuteOptions, type ExecuteResult } from '../jobs/execute.js';
import { currentOwner } from '../jobs/owner.js';
import type { JobSpec } from '../jobs/spec.js';
import { requestedRuntimeDecision } from '../policy/decision.js';

/** Accepts a job on this machine (recorded before anything else) and runs it in the foreground. */
export async function runLocalJob(box: Boxcar, spec: JobSpec, opts: ExecuteOptions): Promise<ExecuteResult> {
  const decision = requestedRuntimeDecision(spec.runtime);
  const fp = await box.runtimes.fingerprint(decision.runtime);
  if (!fp.usable)
    throw new UserError(`runtime ${decision.runtime} cannot run jobs on this machine: ${fp.reason}`);
  const job = await box.store.createJob({
    id: randomUUID(),
    tenant: 'local',
    spec,
    decision,
    owner: currentOwner(),
  });
  return executeJob(box, job, opts);
}

/** Turns SIGINT/SIGTERM into a cancel of the running job(s), so the sandbox is always cleaned up. */
export function cancelOnSignals(): { signal: AbortSignal; dispose: () => void } {
  const ac = new AbortController();
  const handler = (sig: NodeJS.Signals) => {
    if (!ac.signal.aborted) process.stderr.write(`\nboxcar: ${sig}: stopping the job and cleaning up…\n`);
    ac.abort();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  process.on('SIGHUP', handler);
  return {
    signal: ac.signal,
    dispose: () => {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
      process.off('SIGHUP', handler);
    },
  };
}
