import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode, ifExists } from '../../lib/errors.js';
import type { Logger } from '../../observability/logger.js';
import {
  cgroupDirs,
  createLimitedCgroup,
  readCgroupStats,
  removeCgroup,
  removeCgroupOfKilled,
} from '../shared/cgroups.js';
import { workerCommand, type Confinement } from './launcher.js';
import type { RunTask, WorkerMessage } from './worker.js';

/**
 * What a worker process may hold above its job's memory limit: Node and V8's heap (a worker
 * measured 8 MiB charged to its cgroup idle, 36 MiB more if it is the first to load Node's
 * code), the module's compiled code, and earlier jobs' memory not collected yet (under 8 MiB
 * of small jobs', see worker.ts; a large job's until a few jobs later). The job's memory and tables are capped inside the module at the job's limit.
 */
export const WORKER_OVERHEAD_BYTES = 64 * 2 ** 20;
/** Node's own threads (libuv's pool, V8's platform): a module cannot start any. */
const WORKER_PIDS = 32;
/** Distinct modules a worker compiles and keeps before it is retired: its code stays bounded. */
const MODULES_PER_WORKER = 32;
/** How much of a worker's stderr is kept to say why it died. */
const STDERR_KEPT = 4096;

export interface JobExit {
  exitCode: number;
  trap: string | null;
  /** The module's linear memory at the end. */
  memoryBytes: number;
  runNs: number;
  /** The worker's cgroup killed it for memory. */
  oomKilled: boolean;
}

export interface WorkerJob {
  key: string;
  bytes: Uint8Array<ArrayBuffer>;
  args: string[];
  env: Record<string, string>;
  memoryBytes: number;
  /** The job's workspace is its own directory (the worker's only job): left as the job left it. */
  keepWorkspace?: boolean;
  /** Receives the job's output as the worker writes it. */
  output: (chunk: Buffer) => void;
}

interface Current {
  id: number;
  marker: Buffer;
  output: (chunk: Buffer) => void;
  /** Output held back: it may be the start of the end marker. */
  held: Buffer;
  markerSeen: boolean;
  exit?: Extract<WorkerMessage, { type: 'exited' }>;
  started: () => void;
  done: (exit: JobExit) => void;
}

let nextJobId = 1;

const CGROUP_PREFIX = '/boxcar/wasm-';
/** A worker cgroup younger than this may be one another Boxcar is about to start a worker in. */
const SWEEP_AGE_MS = 60_000;

/**
 * Removes the cgroups of workers whose Boxcar died (its workers end with it, their cgroups
 * stay); one still in use is busy and stays.
 */
export async function sweepWorkerCgroups(): Promise<void> {
  const parent = path.dirname(cgroupDirs(`${CGROUP_PREFIX}x`)[0] as string);
  for (const name of (await ifExists(readdir(parent))) ?? []) {
    if (!`/boxcar/${name}`.startsWith(CGROUP_PREFIX)) continue;
    const made = await ifExists(stat(path.join(parent, name)));
    if (made && Date.now() - made.mtimeMs > SWEEP_AGE_MS) await removeCgroup(`/boxcar/${name}`);
  }
}

/**
 * One confined worker process (see launcher.c): its own cgroup, uid and namespaces, its own
 * workspace. Runs one job at a time; the job's output comes on its stdout, closed by a marker
 * made of random bytes the module never sees, so output and the end of the job arrive in order.
 */
export class WorkerProcess {
  /** Who the worker has served: once set, only jobs of the same tenant and trust come to it. */
  affinity: string | undefined;
  readonly ready: Promise<void>;
  /** Settles (never rejects) once the process has exited and its cgroup is gone. */
  readonly gone: Promise<void>;
  private current: Current | undefined;
  private readonly sent = new Set<string>();
  private memoryLimit: number;
  private stderr = '';
  private alive = true;
  private killedByUs = false;

