import { existsSync } from 'node:fs';
import { appendFile, link, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ImageStore } from '../../images/image-store.js';
import { resolveImage } from '../../images/resolve.js';
import { newHandle, type TaskHandle, type VmAttributes } from '../../jobs/handle.js';
import { JobSpec, type JobLimits } from '../../jobs/spec.js';
import { followFile, type OutputChunk } from '../../lib/follow.js';
import { processAlive, processFootprint } from '../../lib/proc.js';
import { ifExists } from '../../lib/errors.js';
import { readFileNoFollow, writeFileNoFollow } from '../../lib/fs-util.js';
import type { StatePaths } from '../../lib/state-paths.js';
import type { Logger } from '../../observability/logger.js';
import {
  driverState,
  type Capabilities,
  type ExitStatus,
  type Fingerprint,
  type OutputOptions,
  type Recovered,
  type Runtime,
  type SandboxRequest,
  type StopSignal,
  type TaskStats,
} from '../runtime.js';
import { releaseRecordedNetwork } from '../shared/network.js';
import { createJobDisk, imageDisk, vmFileBytes } from './disk.js';
import { VmLauncher, VMM_OVERHEAD_BYTES } from './launcher.js';
import {
  encodeFrame,
  encodeRunRequest,
  FRAME,
  LogOverCap,
  vmLogDecoder,
  type GuestExit,
} from './protocol.js';
import { jobRunRequest } from './run-request.js';
import { seedWorkspaceDisk } from './workspace-disk.js';
import { emptyDirectory, returnWorkspace } from './workspace-return.js';
import { VmTask } from './task.js';
import { VmHost } from './vm-host.js';
import { endVm, killVmm, pidFromFile } from './vmm-process.js';
import { moveJail, recordedJail, releaseJail } from './vmm-jail.js';
import { vmDiagnostics, vmFiles, type VmFiles, type VmLaunch, type VmShape } from './vmm.js';
import { WarmPool, type PooledVm } from './warm-pool.js';

export interface MicrovmDriverOptions {
  paths: StatePaths;
  logger: Logger;
  /** Size cap of each job's log: the agent stops forwarding output past it. */
  logSizeMax?: number;
  /** Idle VMs kept ready per VM shape and image (config `microvm.warm_pool`). */
  warmPool?: number;
  /** Untrusted code may run on TCG (config `microvm.allow_tcg_for_untrusted`). */
  allowTcgForUntrusted?: boolean;
}

/** Guest memory beyond the job's limit: the guest kernel, page cache of its disk, the agent. */
export const GUEST_OVERHEAD_MIB = 96;
const DEFAULT_LIMITS = JobSpec.parse({ command: ['true'] }).limits;
const START_TIMEOUT_MS = 30_000;
/** How near its file size limit a VM's disk counts as full (qcow2 grows by clusters). */
const DISK_LIMIT_MARGIN = 2 * 2 ** 20;
/** The marker of a VM stopped at a limit (its log, its disk), with the reason. */
const LIMIT_STOP = 'stopped-at-limit';
/** A job whose VM was stopped at a limit exits as a process killed by SIGXFSZ would. */
const EXIT_LIMIT_STOP = 128 + 25;
const DEFAULT_LOG_SIZE_MAX = 16 * 1024 * 1024;

/**
 * What a microVM's handle keeps for this driver: the VMM's pid, the largest file it may write,
 * and where the job's workspace goes back to (a re-attached `wait` still returns it).
 */
const VmState = z.object({
  pid: z.number().int().positive(),
  fileBytes: z.number().int().positive().optional(),
  workspace: z.object({ dir: z.string(), bytes: z.number().int().positive() }).optional(),
});

export function vmShape(limits: JobLimits): VmShape {
  return {
    memoryMiB: Math.ceil(limits.memoryBytes / 2 ** 20) + GUEST_OVERHEAD_MIB,
    vcpus: Math.max(1, Math.ceil(limits.cpuMillis / 1000)),
  };
}

/**
 * Untrusted jobs in microVMs (the seed's `firecracker` runtime): each job gets its own guest
 * kernel, restored from a snapshot of a booted guest (or booted cold, or taken from the warm
 * pool), with its image as a copy-on-write disk. The VMM process outlives Boxcar and the job's
 * output and exit are frames written to the sandbox's log, so a restarted Boxcar finds every job
 * where it left it. This file holds the contract; bringing VMs up is `launcher.ts`, the warm
 * pool `warm-pool.ts`, the node's VMM and accelerator `vm-host.ts`.
 */
