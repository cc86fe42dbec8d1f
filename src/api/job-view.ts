import type { JobRecord } from '../store/store.js';

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
  };
}