  private constructor(
    private readonly child: ChildProcess,
    readonly cgroup: string,
    readonly workspaceBytes: number,
    memoryLimit: number,
    logger: Logger,
    /** The one job's own workspace, when the worker was started for it. */
    readonly workspaceDir?: string,
  ) {
    this.memoryLimit = memoryLimit;
    child.on('error', (err) => (this.stderr += `\n${err.message}`)); // a failed spawn: its exit follows
    child.stderr?.on('data', (b: Buffer) => (this.stderr = (this.stderr + b.toString()).slice(-STDERR_KEPT)));
    child.stdout?.on('data', (b: Buffer) => this.onOutput(b));
    this.ready = new Promise<void>((resolve, reject) => {
      const onMessage = (m: WorkerMessage) => {
        if (m.type !== 'ready') return;
        child.off('message', onMessage);
        resolve();
      };
      child.on('message', onMessage);
      child.once('exit', () => reject(new Error(`the wasm worker process did not start: ${this.why()}`)));
    });
    this.ready.catch(() => undefined); // a caller that waits sees it
    child.on('message', (m: WorkerMessage) => this.onMessage(m));
    this.gone = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        this.alive = false;
        this.onExit(code, signal)
          .catch((err: unknown) => logger.error({ err, cgroup }, 'wasm worker: cleaning up after it failed'))
          .finally(resolve);
      });
    });
  }

  /**
   * Starts a worker for jobs of up to `memoryBytes` with a workspace of `workspaceBytes`, or
   * (`workspaceDir`) for one job whose workspace is that directory.
   */
  static async start(
    c: Confinement,
    workspaceBytes: number,
    memoryBytes: number,
    logger: Logger,
    workspaceDir?: string,
  ): Promise<WorkerProcess> {
    const cgroup = `${CGROUP_PREFIX}${randomUUID()}`;
    const limit = memoryBytes + WORKER_OVERHEAD_BYTES;
    const procs = await createLimitedCgroup(cgroup, { memoryBytes: limit, pids: WORKER_PIDS });
    const [file, args] = workerCommand(c, workspaceDir ? { dir: workspaceDir } : workspaceBytes, procs);
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      serialization: 'advanced',
      env: {}, // nothing of Boxcar's environment (the operator's secrets)
    });
    return new WorkerProcess(child, cgroup, workspaceBytes, limit, logger, workspaceDir);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get usable(): boolean {
    return this.alive && !this.current;
  }

  /** It has compiled as many modules as a worker keeps: not given another job. */
  get spent(): boolean {
    return this.sent.size >= MODULES_PER_WORKER;
  }

  private why(): string {
    return this.stderr.trim().split('\n').slice(-3).join(' | ') || 'no message';
  }

  /** An idle worker does not keep Boxcar running; a busy one does. */
  hold(busy: boolean): void {
    const handles = [this.child, this.child.channel, this.child.stdout, this.child.stderr] as Array<
      { ref?: () => void; unref?: () => void } | null | undefined
    >;
    for (const h of handles) (busy ? h?.ref : h?.unref)?.call(h);
  }

  /**
   * Sets the cgroup's memory limit for a job of `memoryBytes`; false when the kernel cannot
   * bring it that low (the worker holds more): the worker is then not fit for the job.
   */
  async limitMemory(memoryBytes: number): Promise<boolean> {
    const limit = memoryBytes + WORKER_OVERHEAD_BYTES;
    if (limit === this.memoryLimit) return true;
    try {
      await createLimitedCgroup(this.cgroup, { memoryBytes: limit, pids: WORKER_PIDS });
    } catch (err) {
      if (errnoCode(err) === 'EBUSY') return false;
      throw err;
    }
    this.memoryLimit = limit;
    return true;
  }

  /** Runs a job; the worker must be ready and idle, its memory limit set for the job. */
  async run(job: WorkerJob): Promise<{ started: Promise<void>; done: Promise<JobExit> }> {
    if (!this.usable) throw new Error('wasm: a worker process was given a job while busy or gone');
    if (job.memoryBytes + WORKER_OVERHEAD_BYTES !== this.memoryLimit)
      throw new Error('wasm: a worker process was given a job before its memory limit was set');
    const id = nextJobId++;
    const marker = Buffer.concat([
      Buffer.from('\0boxcar-end:'),
      Buffer.from(randomBytes(16).toString('hex')),
      Buffer.from('\0'),
    ]);
    let started!: () => void;
    let done!: (exit: JobExit) => void;
    const startedP = new Promise<void>((r) => (started = r));
    const doneP = new Promise<JobExit>((r) => (done = r));
    this.current = {
      id,
      marker,
      output: job.output,
      held: Buffer.alloc(0),
      markerSeen: false,
      started,
      done,
    };
    const first = !this.sent.has(job.key);
    this.sent.add(job.key);
    this.child.send({
      type: 'run',
      id,
      key: job.key,
      bytes: first ? job.bytes : undefined,
      args: job.args,
      env: job.env,
      endMarker: marker.toString('latin1'),
      keepWorkspace: job.keepWorkspace ?? false,
    } satisfies RunTask);
    return { started: startedP, done: doneP };
  }

  private onOutput(chunk: Buffer): void {
    const cur = this.current;
    if (!cur || cur.markerSeen) return; // nothing runs: nothing of a job's can come
    const buf = cur.held.length ? Buffer.concat([cur.held, chunk]) : chunk;
    const at = buf.indexOf(cur.marker);
    if (at >= 0) {
      if (at > 0) cur.output(buf.subarray(0, at));
      cur.held = Buffer.alloc(0);
      cur.markerSeen = true;
      this.finish();
      return;
    }
    // Hold back only a tail that could be the start of the marker.
    let keep = Math.min(cur.marker.length - 1, buf.length);
    while (keep > 0 && !buf.subarray(buf.length - keep).equals(cur.marker.subarray(0, keep))) keep--;
    if (buf.length > keep) cur.output(buf.subarray(0, buf.length - keep));
    cur.held = Buffer.from(buf.subarray(buf.length - keep));
  }

  private onMessage(m: WorkerMessage): void {
    const cur = this.current;
    if (!cur || m.id !== cur.id) return;
    if (m.type === 'started') cur.started();
    if (m.type === 'exited') {
      cur.exit = m;
      this.finish();
    }
  }

  /** The job is over once its result and all its output have come. */
  private finish(): void {
    const cur = this.current;
    if (!cur?.exit || !cur.markerSeen) return;
    this.current = undefined;
    const { exitCode, trap, memoryBytes, runNs } = cur.exit;
    cur.done({ exitCode, trap, memoryBytes, runNs, oomKilled: false });
  }

  private async onExit(code: number | null, signal: NodeJS.Signals | null): Promise<void> {
    const cur = this.current;
    this.current = undefined;
    let oomKilled = false;
    try {
      oomKilled = (await readCgroupStats(this.cgroup)).oomKills > 0;
      await removeCgroupOfKilled(this.cgroup);
    } finally {
      if (cur) {
        if (cur.held.length) cur.output(cur.held);
        cur.started();
        const how = signal ?? `exit ${code}`;
        const trap = this.killedByUs
          ? null
          : oomKilled
            ? `the worker process ran out of memory (the job's limit, its workspace's files included, plus ${WORKER_OVERHEAD_BYTES / 2 ** 20} MiB for the worker) and was killed`
            : `the worker process ended (${how}): ${this.why()}`;
        cur.done({ exitCode: 137, trap, memoryBytes: 0, runNs: 0, oomKilled });
      }
    }
  }

  /** Ends the process at once (a stop, a timeout, or the pool letting it go). */
  kill(): void {
    this.killedByUs = true;
    this.hold(true); // its end is waited for: it keeps Boxcar running until then
    if (this.alive) this.child.kill('SIGKILL');
  }
}