export class MicrovmDriver implements Runtime {
  readonly name = 'firecracker' as const;
  /** A job's memory is its VMM process's: the guest (its size) plus the VMM itself. */
  readonly capabilities: Capabilities = {
    sharedKernel: false,
    workload: 'image',
    memoryMeasure: 'vmm-process',
    memoryOverheadBytes: (limits) =>
      vmShape(limits).memoryMiB * 2 ** 20 - limits.memoryBytes + VMM_OVERHEAD_BYTES,
    gracefulStop: true,
    hostCgroup: false,
    network: true,
    survivesRestart: true,
    writableRoot: false,
    workspaceReturned: true,
  };
  private readonly host: VmHost;
  private readonly launcher: VmLauncher;
  private readonly pool: WarmPool;
  private readonly tasks = new Map<string, VmTask>();
  private readonly images: ImageStore;

  constructor(private readonly opts: MicrovmDriverOptions) {
    this.host = new VmHost(opts.paths, opts.logger, this.outputCap);
    this.launcher = new VmLauncher(
      path.join(opts.paths.vm, 'snapshots'),
      opts.logger,
      path.join(opts.paths.vm, 'bin'),
    );
    this.images = new ImageStore(opts.paths);
    this.pool = new WarmPool(
      {
        size: opts.warmPool ?? 0,
        sandboxes: opts.paths.sandboxes,
        vmDir: opts.paths.vm,
        guestOverheadMiB: GUEST_OVERHEAD_MIB,
        limits: DEFAULT_LIMITS,
        outputCapBytes: this.outputCap,
        logger: opts.logger,
      },
      this.host,
      this.launcher,
    );
  }

  private get outputCap(): number {
    return this.opts.logSizeMax ?? DEFAULT_LOG_SIZE_MAX;
  }

  files(sandboxId: string, logPath: string): VmFiles {
    return vmFiles(path.join(this.opts.paths.sandboxes, sandboxId), logPath);
  }

  /**
   * Root's own directory for the workspace's return (its jail's claim, and a marker once done):
   * beside the sandbox's, since the VMM may write in that one.
   */
  private returnDir(sandboxId: string): string {
    return path.join(this.opts.paths.sandboxes, `${sandboxId}.return`);
  }

  /** The job's network slot, written before the network exists (see setupNetwork). */
  private networkFile(sandboxId: string): string {
    return path.join(this.opts.paths.sandboxes, sandboxId, 'network.json');
  }

  private task(sandboxId: string): VmTask {
    let t = this.tasks.get(sandboxId);
    if (!t) {
      t = new VmTask();
      this.tasks.set(sandboxId, t);
    }
    return t;
  }

  fingerprint(): Promise<Fingerprint> {
    return this.host.fingerprint(this.name, this.opts.allowTcgForUntrusted ?? false);
  }

  async prepare(req: SandboxRequest): Promise<TaskHandle> {
    const f = this.files(req.sandboxId, req.logPath);
    await mkdir(path.dirname(req.logPath), { recursive: true });
    const { vmm, guest } = await this.host.ready();
    const shape = vmShape(req.spec.limits);
    const task = this.task(req.sandboxId);
    // A restore-from-snapshot job without network may take a pooled VM, jailed for the default
    // file size limit (its disks and log): only a job of that same limit.
    const fileBytes = vmFileBytes(req.spec.limits, this.outputCap, req.workspaceDir !== undefined);
    const poolable = fileBytes === vmFileBytes(DEFAULT_LIMITS, this.outputCap, false);
    if (this.pool.enabled && poolable && !req.spec.coldBoot && !req.spec.network.enabled) {
      task.refillKey = this.pool.key(shape, req.image);
      const pooled = this.pool.take(task.refillKey);
      if (pooled) return this.adopt(pooled, req, task, { vmm: vmm.name, accel: vmm.accel });
    }
    await mkdir(f.dir, { recursive: true });
    const disk = await imageDisk(this.opts.paths.vm, req.image);
    await createJobDisk(vmm.diskFormat, f.disk, disk, fileBytes);
    if (req.workspaceDir)
      await seedWorkspaceDisk(f.workspace, req.workspaceDir, req.spec.limits.workspaceBytes);
    const confinement = await this.launcher.confine(
      vmm,
      { files: f, guest, shape },
      { readable: [disk], fileBytes },
    );
    const net = req.spec.network.enabled
      ? await this.launcher.network(
          req.sandboxId,
          req.spec.network,
          this.networkFile(req.sandboxId),
          confinement.jail.uid,
        )
      : undefined;
    const launch: VmLaunch = { shape, files: f, guest, network: net?.vm, confinement };
    const t0 = Date.now();
    const restored = req.spec.coldBoot ? undefined : await this.launcher.restore(vmm, launch);
    const { pid, channel } = restored ?? (await this.launcher.coldBoot(vmm, launch));
    task.channel = channel;
    task.request = jobRunRequest(req, net?.lease, this.outputCap);
    return this.handle(
      req,
      pid,
      {
        vmm: vmm.name,
        accel: vmm.accel,
        restoredFromSnapshot: restored !== undefined,
        bootMs: Date.now() - t0,
      },
      confinement.limits.fileBytes,
    );
  }

