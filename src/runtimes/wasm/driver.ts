import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { StatePaths } from '../../lib/state-paths.js';
import { UserError, errorMessage } from '../../lib/errors.js';
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
import { toolVersion } from '../shared/fingerprint.js';
import { chownTree } from '../../lib/fs-util.js';
import { capResources, moduleLimits, nonWasiImports } from './module.js';
import { OutputBuffer } from './output-buffer.js';
import { WasmPool, type Running } from './pool.js';
import { prepareConfinement, WORKER_USER, type Confinement } from './launcher.js';
import { sweepWorkerCgroups, WORKER_OVERHEAD_BYTES, type JobExit } from './worker-process.js';
import { DEFAULT_RESOURCES } from '../../jobs/spec.js';

/** The most output a job keeps (as conmon's --log-size-max for containers): past it, it is stopped. */
const LOG_SIZE_MAX = 16 * 2 ** 20;

interface Task {
  running?: Running;
  key: string;
  bytes: Uint8Array<ArrayBuffer>;
  args: string[];
  env: Record<string, string>;
  memoryBytes: number;
  workspaceBytes: number;
  /** Boxcar's directory for the job's workspace, owned by the worker's user for the job. */
  workspaceDir?: string;
  affinity: string;
  output: OutputBuffer;
  exit?: JobExit;
}

/**
 * Lightweight jobs as WebAssembly (WASI preview1) in a warm pool of worker processes, each
 * confined by launcher.c: the unprivileged user boxcar-wasm, a cgroup of its own (memory:
 * the job's limit plus the worker's overhead; pids), its own mount namespace (Boxcar's state,
 * /proc, /sys, home directories hidden; its workspace a tmpfs of the job's workspace size that
 * nothing else sees), an empty network namespace, and a seccomp filter that refuses sockets,
 * signals to other processes, and the container jobs' list of escapes. The module sees only
 * its /workspace (a WASI preopen) and has no sockets (WASI preview1 has none); its linear
 * memory and tables are capped at the job's limit inside the module itself. A worker serves
 * one tenant and trust only. Modules are checked and capped once per digest and limit here,
 * compiled in the worker (never in this process) and kept there for the tenant's next jobs.
 */
export class WasmDriver implements Runtime {
  readonly name = 'wasm' as const;
  /** A worker process runs the module: its memory figures are the module's, a stop kills the worker. */
  readonly capabilities: Capabilities = {
    sharedKernel: false,
    workload: 'wasm-module',
    memoryMeasure: 'module',
    memoryOverheadBytes: () => WORKER_OVERHEAD_BYTES,
    gracefulStop: false,
    hostCgroup: false,
    network: false,
    survivesRestart: false,
    writableRoot: false,
    workspaceReturned: true,
  };
  private readonly pool: WasmPool;
  private readonly capped = new Map<string, Promise<Uint8Array<ArrayBuffer>>>();
  private readonly tasks = new Map<string, Task>();
  private confinement: Promise<Confinement> | undefined;

  constructor(private readonly opts: { paths: StatePaths; logger: Logger; workers?: number }) {
    this.pool = new WasmPool({
      size: opts.workers ?? os.availableParallelism(),
      defaultWorkspaceBytes: DEFAULT_RESOURCES.workspace,
      defaultMemoryBytes: DEFAULT_RESOURCES.memory,
      confinement: () => this.confine(),
      logger: opts.logger,
    });
  }

  /** The launcher, the workers' seccomp program and their user: made once, on first need. */
  private confine(): Promise<Confinement> {
    this.confinement ??= (async () => {
      await sweepWorkerCgroups();
      return prepareConfinement(this.opts.paths.root, path.join(this.opts.paths.root, 'wasm'));
    })();
    this.confinement.catch(() => (this.confinement = undefined)); // retried on the next need
    return this.confinement;
  }

  async fingerprint(): Promise<Fingerprint> {
    const details = {
      node: process.version,
      workers: String(os.availableParallelism()),
      wasi: 'preview1 (node:wasi)',
      user: WORKER_USER,
    };
    const unusable = (reason: string) => ({ runtime: this.name, usable: false, reason, details });
    const major = Number(process.versions.node.split('.')[0]);
    if (major < 20)
      return unusable(`node ${process.version} is too old for node:wasi preview1 jobs; use Node 20 or later`);
    if (process.getuid?.() !== 0)
      return unusable(
        'wasm jobs run in confined worker processes that only root can set up; run boxcar as root',
      );
    const gcc = await toolVersion('gcc', ['--version']);
    if (!gcc.ok)
      return unusable(`the wasm workers' launcher is built with gcc (${gcc.why}); install gcc and libc6-dev`);
    return {
      runtime: this.name,
      usable: true,
      reason: `WASI preview1 in up to ${details.workers} confined worker processes (user ${WORKER_USER}, own cgroup, namespaces and seccomp; node ${process.version})`,
      details,
    };
  }

