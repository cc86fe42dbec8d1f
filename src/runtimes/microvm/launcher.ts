import path from 'node:path';
import { statSync } from 'node:fs';
import { chmod, rm, writeFile } from 'node:fs/promises';
import { JobSpec, type JobNetwork } from '../../jobs/spec.js';
import { errorMessage } from '../../lib/errors.js';
import type { Logger } from '../../observability/logger.js';
import {
  bridgeForVm,
  recordSlotIn,
  setupNetwork,
  teardownNetwork,
  VM_TAP,
  type NetworkLease,
} from '../shared/network.js';
import type { AgentChannel } from './agent-channel.js';
import { createJobDisk } from './disk.js';
import type { GuestImage } from './guest/guest.js';
import { Snapshots } from './snapshots.js';
import { cleanVmFiles, killVmm } from './vmm-process.js';
import {
  claimJail,
  grantFiles,
  JAILER_SOURCE,
  releaseJail,
  type JailFiles,
  type JailLimits,
} from './vmm-jail.js';
import { builtCProgram } from '../../lib/c-program.js';
import { chownTree } from '../../lib/fs-util.js';
import {
  RestoreFailed,
  vmDiagnostics,
  vmFiles,
  type Vmm,
  type VmLaunch,
  type VmNetwork,
  type VmConfinement,
  type VmShape,
} from './vmm.js';

export interface RunningVm {
  pid: number;
  channel: AgentChannel;
}

/** Every guest NIC has this address: each sits alone on its job's bridge. */
const VM_MAC = '02:bc:00:00:00:01';
const DEFAULT_NETWORK = JobSpec.parse({ command: ['true'], network: true }).network;
const BOOT_TIMEOUT_MS = 30_000;
/** The VMM's own memory above its guest's (code, TCG translation cache, device state), measured ≈ 60-90 MiB. */
export const VMM_OVERHEAD_BYTES = 128 * 2 ** 20;
/** QEMU's threads: main loop, RCU, I/O pool (capped by `thread-pool-max`), and one per vCPU. */
const VMM_PIDS_BASE = 32;

/**
 * Bringing a VM up until its agent answers: restored from the snapshot of its shape (built
 * first, from a cold boot saved at the agent's hello, when missing or unusable), or booted cold.
 * A snapshot the VMM will not restore is discarded: that VM boots cold and the next rebuilds it.
 */
export class VmLauncher {
  readonly snapshots: Snapshots;

  private jailerBuild: Promise<string> | undefined;

  constructor(
    snapshotsDir: string,
    private readonly logger: Logger,
    /** Where Boxcar's own helper programs are built. */
    private readonly binDir: string,
  ) {
    this.snapshots = new Snapshots(snapshotsDir, logger);
  }

  /** The built vmm-jail.c, which confines VMMs and the workspace's write-back. */
  jailer(): Promise<string> {
    this.jailerBuild ??= builtCProgram(JAILER_SOURCE, this.binDir, 'the microVM runtime');
    this.jailerBuild.catch(() => (this.jailerBuild = undefined)); // a failure is not cached
    return this.jailerBuild;
  }

  /**
   * Claims the VM's jail (its own uid and cgroup, see vmm-jail.ts) and hands it its files: the
   * directory, the disks and the log are its own, the guest and `readable` are read-only. Its
   * memory limit is the guest's size plus the VMM's own measured overhead. `endVm` gives the
   * jail back once the VMM is gone.
   */
  async confine(
    vmm: Vmm,
    l: Pick<VmLaunch, 'files' | 'guest' | 'shape'>,
    opts: { readable?: string[]; fileBytes?: number } = {},
  ): Promise<VmConfinement> {
    const f = l.files;
    const limits: JailLimits = {
      memoryBytes: l.shape.memoryMiB * 2 ** 20 + VMM_OVERHEAD_BYTES,
      pids: VMM_PIDS_BASE + l.shape.vcpus,
      fileBytes: opts.fileBytes,
    };
    const outside = !f.out.startsWith(`${f.dir}/`);
    if (outside) await writeFile(f.out, '', { flag: 'a' }); // the VMM could not create it there
    const files: JailFiles = {
      dir: f.dir,
      owned: [f.disk, f.workspace, ...(outside ? [f.out] : [])],
      readable: [l.guest.kernel, l.guest.initrd, ...(opts.readable ?? [])],
    };
    const jailer = await this.jailer();
    const jail = await claimJail(f.dir, limits);
    await grantFiles(jail, files);
    const kvmGid = vmm.accel === 'kvm' ? statSync('/dev/kvm').gid : undefined;
    return { jailer, jail, files, limits, kvmGid };
  }