  private handle(req: SandboxRequest, pid: number, vm: VmAttributes, fileBytes?: number): TaskHandle {
    return {
      ...newHandle({ runtime: this.name, jobId: req.jobId, sandboxId: req.sandboxId, logPath: req.logPath }),
      driverState: {
        pid,
        fileBytes,
        workspace: req.workspaceDir
          ? { dir: req.workspaceDir, bytes: req.spec.limits.workspaceBytes }
          : undefined,
      } satisfies z.output<typeof VmState>,
      attributes: { hostPid: pid, vm },
    };
  }

  /**
   * Takes over a pooled VM: its directory becomes the job's sandbox (the sockets move with it),
   * its output file becomes the sandbox's log (a hard link), its workspace disk gets the job's
   * files, and the balloon gives the guest its memory back once the job runs (deflating now
   * would slow its start).
   */
  private async adopt(
    vm: PooledVm,
    req: SandboxRequest,
    task: VmTask,
    vmm: Pick<VmAttributes, 'vmm' | 'accel'>,
  ): Promise<TaskHandle> {
    const t0 = Date.now();
    const f = this.files(req.sandboxId, req.logPath);
    await rename(vm.launch.files.dir, f.dir);
    const jail = vm.launch.confinement?.jail;
    if (jail) await moveJail(jail, f.dir);
    await link(path.join(f.dir, 'out'), req.logPath);
    if (req.workspaceDir)
      await seedWorkspaceDisk(f.workspace, req.workspaceDir, req.spec.limits.workspaceBytes);
    task.deflate = { ...vm.launch, files: f };
    task.channel = vm.channel;
    task.request = jobRunRequest(req, undefined, this.outputCap);
    return this.handle(
      req,
      vm.pid,
      { ...vmm, restoredFromSnapshot: true, bootMs: Date.now() - t0, fromWarmPool: true },
      vm.launch.confinement?.limits.fileBytes,
    );
  }

  /**
   * Before a job is accepted: the guest, the accelerator and the default shape's snapshot are
   * ready, and with a warm pool configured, idle VMs of the base image too.
   */
  async warm(): Promise<void> {
    const { vmm, guest } = await this.host.ready();
    await this.pool.sweep();
    const shape = vmShape(DEFAULT_LIMITS);
    await this.launcher.snapshotFor(vmm, guest, shape, false);
    if (this.pool.enabled)
      await this.pool.fill(this.pool.key(shape, await resolveImage(this.images, undefined)));
  }

  /** The agent's channel; after a restart, connected again. */
  private async channel(handle: TaskHandle) {
    const task = this.task(handle.sandboxId);
    task.channel ??= await (
      await this.host.ready()
    ).vmm.connectAgent(this.files(handle.sandboxId, handle.logPath), 2000);
    return task.channel;
  }

  async start(handle: TaskHandle): Promise<void> {
    const task = this.task(handle.sandboxId);
    const request = task.request;
    if (!request) throw new Error(`microvm: no run request for sandbox ${handle.sandboxId} in this process`);
    task.request = undefined;
    await writeFileNoFollow(path.join(this.files(handle.sandboxId, handle.logPath).dir, 'started'), '');
    try {
      // The clock is set as the job starts: a restored guest wakes at its snapshot's time.
      await (
        await this.channel(handle)
      ).run(encodeRunRequest({ ...request, nowMs: Date.now() }), START_TIMEOUT_MS);
    } finally {
      if (task.refillKey) this.pool.refill(task.refillKey);
      task.refillKey = undefined;
      const pooled = task.deflate;
      task.deflate = undefined;
      // Until this lands, deflate-on-oom gives the guest memory back page by page if it needs it.
      if (pooled)
        (await this.host.ready()).vmm
          .setBalloon(pooled, pooled.shape.memoryMiB)
          .catch((err: unknown) =>
            this.opts.logger.warn({ err }, 'giving a pooled VM its memory back failed'),
          );
    }
  }

