import path from 'node:path';
import { rm } from 'node:fs/promises';
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
  RestoreFailed,
  vmDiagnostics,
  vmFiles,
  type Vmm,
  type VmLaunch,
  type VmNetwork,
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

/**
 * Bringing a VM up until its agent answers: restored from the snapshot of its shape (built
 * first, from a cold boot saved at the agent's hello, when missing or unusable), or booted cold.
 * A snapshot the VMM will not restore is discarded: that VM boots cold and the next rebuilds it.
 */
export class VmLauncher {
  readonly snapshots: Snapshots;

  constructor(snapshotsDir: string, logger: Logger) {
    this.snapshots = new Snapshots(snapshotsDir, logger);
  }

  /** The job's own namespace, veth and egress rules as a container gets, bridged to a tap. */
  async network(
    id: string,
    spec: JobNetwork,
    slotFile: string,
  ): Promise<{ vm: VmNetwork; lease: NetworkLease }> {
    const lease = await setupNetwork(id, spec, recordSlotIn(slotFile));
    await bridgeForVm(lease);
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
    // A VM with a NIC is snapshotted with one: it needs a tap of its own while it boots.
    const net = network
      ? await this.network(path.basename(dir), DEFAULT_NETWORK, path.join(dir, 'network.json'))
      : undefined;
    try {
      const launch: VmLaunch = { shape, guest, files, network: net?.vm };
      const { pid, channel } = await this.coldBoot(vmm, launch);
      try {
        await vmm.snapshot(launch, dir); // the channel stays connected: restored guests see a host there
      } finally {
        channel.close();
        await killVmm(pid);
      }
    } finally {
      if (net) await teardownNetwork(net.lease);
      await cleanVmFiles(files);
      await rm(files.disk, { force: true });
    }
  }
}