  /**
   * The job's own namespace, veth and egress rules as a container gets, bridged to a tap that
   * only the VM's jailed VMM (`tapOwner`) may open.
   */
  async network(
    id: string,
    spec: JobNetwork,
    slotFile: string,
    tapOwner: number,
  ): Promise<{ vm: VmNetwork; lease: NetworkLease }> {
    const lease = await setupNetwork(id, spec, recordSlotIn(slotFile), this.logger);
    await bridgeForVm(lease, tapOwner);
    return { lease, vm: { tap: VM_TAP, mac: VM_MAC, netnsPath: lease.netnsPath, rate: spec.egress } };
  }

  async coldBoot(vmm: Vmm, launch: VmLaunch): Promise<RunningVm> {
    const pid = await vmm.boot(launch);
    const channel = await vmm.connectAgent(launch.files);
    try {
      await channel.hello(BOOT_TIMEOUT_MS);
    } catch (err) {
      channel.close();
      throw new Error(`${errorMessage(err)}${await vmDiagnostics(launch.files)}`, { cause: err });
    }
    return { pid, channel };
  }

  /** From the snapshot of this VM's shape; undefined if that snapshot would not restore. */
  async restore(vmm: Vmm, launch: VmLaunch): Promise<RunningVm | undefined> {
    const snapshot = await this.snapshotFor(vmm, launch.guest, launch.shape, launch.network !== undefined);
    let channel: AgentChannel | undefined;
    try {
      const pid = await vmm.restore(launch, snapshot, async () => {
        channel = await vmm.connectAgent(launch.files);
      });
      if (!channel) throw new Error('restored without a channel to the agent');
      return { pid, channel };
    } catch (err) {
      (channel as AgentChannel | undefined)?.close();
      if (!(err instanceof RestoreFailed)) throw err;
      await this.snapshots.discard(snapshot, err.message);
      await cleanVmFiles(launch.files);
      return undefined;
    }
  }

  /** The snapshot directory of this VM shape, built first when missing or unusable. */
  snapshotFor(vmm: Vmm, guest: GuestImage, shape: VmShape, network: boolean): Promise<string> {
    return this.snapshots.ensure({ guest, vmm, shape, network }, (dir) =>
      this.takeSnapshot(vmm, guest, shape, network, dir),
    );
  }

  /** Boots a VM of this shape on an empty disk and saves it at the agent's hello. */
  private async takeSnapshot(
    vmm: Vmm,
    guest: GuestImage,
    shape: VmShape,
    network: boolean,
    dir: string,
  ): Promise<void> {
    const files = vmFiles(dir);
    await createJobDisk(vmm.diskFormat, files.disk);
    let net: Awaited<ReturnType<VmLauncher['network']>> | undefined;
    try {
      const confinement = await this.confine(vmm, { files, guest, shape });
      // A VM with a NIC is snapshotted with one: it needs a tap of its own while it boots.
      if (network)
        net = await this.network(
          path.basename(dir),
          DEFAULT_NETWORK,
          path.join(dir, 'network.json'),
          confinement.jail.uid,
        );
      const launch: VmLaunch = { shape, guest, files, network: net?.vm, confinement };
      const { pid, channel } = await this.coldBoot(vmm, launch);
      try {
        await vmm.snapshot(launch, dir); // the channel stays connected: restored guests see a host there
      } finally {
        channel.close();
        await killVmm(pid);
      }
    } finally {
      if (net) await teardownNetwork(net.lease);
      await releaseJail(dir);
      await cleanVmFiles(files);
      for (const disk of [files.disk, files.workspace]) await rm(disk, { force: true });
      // The snapshot is the node's from now on: no VMM uid may write it.
      await chownTree(dir, 0, 0);
      await chmod(dir, 0o755);
    }
  }
}