  private vmmPid(handle: TaskHandle): number | undefined {
    // A handle saved before prepare returned: the VMM's pid file says where it is.
    const f = this.files(handle.sandboxId, handle.logPath);
    return driverState(handle, VmState)?.pid ?? pidFromFile(f.pidFile, recordedJail(f.dir));
  }

  private vmAlive(handle: TaskHandle): boolean {
    const pid = this.vmmPid(handle);
    return pid !== undefined && processAlive(pid);
  }

  /** The exit frame in the sandbox's log, reading it from the start (or following it with `follow`). */
  private async guestExit(handle: TaskHandle, follow: boolean): Promise<GuestExit | undefined> {
    let exit: GuestExit | undefined;
    const decoder = vmLogDecoder((e) => (exit = e), this.outputCap);
    const watching = followFile(handle.logPath, () => decoder, {
      follow,
      isDone: async () =>
        exit !== undefined || !this.vmAlive(handle) || (follow && (await this.diskAtLimit(handle))),
    });
    try {
      for await (const chunk of watching) void chunk; // only the exit matters here
    } catch (err) {
      if (!(err instanceof LogOverCap)) throw err;
      await this.stopAtLimit(handle, 'log', err.message);
    }
    return exit;
  }

  /**
   * Whether the VM's disk reached its file size limit: the kernel refuses it more (EFBIG), and
   * since a job's root is read-only in the guest, only a guest writing its device directly gets
   * there. Such a VM is stopped at once, with a marker saying why.
   */
  private async diskAtLimit(handle: TaskHandle): Promise<boolean> {
    const fileBytes = driverState(handle, VmState)?.fileBytes;
    const f = this.files(handle.sandboxId, handle.logPath);
    const disk = fileBytes ? await ifExists(stat(f.disk)) : undefined;
    if (!fileBytes || !disk || disk.size <= fileBytes - DISK_LIMIT_MARGIN) return false;
    await this.stopAtLimit(
      handle,
      'disk',
      `the VM wrote its disk up to the job's limit (${fileBytes} bytes, resources.rootfs)`,
    );
    return true;
  }

  /**
   * Stops a VM that went past a limit the host enforces (its log, its disk): the VMM is killed
   * and a marker records why, which `wait` turns into the job's exit (SIGXFSZ's) and a notice.
   */
  private async stopAtLimit(handle: TaskHandle, limit: 'log' | 'disk', why: string): Promise<void> {
    const f = this.files(handle.sandboxId, handle.logPath);
    await writeFileNoFollow(path.join(f.dir, LIMIT_STOP), JSON.stringify({ limit, why }));
    const pid = this.vmmPid(handle);
    if (pid !== undefined) await killVmm(pid);
  }

  async wait(handle: TaskHandle): Promise<ExitStatus> {
    // Where the host relays the output, a re-attached job needs its channel open again.
    if ((await this.host.ready()).vmm.relaysOutput && this.vmAlive(handle)) await this.channel(handle);
    const exit = await this.guestExit(handle, true);
    if (exit) {
      // The job's own figures inside the guest, beside the VMM's that the record keeps.
      this.opts.logger.info(
        { job_id: handle.jobId, guestPeakMemoryBytes: exit.peakMemoryBytes, guestCpuNs: exit.cpuUsageNs },
        'the guest reported the job’s exit',
      );
      await this.returnWorkspace(handle);
      return { exitCode: exit.exitCode, oomKilled: exit.oomKilled };
    }
    const f = this.files(handle.sandboxId, handle.logPath);
    if (existsSync(path.join(f.dir, 'killed'))) {
      await this.workspaceLost(handle, 'the VM was killed');
      return { exitCode: 128 + 9, oomKilled: false };
    }
    // The kernel may have ended the VMM itself (SIGXFSZ) before the host saw its disk full.
    await this.diskAtLimit(handle);
    const stopped = await readFileNoFollow(path.join(f.dir, LIMIT_STOP));
    if (stopped) {
      // The VMM is gone, so the host may write the job's log: the reason goes where its output is.
      const { why } = JSON.parse(stopped) as { why: string };
      await appendFile(handle.logPath, encodeFrame(FRAME.notice, `${why}: the VM was stopped`));
      await this.workspaceLost(handle, 'the VM was stopped');
      return { exitCode: EXIT_LIMIT_STOP, oomKilled: false };
    }
    throw new Error(`the VM ended without reporting the job's exit${await vmDiagnostics(f)}`);
  }

