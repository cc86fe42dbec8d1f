import { EventEmitter } from 'node:events';
import os from 'node:os';
import type { Boxcar } from '../boxcar.js';
import { observeAdmission, observeFinishedJob } from '../observability/metrics.js';
import { errorMessage } from '../lib/errors.js';
import { executeJob, startedAudit, superviseJob, type ExecuteResult } from '../runner/execute.js';
import { currentOwner, ownerAlive } from '../lib/owner.js';
import { settle } from '../runner/reconcile.js';
import { destroySandbox, sweepStaleSandboxes } from '../runner/sandbox-cleanup.js';
import { IllegalTransition, ZERO_USAGE, type JobRecord } from '../store/store.js';
import { nodeCapacity, Placement } from './capacity.js';
import { fairOrder, RecentStarts } from './fair-order.js';
import { addUsage, admit, jobUsage } from '../tenants/quota.js';
import { tenantSettings } from '../tenants/tenant-config.js';

const PER_TENANT_WINDOW = 200;
/**
 * Sandboxes being created at once, per core: starting is CPU-bound (conmon, runc), and a
 * thousand at once would only make every one of them slow.
 */
const STARTS_PER_CORE = 4;
const IDLE_POLL_MS = 500;
/** How often a serving node looks for leftover workspaces and expired artifacts. */
const TIDY_EVERY_MS = 3600_000;
/** The event every announced change is also emitted as (job ids are the other events). */
const ANY_JOB = Symbol('any job');

interface Active {
  job: JobRecord;
  abort: AbortController;
  done: Promise<unknown>;
}

export interface SchedulerOptions {
  /** How often the queue is looked at when nothing wakes the scheduler (other nodes' jobs). */
  pollMs?: number;
}

/**
 * A serving node's scheduler: takes queued jobs from the store in fair order, admits them
 * against their tenant's quotas and this node's capacity, claims them with a lease, and runs
 * them. A heartbeat renews the leases and picks up cancel requests. After a crash it re-attaches
 * to its jobs' sandboxes that still run, records the exit of those that ended, and requeues
 * those that never started; a lost node's jobs are requeued once its leases expire.
 */
export class Scheduler {
  readonly owner: string;
  readonly placement: Placement;
  private readonly active = new Map<string, Active>();
  private readonly served = new RecentStarts();
  private starting = 0;
  private readonly maxStarting = os.availableParallelism() * STARTS_PER_CORE;
  /** Emits a job's id when this node sees it change (ended, cancelled). */
  private readonly changes = new EventEmitter().setMaxListeners(0);
  private readonly leaseMs: number;
  private stopping = false;
  private wakeUp: (() => void) | undefined;
  private woken = false;
  private loopDone: Promise<void> | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private maintenance: NodeJS.Timeout | undefined;

  constructor(
    private readonly box: Boxcar,
    private readonly opts: SchedulerOptions = {},
  ) {
    this.owner = currentOwner(box.paths.root);
    this.placement = new Placement(nodeCapacity(box.config.scheduler), box.config.scheduler.concurrency);
    this.leaseMs = box.config.scheduler.lease;
  }

  async start(): Promise<void> {
    await this.recoverAfterCrash();
    // Only now: the jobs re-attached above are this process's, and their sandboxes stay.
    await sweepStaleSandboxes(this.box, (job) => job.owner === this.owner);
    await this.tidy();
    this.heartbeat = setInterval(() => void this.beat(), Math.max(100, Math.floor(this.leaseMs / 3)));
    this.maintenance = setInterval(() => void this.tidy(), TIDY_EVERY_MS).unref();
    this.loopDone = this.loop();
  }

  /** Workspaces of jobs that ended while their cleanup did not run, and expired artifacts, go. */
  private async tidy(): Promise<void> {
    try {
      const live = await this.box.store.listJobs({
        states: ['queued', 'starting', 'running'],
        limit: 100_000,
      });
      const ids = new Set(live.map((j) => j.id));
      const tidied = await this.box.workspaces.tidy((id) => ids.has(id));
      if (tidied.workspaces.length || tidied.artifacts)
        this.box.logger.info(tidied, 'removed leftover workspaces and expired artifacts');
    } catch (err) {
      this.box.logger.error({ err }, 'tidying workspaces and artifacts failed');
    }
  }

