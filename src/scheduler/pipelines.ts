import { randomUUID } from 'node:crypto';
import type { Boxcar } from '../boxcar.js';
import { UserError } from '../lib/errors.js';
import type { JobSpec } from '../jobs/spec.js';
import { pipelineEnded } from '../observability/tracing.js';
import { evaluate, type AttemptOutcome, type PipelineJobStatus } from '../pipelines/dag.js';
import type { PipelinePlan, PlannedJob } from '../pipelines/plan.js';
import type { TrustInputs } from '../policy/trust.js';
import type { JobOrigin, PipelineRecord, Store } from '../store/store.js';
import { acceptJob, JobRefused, QueueFull } from './intake.js';
import type { Scheduler } from './scheduler.js';

/**
 * Queues one attempt of a pipeline's job under the id the pipeline reserved for it. Resolves
 * once the job is recorded; rejects with a UserError when it can never be (the job's failure),
 * or with QueueFull to be tried again later.
 */
export type QueueAttempt = (p: PipelineRecord, jobId: string, spec: JobSpec) => Promise<void>;

/**
 * Moves a pipeline on as far as it goes now: evaluates its DAG (pipelines/dag.ts) against its
 * jobs' states, records which jobs to start, retry or skip and the pipeline's state, and
 * queues the started ones. Ids are reserved in the record before their jobs are queued, so a
 * node that dies in between leaves an id whose job the next advance queues (with that id: never
 * twice); a write that lost a race with another node's is read again and redone.
 */
export async function advancePipeline(
  store: Store,
  id: string,
  queue: QueueAttempt,
  onChange?: (p: PipelineRecord) => void,
): Promise<PipelineRecord | undefined> {
  for (;;) {
    const p = await store.getPipeline(id);
    if (!p || p.state !== 'running') return p;
    const outcomes = new Map<string, AttemptOutcome>();
    const unqueued: Array<{ name: string; jobId: string }> = [];
    for (const [name, s] of Object.entries(p.jobs))
      for (const jobId of s.attempts) {
        const job = await store.getJob(jobId);
        if (job) outcomes.set(jobId, { state: job.state, infraFailure: job.infraFailure });
        else if (!s.error) unqueued.push({ name, jobId });
      }
    const step = evaluate(p.plan, p.jobs, (jobId) => outcomes.get(jobId), p.cancelRequested);
    const jobs = structuredClone(p.jobs);
    const fresh: Array<{ name: string; jobId: string }> = [];
    for (const s of step.skip) jobs[s.name] = { attempts: jobs[s.name]?.attempts ?? [], skipped: s.why };
    for (const s of [...step.start, ...step.retry]) {
      const jobId = randomUUID();
      jobs[s.job.name] = { attempts: [...(jobs[s.job.name]?.attempts ?? []), jobId] };
      fresh.push({ name: s.job.name, jobId });
    }
    const changed = fresh.length > 0 || step.skip.length > 0 || step.state !== p.state;
    let current = p;
    if (changed) {
      const updated = await store.updatePipeline(p.id, p.version, {
        jobs,
        state: step.state,
        ...(step.state !== 'running' ? { finishedAt: Date.now() } : {}),
      });
      if (!updated) continue; // another node moved it on first: look again
      current = updated;
      onChange?.(current);
      pipelineEnded(current); // its span, once: the one write that moved it to its end
    }
    const failed: Record<string, string> = {};
    for (const a of [...unqueued, ...fresh]) {
      const planned = current.plan.jobs.find((j) => j.name === a.name) as PlannedJob;
      try {
        await queue(current, a.jobId, withArtifactsOf(current.plan, planned, current.jobs));
      } catch (err) {
        if (err instanceof QueueFull) continue; // its id stays reserved: queued by a later advance
        if (!(err instanceof UserError)) throw err;
        failed[a.name] = err.message;
      }
    }
    if (Object.keys(failed).length) {
      // Jobs that could not be queued (over a limit, a secret missing): their failure, recorded.
      const again = await store.getPipeline(id);
      if (!again) return undefined;
      const marked = structuredClone(again.jobs);
      for (const [name, why] of Object.entries(failed))
        marked[name] = { attempts: marked[name]?.attempts ?? [], error: why };
      await store.updatePipeline(id, again.version, { jobs: marked }); // lost a race: redone next pass
      continue;
    }
    if (!changed) return current;
  }
}

/** The job's spec with the jobs whose artifacts it takes, by their current attempt. */
function withArtifactsOf(
  plan: PipelinePlan,
  job: PlannedJob,
  jobs: Record<string, PipelineJobStatus>,
): JobSpec {
  const from = job.after
    .filter(
      (n) =>
        plan.jobs.find((j) => j.name === n)?.spec.artifacts && jobs[n]?.attempts.length && !jobs[n]?.skipped,
    )
    .map((n) => ({ name: n, jobId: jobs[n]?.attempts.at(-1) as string }));
  return { ...job.spec, artifactsFrom: from };
}