  /** What the job left in its workspace disk, into its workspace directory (once, however often `wait` runs). */
  private async returnWorkspace(handle: TaskHandle): Promise<void> {
    const workspace = driverState(handle, VmState)?.workspace;
    if (!workspace) return;
    const dir = this.returnDir(handle.sandboxId);
    const done = path.join(dir, 'returned');
    if (existsSync(done)) return;
    await returnWorkspace({
      disk: this.files(handle.sandboxId, handle.logPath).workspace,
      workspaceDir: workspace.dir,
      workspaceBytes: workspace.bytes,
      claimDir: dir,
      jailer: await this.launcher.jailer(),
    });
    await writeFile(done, '');
  }

  /**
   * A VM that ended without the job's exit never settled its workspace disk: nothing of it
   * comes back, and the seeded files must not pass for what the job left. Its log says so.
   */
  private async workspaceLost(handle: TaskHandle, why: string): Promise<void> {
    const workspace = driverState(handle, VmState)?.workspace;
    if (!workspace) return;
    await emptyDirectory(workspace.dir);
    await appendFile(handle.logPath, encodeFrame(FRAME.notice, `${why}: its workspace was not returned`));
  }

  async stop(handle: TaskHandle, signal: StopSignal): Promise<void> {
    if (!this.vmAlive(handle)) return;
    if (signal === 'SIGTERM') {
      (await this.channel(handle)).signal(15);
      return;
    }
    // KILL ends the whole VM: nothing of the job can outlive it.
    await writeFileNoFollow(path.join(this.files(handle.sandboxId, handle.logPath).dir, 'killed'), '');
    const pid = this.vmmPid(handle);
    if (pid !== undefined) await killVmm(pid);
  }

  /** The VMM process's footprint on the host: what the VM really costs. */
  async stats(handle: TaskHandle): Promise<TaskStats> {
    const pid = this.vmmPid(handle);
    const proc = pid === undefined ? undefined : await processFootprint(pid);
    const task = this.task(handle.sandboxId);
    const now = proc ?? task.footprint ?? { rssBytes: 0, peakRssBytes: 0, cpuNs: 0 };
    if (proc) task.footprint = proc;
    return {
      memoryBytes: now.rssBytes,
      peakMemoryBytes: now.peakRssBytes,
      cpuUsageNs: now.cpuNs,
      pids: proc ? 1 : 0,
    };
  }

  async destroy(handle: TaskHandle): Promise<void> {
    this.tasks.get(handle.sandboxId)?.close();
    this.tasks.delete(handle.sandboxId);
    await endVm(this.files(handle.sandboxId, handle.logPath), this.vmmPid(handle));
    await releaseRecordedNetwork(this.networkFile(handle.sandboxId));
    await releaseJail(this.returnDir(handle.sandboxId)); // a write-back cut short by a crash
    await rm(this.returnDir(handle.sandboxId), { recursive: true, force: true });
    await rm(this.files(handle.sandboxId, handle.logPath).dir, { recursive: true, force: true });
    await rm(handle.logPath, { force: true });
  }

  async recover(handle: TaskHandle): Promise<Recovered> {
    const exit = await this.guestExit(handle, false);
    if (exit) return { state: 'exited', exit: { exitCode: exit.exitCode, oomKilled: exit.oomKilled } };
    if (!this.vmAlive(handle)) return { state: 'gone', reason: 'its VM is not running and reported no exit' };
    if (!existsSync(path.join(this.files(handle.sandboxId, handle.logPath).dir, 'started')))
      // The run request (with the job's secrets) lived only in the process that died.
      return { state: 'gone', reason: 'its VM was ready but the job was never sent to it' };
    return { state: 'running' };
  }

  output(handle: TaskHandle, opts: OutputOptions): AsyncIterable<OutputChunk> {
    let ended = false;
    const dir = this.files(handle.sandboxId, handle.logPath).dir;
    return followFile(handle.logPath, () => vmLogDecoder(() => (ended = true), this.outputCap, 'drop'), {
      follow: opts.follow,
      signal: opts.signal,
      ended: opts.ended,
      isDone: async () => ended || !this.vmAlive(handle) || !existsSync(dir),
    });
  }

  /** The warm pool: each idle VM's host memory and what its balloon holds back. */
  async status(): Promise<Record<string, unknown>> {
    return { warmPool: await this.pool.status() };
  }

  async close(): Promise<void> {
    await this.pool.close();
    for (const t of this.tasks.values()) t.close();
    this.tasks.clear();
  }
}
