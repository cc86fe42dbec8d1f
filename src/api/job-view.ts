import type { JobRecord, PipelineRecord } from '../store/store.js';

/** A job as the API shows it to its tenant: everything but the node's internals (sandbox handle, owner). */
export type JobView = ReturnType<typeof jobView>;

export function jobView(r: JobRecord) {
  return {
    id: r.id,
    tenant: r.tenant,
    name: r.name,
    state: r.state,
    runtime: r.runtime,
    decision: r.decision,
    // The image as pinned at acceptance; once pulled for the job, its digest and the pull's figures.
    image: r.handle?.attributes.image ?? (r.spec.image ? { ref: r.spec.image } : null),
    priority: r.priority,
    exitCode: r.exitCode,
    oomKilled: r.oomKilled,
    timedOut: r.timedOut,
    startupMs: r.startupMs,
    durationMs: r.durationMs,
    peakMemoryBytes: r.peakMemoryBytes,
    cpuUsageNs: r.cpuUsageNs,
    costDollars: r.costDollars,
    createdAt: r.createdAt,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    attempts: r.attempts,
    waitReason: r.waitReason,
    cancelRequested: r.cancelRequested,
    error: r.error,
    pipeline: r.origin.pipeline ?? null,
    // Its checkout, the artifacts and cache it started with, and what it kept.
    workspace: r.handle?.attributes.workspace ?? null,
  };
}

/**
 * A pipeline as the API shows it: its state and, per job in file order, where it sits in the
 * DAG, how it is doing (waiting, skipped and why, or its current attempt) and every attempt.
 */
export function pipelineView(p: PipelineRecord, jobs: ReadonlyMap<string, JobRecord>) {
  return {
    id: p.id,
    tenant: p.tenant,
    name: p.name,
    state: p.state,
    cancelRequested: p.cancelRequested,
    repository: p.origin.repository ?? null,
    commit: p.origin.commit ?? null,
    createdAt: p.createdAt,
    finishedAt: p.finishedAt,
    stages: p.plan.stages,
    jobs: p.plan.jobs.map((j) => {
      const s = p.jobs[j.name] ?? { attempts: [] };
      const attempts = s.attempts.flatMap((id) => {
        const r = jobs.get(id);
        return r ? [jobView(r)] : [];
      });
      const current = attempts.at(-1);
      return {
        name: j.name,
        stage: j.stage,
        needs: j.after,
        when: j.when,
        allowFailure: j.allowFailure,
        status: s.skipped
          ? 'skipped'
          : s.error
            ? 'error'
            : (current?.state ?? (s.attempts.length ? 'queued' : 'waiting')),
        skipped: s.skipped ?? null,
        error: s.error ?? current?.error ?? null,
        job: current?.id ?? null,
        attempts,
      };
    }),
  };
}

/** A pipeline's jobs (every attempt), for its view. */
export async function pipelineJobs(
  p: PipelineRecord,
  getJob: (id: string) => Promise<JobRecord | undefined>,
): Promise<Map<string, JobRecord>> {
  const out = new Map<string, JobRecord>();
  for (const s of Object.values(p.jobs))
    for (const id of s.attempts) {
      const j = await getJob(id);
      if (j) out.set(id, j);
    }
  return out;
}
