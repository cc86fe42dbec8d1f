import type { Logger } from '../../observability/logger.js';
import type { Confinement } from './launcher.js';
import { WorkerProcess, type JobExit, type WorkerJob } from './worker-process.js';

export interface PoolJob extends WorkerJob {
  /**
   * Who may share a worker process: a worker that has run a job of one tenant and trust never
   * runs another's (a module that broke out of V8 would find the next tenant's job).
   */
  affinity: string;
  workspaceBytes: number;
  /** The job's own workspace directory: a worker of its own is started for it and ended after it. */
  workspaceDir?: string;
}

export interface Running {
  started: Promise<void>;
  done: Promise<JobExit>;
  kill(): void;
  /** The worker process running the job, once it has one. */
  pid(): number | undefined;
}

/**
 * Warm, confined worker processes that run WASM jobs, at most `size` at a time, so a job costs
 * no process start: one unbound worker is kept ready ahead of jobs, a tenant's next job goes to
 * a worker that already serves it. A worker with a workspace of another size than the default
 * is started for its one job, and one that has compiled its share of modules is retired. A
 * stopped job's worker is killed and replaced.
 */
export class WasmPool {
  private readonly live = new Set<WorkerProcess>();
  /** Ready and without a job. */
  private readonly idle: WorkerProcess[] = [];
  private readonly waiting: Array<() => void> = [];
  /** Workers being set up (cgroup, spawn) and not yet in `live`; spares among them. */
  private starting = 0;
  private sparesStarting = 0;
  private closed = false;

  constructor(
    private readonly opts: {
      size: number;
      defaultWorkspaceBytes: number;
      /** The memory a spare worker's cgroup is first made for (jobs change it). */
      defaultMemoryBytes: number;
      confinement: () => Promise<Confinement>;
      logger: Logger;
    },
  ) {}

  private wake(): void {
    for (const w of this.waiting.splice(0)) w();
  }

  /** Workers alive or on their way: at most `size`. */
  private get count(): number {
    return this.live.size + this.starting;
  }

  private async start(
    workspaceBytes: number,
    memoryBytes: number,
    workspaceDir?: string,
  ): Promise<WorkerProcess> {
    this.starting++;
    let w: WorkerProcess;
    try {
      w = await WorkerProcess.start(
        await this.opts.confinement(),
        workspaceBytes,
        memoryBytes,
        this.opts.logger,
        workspaceDir,
      );
    } finally {
      this.starting--;
    }
    this.live.add(w);
    let served = false;
    w.ready.then(() => (served = true)).catch(() => undefined); // its job or warm() sees the failure
    void w.gone.then(() => {
      this.live.delete(w);
      const i = this.idle.indexOf(w);
      if (i >= 0) this.idle.splice(i, 1);
      this.wake();
      if (served) this.topUp(); // a worker that never started would fail again: not retried blindly
    });
    return w;
  }

  /** Keeps one unbound worker of the default workspace ready while there is room. */
  private topUp(): void {
    if (this.closed || this.count >= this.opts.size || this.sparesStarting > 0) return;
    if (
      [...this.live].some(
        (w) => w.affinity === undefined && w.workspaceBytes === this.opts.defaultWorkspaceBytes,
      )
    )
      return;
    void this.spare().catch((err: unknown) =>
      this.opts.logger.warn({ err }, 'wasm: a spare worker did not start'),
    );
  }

  private async spare(): Promise<WorkerProcess> {
    this.sparesStarting++;
    let w: WorkerProcess;
    try {
      w = await this.start(this.opts.defaultWorkspaceBytes, this.opts.defaultMemoryBytes);
      await w.ready;
    } finally {
      this.sparesStarting--;
    }
    w.hold(false);
    this.idle.push(w);
    this.wake();
    return w;
  }

  /** Settles once an unbound worker is ready for the next job. */
  async warm(): Promise<void> {
    const unbound = () => this.idle.some((w) => w.affinity === undefined);
    while (!unbound() && !this.closed) {
      if (this.count < this.opts.size) await this.spare();
      else await new Promise<void>((r) => this.waiting.push(r));
    }
  }

  private async acquire(job: PoolJob): Promise<WorkerProcess> {
    const fits = job.workspaceBytes === this.opts.defaultWorkspaceBytes && !job.workspaceDir;
    for (;;) {
      if (this.closed) throw new Error('wasm: the worker pool is closed');
      const w = fits
        ? (this.idle.find((x) => x.affinity === job.affinity) ??
          this.idle.find((x) => x.affinity === undefined))
        : undefined;
      if (w) {
        this.idle.splice(this.idle.indexOf(w), 1);
        w.affinity = job.affinity;
        this.topUp();
        if (await w.limitMemory(job.memoryBytes)) return w;
        w.kill(); // it holds more than the job's limit allows: a fresh worker instead
        await w.gone;
        continue;
      }
      if (this.count < this.opts.size) {
        const fresh = await this.start(job.workspaceBytes, job.memoryBytes, job.workspaceDir);
        fresh.affinity = job.affinity;
        this.topUp();
        await fresh.ready;
        return fresh;
      }
      // Full: a spare on its way is waited for; else an idle worker that cannot take this job
      // makes room; else the job waits for a worker to finish.
      const spareComing =
        fits &&
        (this.sparesStarting > 0 ||
          [...this.live].some((x) => x.affinity === undefined && !this.idle.includes(x)));
      const other = spareComing ? undefined : this.idle.find((x) => x.affinity !== job.affinity || !fits);
      if (other) {
        this.idle.splice(this.idle.indexOf(other), 1);
        other.kill();
        await other.gone;
      } else {
        await new Promise<void>((r) => this.waiting.push(r));
      }
    }
  }

  private release(w: WorkerProcess): void {
    if (
      !w.usable ||
      w.spent ||
      w.workspaceDir ||
      w.workspaceBytes !== this.opts.defaultWorkspaceBytes ||
      this.closed
    ) {
      w.kill();
      return;
    }
    w.hold(false);
    this.idle.push(w);
    this.wake();
  }

  run(job: PoolJob): Running {
    let worker: WorkerProcess | undefined;
    let killed = false;
    let markStarted!: () => void;
    const started = new Promise<void>((r) => (markStarted = r));
    const done = (async (): Promise<JobExit> => {
      try {
        const w = await this.acquire(job);
        worker = w;
        w.hold(true);
        if (killed) {
          this.release(w);
          return { exitCode: 137, trap: null, memoryBytes: 0, runNs: 0, oomKilled: false };
        }
        const running = await w.run(job);
        void running.started.then(markStarted);
        const exit = await running.done;
        this.release(w);
        return exit;
      } finally {
        markStarted();
      }
    })();
    return {
      started,
      done,
      kill: () => {
        killed = true;
        worker?.kill();
      },
      pid: () => worker?.pid,
    };
  }

  /** Each worker process: its pid, its cgroup, whom it serves (tenant and trust), whether it has a job. */
  workers(): Array<{ pid: number | undefined; cgroup: string; serves: string | null; busy: boolean }> {
    return [...this.live].map((w) => ({
      pid: w.pid,
      cgroup: w.cgroup,
      serves: w.affinity?.replace('\0', '/') ?? null,
      busy: !this.idle.includes(w),
    }));
  }

  /** Ends every worker process and waits until they and their cgroups are gone. */
  async close(): Promise<void> {
    this.closed = true;
    this.wake();
    const all = [...this.live];
    for (const w of all) w.kill();
    await Promise.all(all.map((w) => w.gone));
  }
}