/**
 * Pipelines on a serving node: accepted with their DAG, moved on whenever one of their jobs
 * changes (on this node or, seen by a sweep, on another), and after a restart.
 */
export class PipelineRunner {
  private readonly running = new Map<string, Promise<unknown>>();
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private readonly listeners = new Set<(p: PipelineRecord) => void>();

  constructor(
    private readonly box: Boxcar,
    private readonly scheduler: Scheduler,
    private readonly sweepMs = 2000,
  ) {}

  start(): void {
    this.unsubscribe = this.scheduler.onJobChange((jobId) => {
      void this.box.store.getJob(jobId).then((j) => {
        if (j?.origin.pipeline) void this.advance(j.origin.pipeline);
      });
    });
    this.timer = setInterval(() => void this.sweep(), this.sweepMs);
    void this.sweep();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.unsubscribe?.();
    await Promise.allSettled([...this.running.values()]);
  }

  /** Called with every pipeline whose record changed on this node. */
  onChange(listener: (p: PipelineRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Records a pipeline and queues the jobs that can start now. */
  async submit(input: {
    tenant: string;
    plan: PipelinePlan;
    origin: JobOrigin;
    classifier?: TrustInputs;
  }): Promise<PipelineRecord> {
    const p = await this.box.store.createPipeline({
      id: randomUUID(),
      tenant: input.tenant,
      name: input.plan.name,
      plan: input.plan,
      origin: input.origin,
      classifier: input.classifier,
      createdAt: Date.now(),
    });
    this.emit(p);
    return (await this.advance(p.id)) ?? p;
  }

  /** Asks for a pipeline to stop: nothing more starts, its running jobs are cancelled. */
  async cancel(id: string, actor: string): Promise<PipelineRecord | undefined> {
    for (;;) {
      const p = await this.box.store.getPipeline(id);
      if (!p || p.state !== 'running') return p;
      const updated = await this.box.store.updatePipeline(id, p.version, { cancelRequested: true });
      if (!updated) continue;
      for (const s of Object.values(updated.jobs)) {
        const last = s.attempts.at(-1);
        if (!last) continue;
        const job = await this.box.store.getJob(last);
        if (!job || ['succeeded', 'failed', 'oom', 'timeout', 'cancelled', 'error'].includes(job.state))
          continue;
        await this.box.store.requestCancel(last, actor, 'its pipeline was cancelled');
        this.scheduler.cancelLocal(last);
        this.scheduler.announce(last);
      }
      return (await this.advance(id)) ?? updated;
    }
  }

  /** Moves one pipeline on; advances of one pipeline on this node take turns. */
  advance(id: string): Promise<PipelineRecord | undefined> {
    const before = this.running.get(id) ?? Promise.resolve();
    const next = before
      .catch(() => undefined)
      .then(() =>
        advancePipeline(
          this.box.store,
          id,
          (p, jobId, spec) => this.queue(p, jobId, spec),
          (p) => this.emit(p),
        ),
      );
    this.running.set(id, next);
    void next
      .catch((err: unknown) => this.box.logger.error({ err, pipeline: id }, 'advancing a pipeline failed'))
      .finally(() => {
        if (this.running.get(id) === next) this.running.delete(id);
      });
    return next;
  }

  private emit(p: PipelineRecord): void {
    for (const l of this.listeners) l(p);
  }

  private async sweep(): Promise<void> {
    try {
      for (const p of await this.box.store.listPipelines({ states: ['running'], limit: 1000 }))
        if (!this.running.has(p.id)) await this.advance(p.id).catch(() => undefined);
    } catch (err) {
      this.box.logger.error({ err }, 'pipeline sweep failed');
    }
  }

  private async queue(p: PipelineRecord, jobId: string, spec: JobSpec): Promise<void> {
    if (await this.box.store.getJob(jobId)) return;
    try {
      await acceptJob(this.box, this.scheduler.placement, {
        id: jobId,
        tenant: p.tenant,
        spec: { ...spec, env: { ...spec.env, BOXCAR_PIPELINE_ID: p.id } },
        origin: { ...p.origin, pipeline: p.id },
        classifier: p.classifier,
      });
    } catch (err) {
      if (err instanceof JobRefused) return; // recorded, in error: the DAG sees it failed
      throw err;
    } finally {
      this.scheduler.notify();
    }
    this.scheduler.announce(jobId);
  }
}
