import { closeSync, openSync, writeSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { StatePaths } from '../../lib/state-paths.js';
import { UserError } from '../../lib/errors.js';
import type { Logger } from '../../observability/logger.js';
import type {
  Capabilities,
  ExitStatus,
  Fingerprint,
  OutputOptions,
  Recovered,
  Runtime,
  SandboxRequest,
  StopSignal,
  TaskStats,
} from '../runtime.js';
import type { OutputChunk } from '../../lib/follow.js';
import { newHandle, type TaskHandle } from '../../jobs/handle.js';
import { imageModule } from '../../images/image.js';
import { followFile, rawDecoder } from '../../lib/follow.js';
import { capMemory, nonWasiImports, PAGE } from './module.js';
import { WasmPool, type Running } from './pool.js';
import { Workspaces } from './workspaces.js';
import { DEFAULT_RESOURCES } from '../../jobs/spec.js';

interface Task {
  running?: Running;
  module: WebAssembly.Module;
  args: string[];
  env: Record<string, string>;
  workspace: string;
  outputFd?: number;
  exit?: { exitCode: number; trap: string | null; memoryBytes: number; runNs: number };
}

/**
 * Lightweight jobs as WebAssembly (WASI preview1) on a pool of threads in this process: no
 * container, no process per job. The module sees only its own /workspace (a preopen: a tmpfs
 * of the job's workspace size, see workspaces.ts), has no sockets (WASI preview1 has none), and its linear memory is capped at the job's memory limit.
 * Modules are compiled once per digest and memory cap and shared by every instance.
 */
export class WasmDriver implements Runtime {
  readonly name = 'wasm' as const;
  /** A thread of this process runs the module: its memory is the module's, a stop kills the thread. */
  readonly capabilities: Capabilities = {
    sharedKernel: false,
    workload: 'wasm-module',
    memoryMeasure: 'module',
    memoryOverheadBytes: () => 0,
    gracefulStop: false,
    hostCgroup: false,
    network: false,
    survivesRestart: false,
    writableRoot: false,
  };
  private readonly pool: WasmPool;
  private readonly compiled = new Map<string, Promise<WebAssembly.Module>>();
  private readonly tasks = new Map<string, Task>();
  private readonly workspaces: Workspaces;

  constructor(private readonly opts: { paths: StatePaths; logger: Logger; threads?: number }) {
    this.pool = new WasmPool(opts.threads ?? os.availableParallelism());
    this.workspaces = new Workspaces(opts.paths.sandboxes, DEFAULT_RESOURCES.workspace);
  }

  async fingerprint(): Promise<Fingerprint> {
    const details = {
      node: process.version,
      threads: String(os.availableParallelism()),
      wasi: 'preview1 (node:wasi)',
    };
    const major = Number(process.versions.node.split('.')[0]);
    if (major < 20)
      return {
        runtime: this.name,
        usable: false,
        reason: `node ${process.version} is too old for node:wasi preview1 jobs; use Node 20 or later`,
        details,
      };
    return {
      runtime: this.name,
      usable: true,
      reason: `WASI preview1 on ${details.threads} threads in this process (node ${process.version})`,
      details,
    };
  }

  private compile(digest: string, file: string, maxPages: number): Promise<WebAssembly.Module> {
    const key = `${digest}:${maxPages}`;
    let mod = this.compiled.get(key);
    if (!mod) {
      mod = (async () => {
        const m = await WebAssembly.compile(capMemory(await readFile(file), maxPages));
        const bad = nonWasiImports(m);
        if (bad.length)
          throw new UserError(
            `the module imports ${bad.join(', ')}: only WASI preview1 (wasi_snapshot_preview1) imports are allowed`,
          );
        return m;
      })();
      mod.catch(() => this.compiled.delete(key)); // a failure is not cached
      this.compiled.set(key, mod);
    }
    return mod;
  }

  private dir(sandboxId: string): string {
    return path.join(this.opts.paths.sandboxes, sandboxId);
  }

  async prepare(req: SandboxRequest): Promise<TaskHandle> {
    const maxPages = Math.max(1, Math.floor(req.spec.limits.memoryBytes / PAGE));
    // Compiling (cached per digest) and taking a workspace overlap: both are on the start
    // path. Both are waited for even when one fails, so destroy never races a mount in flight.
    const [compiled, mounted] = await Promise.allSettled([
      this.compile(req.image.digest, imageModule(req.image), maxPages),
      this.workspaces.take(this.dir(req.sandboxId), req.spec.limits.workspaceBytes),
    ]);
    if (compiled.status === 'rejected') throw compiled.reason;
    if (mounted.status === 'rejected') throw mounted.reason;
    const workspace = mounted.value;
    const module = compiled.value;
    await mkdir(path.dirname(req.logPath), { recursive: true });
    const env: Record<string, string> = {
      CI: 'true',
      BOXCAR: 'true',
      BOXCAR_JOB_ID: req.jobId,
      BOXCAR_JOB_NAME: req.spec.name,
      ...req.spec.env,
      ...req.secrets,
    };
    const name = path.basename(req.image.ref);
    this.tasks.set(req.sandboxId, { module, args: [name, ...req.spec.command], env, workspace });
    return newHandle({
      runtime: this.name,
      jobId: req.jobId,
      sandboxId: req.sandboxId,
      logPath: req.logPath,
    });
  }

  private task(handle: TaskHandle): Task {
    const t = this.tasks.get(handle.sandboxId);
    if (!t) throw new Error(`wasm: no instance for sandbox ${handle.sandboxId} in this process`);
    return t;
  }

  async start(handle: TaskHandle): Promise<void> {
    const t = this.task(handle);
    t.outputFd = openSync(handle.logPath, 'a');
    t.running = this.pool.run({
      module: t.module,
      args: t.args,
      env: t.env,
      preopens: { '/workspace': t.workspace },
      outputFd: t.outputFd,
    });
    t.running.done.then(
      (exit) => (t.exit = exit),
      (err: unknown) => this.opts.logger.error({ err, sandboxId: handle.sandboxId }, 'wasm worker failed'),
    );
    await t.running.started;
  }

  async wait(handle: TaskHandle): Promise<ExitStatus> {
    const t = this.task(handle);
    if (!t.running) throw new Error('wasm: wait before start');
    const exit = await t.running.done;
    t.exit = exit;
    if (t.outputFd !== undefined) {
      if (exit.trap) writeSync(t.outputFd, `wasm trap: ${exit.trap}\n`);
      closeSync(t.outputFd);
      t.outputFd = undefined;
    }
    // V8 failing to reserve the instance's memory is the limit; an out-of-bounds access is a bug in the module.
    const limitHit = /out of memory|Cannot allocate/i.test(exit.trap ?? '');
    return { exitCode: exit.exitCode, oomKilled: limitHit };
  }

  async stop(handle: TaskHandle, _signal: StopSignal): Promise<void> {
    this.tasks.get(handle.sandboxId)?.running?.kill(); // a thread cannot be asked nicely: TERM is KILL
  }

  async stats(handle: TaskHandle): Promise<TaskStats> {
    const exit = this.tasks.get(handle.sandboxId)?.exit;
    return {
      memoryBytes: exit?.memoryBytes ?? 0,
      peakMemoryBytes: exit?.memoryBytes ?? 0,
      cpuUsageNs: exit?.runNs ?? 0,
      pids: 0,
    };
  }

  async destroy(handle: TaskHandle): Promise<void> {
    const t = this.tasks.get(handle.sandboxId);
    if (t?.running && !t.exit) t.running.kill();
    if (t?.outputFd !== undefined) closeSync(t.outputFd);
    this.tasks.delete(handle.sandboxId);
    await this.workspaces.remove(this.dir(handle.sandboxId));
    await rm(handle.logPath, { force: true });
  }

  /** A thread, V8's wasm engine and an empty workspace ready before the job is accepted. */
  async warm(): Promise<void> {
    await Promise.all([
      this.pool.warm(1),
      this.workspaces.fill(1),
      WebAssembly.compile(Uint8Array.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00])),
    ]);
  }

  /** Stops the idle threads and unmounts the spare workspaces. */
  async close(): Promise<void> {
    await Promise.all([this.pool.close(), this.workspaces.close()]);
  }

  async recover(_handle: TaskHandle): Promise<Recovered> {
    return { state: 'gone', reason: 'wasm jobs run inside the boxcar process, which has restarted' };
  }

  output(handle: TaskHandle, opts: OutputOptions): AsyncIterable<OutputChunk> {
    return followFile(handle.logPath, rawDecoder, {
      follow: opts.follow,
      signal: opts.signal,
      ended: opts.ended,
      isDone: async () =>
        this.tasks.get(handle.sandboxId)?.exit !== undefined || !this.tasks.has(handle.sandboxId),
    });
  }
}
