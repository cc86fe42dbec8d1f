import { Worker } from 'node:worker_threads';
import type { RunTask, WorkerMessage } from './worker.js';

export interface Running {
  started: Promise<void>;
  done: Promise<Extract<WorkerMessage, { type: 'exited' }>>;
  kill(): void;
}

const WORKER = new URL('./worker.js', import.meta.url);

/** `(module (func (export "_start")))`: run once by every new thread so node:wasi is loaded and hot. */
const WARM_UP_MODULE = new WebAssembly.Module(
  Uint8Array.from([
    0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 7, 10, 1, 6, 95, 115, 116, 97, 114, 116, 0, 0,
    10, 4, 1, 2, 0, 11,
  ]),
);
let nextTaskId = 1;

/**
 * Threads that run WASM jobs, sized to the machine, so a job costs no thread or process start.
 * A job that must be stopped (timeout, cancel) has its thread terminated and replaced.
 */
export class WasmPool {
  private readonly idle: Worker[] = [];
  /** Settles when the thread has run its warm-up module (or failed to start). */
  private readonly ready = new WeakMap<Worker, Promise<void>>();
  private readonly waiting: Array<(w: Worker) => void> = [];
  private live = 0;

  constructor(private readonly size: number) {}

  private spawn(): Worker {
    this.live++;
    // No ExperimentalWarning for node:wasi on the job's terminal.
    // Nothing of boxcar's environment: the thread's own copy would hold the operator's secrets.
    const w = new Worker(WORKER, { execArgv: ['--no-warnings'], env: {} });
    w.postMessage({
      id: 0,
      module: WARM_UP_MODULE,
      args: ['warm-up'],
      env: {},
      preopens: {},
      outputFd: 1,
    } satisfies RunTask);
    this.ready.set(
      w,
      new Promise<void>((resolve) => {
        const onMessage = (m: WorkerMessage) => m.id === 0 && m.type === 'exited' && done();
        const done = () => {
          w.off('message', onMessage);
          w.off('error', done);
          resolve();
        };
        w.on('message', onMessage);
        w.once('error', done); // the job that gets this thread sees the error
      }),
    );
    return w;
  }

  /**
   * Starts threads ahead of jobs (a thread's first start costs ~20 ms of isolate boot);
   * settles when the idle threads are ready.
   */
  async warm(count: number): Promise<void> {
    const started: Worker[] = [];
    while (this.live < Math.min(count, this.size)) started.push(this.spawn());
    this.idle.push(...started);
    await Promise.all(this.idle.map((w) => this.ready.get(w)));
    // Booting threads keep the process alive (someone waits for them); idle ones do not.
    for (const w of started) if (this.idle.includes(w)) w.unref();
  }

  /** A busy thread keeps the process alive (its job must finish); an idle one does not. */
  private async acquire(): Promise<Worker> {
    const w =
      this.idle.pop() ??
      (this.live < this.size
        ? this.spawn()
        : await new Promise<Worker>((resolve) => this.waiting.push(resolve)));
    w.ref();
    return w;
  }

  private release(w: Worker): void {
    const next = this.waiting.shift();
    if (next) return next(w);
    w.unref();
    this.idle.push(w);
  }

  private replace(w: Worker): void {
    this.live--;
    void w.terminate();
    const next = this.waiting.shift();
    if (next) next(this.spawn());
    else void this.warm(1); // keep one thread ready for the next job
  }

  run(task: Omit<RunTask, 'id'>): Running {
    let killed = false;
    let worker: Worker | undefined;
    let onKill: (() => void) | undefined;
    let markStarted!: () => void;
    const started = new Promise<void>((r) => (markStarted = r));
    const done = (async () => {
      const w = await this.acquire();
      worker = w;
      if (killed) {
        this.release(w);
        markStarted();
        return { id: 0, type: 'exited' as const, exitCode: 137, trap: null, memoryBytes: 0, runNs: 0 };
      }
      return new Promise<Extract<WorkerMessage, { type: 'exited' }>>((resolve, reject) => {
        const id = nextTaskId++;
        const onMessage = (m: WorkerMessage) => {
          if (m.id !== id) return; // the thread's warm-up, not this job
          if (m.type === 'started') return markStarted();
          cleanup();
          this.release(w);
          resolve(m);
        };
        const onError = (err: Error) => {
          cleanup();
          this.replace(w);
          reject(err);
        };
        onKill = () => {
          cleanup();
          this.replace(w);
          markStarted();
          resolve({ id, type: 'exited', exitCode: 137, trap: null, memoryBytes: 0, runNs: 0 });
        };
        const cleanup = () => {
          w.off('message', onMessage);
          w.off('error', onError);
        };
        w.on('message', onMessage);
        w.on('error', onError);
        w.postMessage({ ...task, id } satisfies RunTask);
      });
    })();
    return {
      started,
      done,
      kill: () => {
        killed = true;
        if (worker) onKill?.();
      },
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.idle.splice(0).map((w) => w.terminate()));
  }
}
