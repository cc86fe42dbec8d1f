import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { ResolvedImage } from '../../images/image.js';
import type { JobLimits } from '../../jobs/spec.js';
import { digestHex } from '../../lib/digest.js';
import { sleep } from '../../lib/exec.js';
import { processAlive, processFootprint } from '../../lib/proc.js';
import type { Logger } from '../../observability/logger.js';
import type { AgentChannel } from './agent-channel.js';
import { createJobDisk, imageDisk, vmFileBytes } from './disk.js';
import type { VmLauncher } from './launcher.js';
import { IdlePool } from '../shared/idle-pool.js';
import { encodeRunRequest } from './protocol.js';
import { runRequest } from './run-request.js';
import type { VmHost } from './vm-host.js';
import { endVm } from './vmm-process.js';
import { vmFiles, type VmLaunch, type VmShape } from './vmm.js';

export interface PooledVm {
  id: string;
  launch: VmLaunch;
  pid: number;
  channel: AgentChannel;
}

export interface WarmPoolOptions {
  size: number;
  sandboxes: string;
  vmDir: string;
  /** What the guest keeps beyond a job's memory limit. */
  guestOverheadMiB: number;
  /** Limits of the warming run (the pool's VMs are of the default shape's kind). */
  limits: JobLimits;
  outputCapBytes: number;
  logger: Logger;
}

const START_TIMEOUT_MS = 30_000;

/**
 * The microVM warm pool (config `microvm.warm_pool`): idle VMs per VM shape and image, each
 * restored, warmed by a job's start run short of its exec (so TCG has translated that path),
 * and ballooned down to what an idle guest needs until a job takes it over. Pooled VMs of a
 * Boxcar that died are swept by the next.
 */
export class WarmPool {
  private readonly pool: IdlePool<PooledVm>;
  /** What each pool key stands for: the VM shape and the image its disk holds. */
  private readonly keys = new Map<string, { shape: VmShape; image: ResolvedImage }>();

  constructor(
    private readonly opts: WarmPoolOptions,
    private readonly host: VmHost,
    private readonly launcher: VmLauncher,
  ) {
    this.pool = new IdlePool(
      opts.size,
      (key) => this.create(key),
      (vm) => this.dispose(vm),
      opts.logger,
    );
  }

  get enabled(): boolean {
    return this.pool.enabled;
  }

  key(shape: VmShape, image: ResolvedImage): string {
    const key = `m${shape.memoryMiB}-c${shape.vcpus}-${digestHex(image.digest).slice(0, 16)}`;
    this.keys.set(key, { shape, image });
    return key;
  }

  /** An idle VM of this key, if one waits; `refill(key)` once its job has started. */
  take(key: string): PooledVm | undefined {
    return this.pool.take(key);
  }

  refill(key: string): void {
    this.pool.refill(key);
  }

  fill(key: string): Promise<void> {
    return this.pool.fill(key);
  }

  /** Restores a VM for the pool, runs a job's start in it short of the exec, and balloons it down. */
  private async create(key: string): Promise<PooledVm> {
    const what = this.keys.get(key);
    if (!what) throw new Error(`unknown VM pool key ${key}`);
    const { vmm, guest } = await this.host.ready();
    const id = `pool-${process.pid}-${randomUUID()}`;
    const files = vmFiles(path.join(this.opts.sandboxes, id));
    await mkdir(files.dir, { recursive: true });
    try {
      const disk = await imageDisk(this.opts.vmDir, what.image);
      // Its job's workspace, if it has one, is made in its workspace disk when it is taken.
      const fileBytes = vmFileBytes(this.opts.limits, this.opts.outputCapBytes, false);
      await createJobDisk(vmm.diskFormat, files.disk, disk, fileBytes);
      const confinement = await this.launcher.confine(
        vmm,
        { files, guest, shape: what.shape },
        { readable: [disk], fileBytes },
      );
      const launch: VmLaunch = { shape: what.shape, files, guest, confinement };
      const vm = await this.launcher.restore(vmm, launch);
      if (!vm) throw new Error('the snapshot did not restore');
      const pooled: PooledVm = { id, launch, ...vm };
      try {
        const limits = {
          ...this.opts.limits,
          memoryBytes: (what.shape.memoryMiB - this.opts.guestOverheadMiB) * 2 ** 20,
        };
        await vm.channel.warm(
          encodeRunRequest(runRequest('warm', limits, [], [], '', this.opts.outputCapBytes)),
          START_TIMEOUT_MS,
        );
        const idleMiB = this.opts.guestOverheadMiB + 32;
        await vmm.setBalloon(launch, idleMiB);
        // Idle means settled: a balloon still inflating would compete with the next job's start.
        const target = (idleMiB + 8) * 2 ** 20;
        for (let i = 0; i < 75 && (await vmm.balloonStats(launch)).actualBytes > target; i++)
          await sleep(200);
      } catch (err) {
        await this.dispose(pooled);
        throw err;
      }
      return pooled;
    } catch (err) {
      await endVm(files);
      await rm(files.dir, { recursive: true, force: true });
      throw err;
    }
  }

  private async dispose(vm: PooledVm): Promise<void> {
    vm.channel.close();
    await endVm(vm.launch.files, vm.pid);
    await rm(vm.launch.files.dir, { recursive: true, force: true });
  }

  /** Pooled VMs of Boxcar processes that died: their VMMs and directories. */
  async sweep(): Promise<void> {
    const dirs = existsSync(this.opts.sandboxes) ? await readdir(this.opts.sandboxes) : [];
    for (const name of dirs) {
      const owner = /^pool-(\d+)-/.exec(name)?.[1];
      if (!owner || Number(owner) === process.pid || processAlive(Number(owner))) continue;
      const f = vmFiles(path.join(this.opts.sandboxes, name));
      await endVm(f);
      await rm(f.dir, { recursive: true, force: true });
    }
  }

  /** Each idle VM's host memory and what its balloon holds back. */
  async status(): Promise<Record<string, unknown>> {
    const entries = this.pool.entries();
    const vmm = entries.length ? (await this.host.ready()).vmm : undefined; // no VM yet: nothing to ask
    const idle = await Promise.all(
      entries.map(async ({ key, member: vm }) => ({
        key,
        pid: vm.pid,
        guestMiB: vm.launch.shape.memoryMiB,
        // The VMM's RSS holds the guest's memory: all an idle VM costs the host.
        memoryBytes: (await processFootprint(vm.pid))?.rssBytes ?? 0,
        balloon: await vmm?.balloonStats(vm.launch),
      })),
    );
    return { size: this.opts.size, idle };
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