  /** Something changed (a job was submitted or ended): look at the queue now. */
  notify(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /** Tells waiters on this node that a job changed. */
  announce(id: string): void {
    this.changes.emit(id);
    this.changes.emit(ANY_JOB, id);
  }

  /** Calls `listener` with the id of every job this node announces; returns how to stop. */
  onJobChange(listener: (id: string) => void): () => void {
    this.changes.on(ANY_JOB, listener);
    return () => this.changes.off(ANY_JOB, listener);
  }

  /** Settles when this node sees the job change, or after `timeoutMs` (another node may run it). */
  nextChange(id: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.changes.off(id, done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, timeoutMs));
      this.changes.once(id, done);
    });
  }

  /** Jobs this node runs now. */
  get running(): number {
    return this.active.size;
  }

  /** Cancels a job this node runs (the fast path; other nodes see the request at their heartbeat). */
  cancelLocal(id: string): boolean {
    const a = this.active.get(id);
    a?.abort.abort();
    return a !== undefined;
  }

  /**
   * Stops taking jobs, waits up to `drainMs` for running ones, and leaves the rest running in
   * their sandboxes: the next start of this node re-attaches to them.
   */
  async stop(drainMs: number): Promise<{ drained: number; left: number }> {
    this.stopping = true;
    this.notify();
    await this.loopDone;
    const running = [...this.active.values()].map((a) => a.done);
    const before = running.length;
    await Promise.race([Promise.allSettled(running), new Promise((r) => setTimeout(r, drainMs).unref())]);
    clearInterval(this.heartbeat);
    clearInterval(this.maintenance);
    const left = this.active.size;
    return { drained: before - left, left };
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      try {
        await this.pass();
      } catch (err) {
        this.box.logger.error({ err }, 'scheduling pass failed; retrying');
      }
      if (this.stopping) break;
      if (!this.woken)
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, this.opts.pollMs ?? IDLE_POLL_MS);
          this.wakeUp = () => {
            clearTimeout(t);
            resolve();
          };
        });
      this.wakeUp = undefined;
      this.woken = false;
    }
  }

  /** One look at the queue: admit and start every job that fits, in fair order. */
  private async pass(): Promise<void> {
    const { store, config } = this.box;
    const now = Date.now();
    const free = this.maxStarting - this.starting;
    if (free <= 0) return;
    // Each tenant's first few: enough to fill the free start slots, past some that must wait.
    const queued = await store.claimable(now, Math.min(PER_TENANT_WINDOW, Math.max(8, 2 * free)));
    if (!queued.length) return;
    const usage = await store.admittedUsage();
    const admitted = new Map([...usage].map(([tenant, u]) => [tenant, u.pods]));
    const weight = (tenant: string) => tenantSettings(config.tenants, tenant).weight;
    for (const job of fairOrder(queued, { admitted, served: this.served.snapshot(), weight })) {
      if (this.stopping || this.starting >= this.maxStarting) return;
      const used = usage.get(job.tenant) ?? ZERO_USAGE;
      const quota = admit(config.quotas, job.tenant, used, job.spec);
      if (!quota.admit) {
        if (quota.never) await this.refuse(job, quota.reason);
        else await this.waitFor(job, quota.reason, 'quota');
        continue;
      }
      const refusal = this.placement.refusal(job.spec, job.runtime);
      if (refusal) {
        await this.waitFor(job, refusal, 'capacity');
        continue;
      }
      const driver = this.box.runtimes.get(job.runtime);
      await driver.warm?.();
      // Admitted and claimed in one transaction against the tenant's usage across every node:
      // the usage read above is this pass's snapshot, and other nodes admit meanwhile.
      const claimed = await store.claimWithinQuota(job.id, this.owner, Date.now() + this.leaseMs, (now) => {
        const q = admit(config.quotas, job.tenant, now, job.spec);
        return q.admit ? undefined : q.reason;
      });
      if (!claimed) continue; // another node took it, or it was cancelled
      if ('refused' in claimed) {
        await this.waitFor(job, claimed.refused, 'quota');
        continue;
      }
      observeAdmission('admitted', 'ok');
      usage.set(job.tenant, addUsage(used, jobUsage(job.spec)));
      this.served.started(job.tenant);
      this.launch(claimed, config.scheduler.max_attempts);
    }
  }

  /**
   * Runs a claimed job. Its own method, not the pass's loop: the closures a running job holds
   * for its whole life then hold the claimed record only, not the pass's (a second copy of the
   * job per running job).
   */
  private launch(claimed: JobRecord, maxAttempts: number): void {
    this.starting++;
    let startDone = false;
    const onStartDone = () => {
      if (startDone) return;
      startDone = true;
      this.starting--;
      this.notify();
    };
    this.track(claimed, (signal) =>
      executeJob(this.box, claimed, {
        signal,
        outputLimitBytes: 0,
        onStartDone,
        retry: { maxAttempts, backoffMs: (attempts) => Math.min(60_000, 1000 * 2 ** attempts) },
      }).finally(onStartDone),
    );
  }

  private track(job: JobRecord, run: (signal: AbortSignal) => Promise<ExecuteResult>): void {
    const abort = new AbortController();
    this.placement.hold(job.spec, job.runtime);
    const done = run(abort.signal)
      .then(({ record }) => observeFinishedJob(record))
      .catch((err: unknown) => this.box.logger.error({ err, job_id: job.id }, 'job supervision failed'))
      .finally(() => {
        this.active.delete(job.id);
        this.placement.free(job.spec, job.runtime);
        this.announce(job.id);
        this.notify();
      });
    this.active.set(job.id, { job, abort, done });
  }

  /** Records why a queued job waits, when that changed (a write per change, not per pass). */
  private async waitFor(job: JobRecord, reason: string, why: 'quota' | 'capacity'): Promise<void> {
    if (job.waitReason === reason) return;
    observeAdmission('waiting', why); // once per reason a job waits for, not once per pass
    const claimed = await this.box.store.claim(job.id, this.owner, Date.now() + this.leaseMs);
    if (claimed) await this.box.store.release(job.id, this.owner, reason);
  }

  /** A job that can never fit its quota ends in error with the reason, instead of waiting forever. */
  private async refuse(job: JobRecord, reason: string): Promise<void> {
    const claimed = await this.box.store.claim(job.id, this.owner, Date.now() + this.leaseMs);
    if (!claimed) return;
    await this.box.store.transition(job.id, 'error', { finishedAt: Date.now(), error: reason }, reason, {
      tenant: job.tenant,
      actor: `node:${this.owner}`,
      action: 'job.refused',
      subject: job.id,
      detail: { reason },
    });
    observeAdmission('refused', 'quota');
    this.announce(job.id); // its watchers (forge statuses, the API's waiters) hear it ended
  }

  /** Heartbeat: keep the leases, honour cancel requests, requeue the jobs of lost nodes. */
  private async beat(): Promise<void> {
    const { store, logger } = this.box;
    try {
      const now = Date.now();
      // Only the runs of jobs claimed before the renewal are judged by it (one claimed meanwhile
      // is not in it), each by its own claim: the job may have been requeued and claimed again
      // since, by this node too, and that later run is not the one judged here.
      const running = [...this.active.values()];
      const held = new Set(await store.renewLeases(this.owner, now + this.leaseMs));
      // A run whose claim this node no longer holds (it was paused or cut off past its lease,
      // and another node took the job over or ran it again): its sandbox is stopped at once,
      // and what it would write of the job is fenced off.
      for (const run of running) {
        const { id, attempts } = run.job;
        if (held.has(id) && this.active.get(id) === run) continue;
        // Not held either: a run that ended here (its final state is written under its claim)
        // while its sandbox is torn down, which can take a while when a thousand end at once.
        const current = await store.getJob(id);
        if (current?.owner === this.owner && current.attempts === attempts) continue;
        logger.warn({ job_id: id }, 'this node lost its claim on a job it runs: stopping its sandbox');
        run.abort.abort();
      }
      for (const id of await store.cancelRequests(this.owner)) this.cancelLocal(id);
      for (const job of await store.expiredLeases(now, 100)) await this.takeOverExpired(job);
    } catch (err) {
      logger.error({ err }, 'heartbeat failed');
    }
  }

  /** A started job whose owner's lease ran out. */
  private async takeOverExpired(job: JobRecord): Promise<void> {
    if (!job.owner || this.active.has(job.id)) return;
    const alive = ownerAlive(job.owner, this.box.paths.root);
    if (alive === true) return; // a live local owner late with its heartbeat
    if (alive === false) return this.reattach(job); // this host: its sandbox may still run
    try {
      await this.settleLost(job, job.owner, `node ${job.owner} lost (its lease expired)`);
      this.announce(job.id);
    } catch (err) {
      this.ignoreRace(err);
    }
  }

  /**
   * Another node stopped renewing: it is gone, and its jobs died with it. Each runs again
   * elsewhere within the retry budget, counted across nodes (a job that kills every node it
   * lands on is not passed around for ever), and only if it is still the job this node read as
   * expired: another node may have taken it since. Past the budget it ends in error, once this
   * node has taken it from the lost owner (atomically: then no other node runs it).
   */
  private async settleLost(job: JobRecord, from: string, why: string): Promise<void> {
    const max = this.box.config.scheduler.max_attempts;
    if (job.attempts + 1 < max) {
      await this.box.store.requeue(job.id, Date.now(), `${why}; requeued`, {
        expect: { owner: from, leaseUntil: job.leaseUntil },
      });
      return;
    }
    if (!(await this.box.store.takeOver(job.id, from, this.owner, Date.now() + this.leaseMs))) return;
    await this.box.store.transition(
      job.id,
      'error',
      { finishedAt: Date.now(), error: `${why}, its attempt ${job.attempts + 1} of ${max}` },
      `${why}; no attempts left`,
    );
  }

  /** After a crash or kill -9 of this node's previous process. */
  private async recoverAfterCrash(): Promise<void> {
    const live = await this.box.store.listJobs({
      states: ['queued', 'starting', 'running'],
      limit: 1_000_000,
    });
    for (const job of live) {
      if (!job.owner || job.leaseUntil === null || ownerAlive(job.owner, this.box.paths.root) !== false)
        continue;
      try {
        await this.reattach(job);
      } catch (err) {
        this.box.logger.error({ err, job_id: job.id }, 'could not recover a job after a restart');
      }
    }
  }

  /** A job of a dead process of this host: re-attach, record its exit, or requeue it. */
  private async reattach(job: JobRecord): Promise<void> {
    const { store, runtimes, logger } = this.box;
    const from = job.owner as string;
    if (job.state === 'queued') return store.release(job.id, from, 'its node restarted');
    const driver = runtimes.get(job.runtime);
    const found = job.handle ? await driver.recover(job.handle) : undefined;
    if ((found?.state === 'running' || found?.state === 'created') && job.handle) {
      if (!(await store.takeOver(job.id, from, this.owner, Date.now() + this.leaseMs))) return;
      // Killed between creating the sandbox and starting its process: finish the start.
      if (found.state === 'created') await driver.start(job.handle);
      // Its claim is this process's now: what supervising it writes carries this node's fence.
      let record: JobRecord = { ...job, owner: this.owner };
      if (job.state === 'starting')
        record = await store.transition(
          job.id,
          'running',
          { startedAt: Date.now() },
          're-attached after a restart',
          startedAudit({ ...job, owner: this.owner }, job.handle, { reattached: true }),
        );
      logger.info({ job_id: job.id, sandboxId: job.handle.sandboxId }, 're-attached to a running job');
      const handle = job.handle;
      this.track(record, (signal) =>
        superviseJob(this.box, record, driver, handle, { signal, outputLimitBytes: 0 }),
      );
      return;
    }
    if (found?.state === 'exited') return void (await settle(this.box, job));
    // Its sandbox is gone with its node (or never existed): the job has not finished anywhere,
    // so it runs again elsewhere, within the retry budget.
    if (job.handle) await destroySandbox(this.box, driver, job.handle);
    const why =
      job.state === 'starting'
        ? `node ${from} was lost before the job started`
        : `node ${from} was lost while the job ran (${found?.state === 'gone' ? found.reason : 'no sandbox'})`;
    if (job.attempts + 1 < this.box.config.scheduler.max_attempts) {
      await store.requeue(job.id, Date.now(), `${why}; requeued`);
      return;
    }
    await store.transition(
      job.id,
      'error',
      { finishedAt: Date.now(), error: why },
      `${why}; no attempts left`,
    );
  }

  private ignoreRace(err: unknown): void {
    if (err instanceof IllegalTransition) return; // someone else settled it first
    this.box.logger.error({ err: errorMessage(err) }, 'requeueing a lost job failed');
  }
}