  /** The module's bytes, checked and capped to the job's limits; cached per digest and limits. */
  private module(
    digest: string,
    file: string,
    memoryBytes: number,
  ): { key: string; bytes: Promise<Uint8Array<ArrayBuffer>> } {
    const limits = moduleLimits(memoryBytes);
    const key = `${digest}:${limits.maxPages}:${limits.maxTableElements}`;
    let bytes = this.capped.get(key);
    if (!bytes) {
      bytes = (async () => {
        const raw = await readFile(file);
        try {
          const bad = nonWasiImports(raw);
          if (bad.length)
            throw new UserError(
              `the module imports ${bad.join(', ')}: only WASI preview1 (wasi_snapshot_preview1) imports are allowed`,
            );
          return capResources(raw, limits);
        } catch (err) {
          if (err instanceof UserError) throw err;
          throw new UserError(`image ${digest}: ${errorMessage(err)}`); // the module's own fault
        }
      })();
      bytes.catch(() => this.capped.delete(key)); // a failure is not cached
      this.capped.set(key, bytes);
    }
    return { key, bytes };
  }

  async prepare(req: SandboxRequest): Promise<TaskHandle> {
    const { memoryBytes, workspaceBytes } = req.spec.limits;
    const { key, bytes } = this.module(req.image.digest, imageModule(req.image), memoryBytes);
    const env: Record<string, string> = {
      CI: 'true',
      BOXCAR: 'true',
      BOXCAR_JOB_ID: req.jobId,
      BOXCAR_JOB_NAME: req.spec.name,
      ...req.spec.env,
      ...req.secrets,
    };
    const name = path.basename(req.image.ref);
    this.tasks.set(req.sandboxId, {
      key,
      bytes: await bytes,
      args: [name, ...req.spec.command],
      env,
      memoryBytes,
      workspaceBytes,
      workspaceDir: req.workspaceDir,
      affinity: `${req.tenant}\0${req.trust}`,
      output: new OutputBuffer(LOG_SIZE_MAX),
    });
    // The module runs as the worker's user: its workspace's files (Boxcar's, root's) become its
    // own, links themselves and never what they point to.
    if (req.workspaceDir) {
      const { user } = await this.confine();
      await chownTree(req.workspaceDir, user.uid, user.gid);
    }
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
    const output = (chunk: Buffer) => {
      if (!t.output.push(chunk)) t.running?.kill();
    };
    t.running = this.pool.run({
      affinity: t.affinity,
      workspaceBytes: t.workspaceBytes,
      workspaceDir: t.workspaceDir,
      keepWorkspace: t.workspaceDir !== undefined,
      memoryBytes: t.memoryBytes,
      key: t.key,
      bytes: t.bytes,
      args: t.args,
      env: t.env,
      output,
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
    t.output.end(exit.trap ? `wasm trap: ${exit.trap}\n` : undefined);
    // The worker's cgroup, or V8 failing to reserve the instance's memory, is the limit; an out-of-bounds access is a bug in the module.
    const limitHit = exit.oomKilled || /out of memory|Cannot allocate/i.test(exit.trap ?? '');
    return { exitCode: exit.exitCode, oomKilled: limitHit };
  }

  async stop(handle: TaskHandle, _signal: StopSignal): Promise<void> {
    this.tasks.get(handle.sandboxId)?.running?.kill(); // WASI has no signals: TERM is KILL
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
    t?.output.end();
    this.tasks.delete(handle.sandboxId);
  }

  /** A confined worker process, its node:wasi loaded, ready before the job is accepted. */
  async warm(): Promise<void> {
    await this.pool.warm();
  }

  /** Ends the worker processes. */
  async close(): Promise<void> {
    await this.pool.close();
  }

  /** The worker processes, and which sandbox each runs now. */
  async status(): Promise<Record<string, unknown>> {
    const running = [...this.tasks].flatMap(([sandboxId, t]) => {
      const pid = t.exit ? undefined : t.running?.pid();
      return pid === undefined ? [] : [{ sandboxId, pid }];
    });
    return { workers: this.pool.workers(), running };
  }

  async recover(_handle: TaskHandle): Promise<Recovered> {
    return { state: 'gone', reason: 'wasm workers end with the boxcar process, which has restarted' };
  }

  output(handle: TaskHandle, opts: OutputOptions): AsyncIterable<OutputChunk> {
    return this.task(handle).output.read(opts);
  }
}
