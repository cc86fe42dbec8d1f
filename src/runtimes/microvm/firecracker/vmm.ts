import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { run, sleep, scrubbedEnv } from '../../../lib/exec.js';
import { processAlive } from '../../../lib/proc.js';
import { AgentChannel } from '../agent-channel.js';
import {
  vmmCommand,
  kernelCommandLine,
  type BalloonStats,
  type Vmm,
  type VmFiles,
  type VmLaunch,
} from '../vmm.js';
import { FirecrackerClient, type RateLimiter } from './api.js';
import { withContext } from '../../../lib/errors.js';

export const FIRECRACKER = 'firecracker';
export const AGENT_VSOCK_PORT = 1024;
const GUEST_CID = 3;
const API_TIMEOUT_MS = 10_000;

export interface FirecrackerOptions {
  binary?: string;
  /** The job log's size cap, which the host's relay of the agent's output keeps to. */
  outputCapBytes?: number;
}

export const vsockPath = (files: VmFiles) => path.join(files.dir, 'vsock.sock');

/**
 * Firecracker as the VMM, where its binary is installed and KVM works: one process per VM,
 * configured through its API socket. Firecracker has no virtio-serial, so the agent speaks
 * over vsock (port `AGENT_VSOCK_PORT`), and disks are raw (a sparse copy of the image's ext4
 * per job, not a qcow2 overlay). Snapshots are Firecracker's own (state + memory file).
 */
export class FirecrackerVmm implements Vmm {
  readonly name = 'firecracker' as const;
  readonly accel = 'kvm';
  readonly diskFormat = 'raw' as const;
  /** No virtio console: the agent's output comes over vsock and the host appends it to the log. */
  readonly relaysOutput = true;
  private readonly binary: string;

  constructor(private readonly opts: FirecrackerOptions = {}) {
    this.binary = opts.binary ?? FIRECRACKER;
  }

  async version(): Promise<string> {
    return (await run(this.binary, ['--version'])).stdout.split('\n')[0]?.trim() ?? '';
  }

  /** Starts the VMM process (it outlives us) and waits for its API. */
  private async launch(l: VmLaunch): Promise<{ pid: number; api: FirecrackerClient }> {
    const files = l.files;
    await rm(files.api, { force: true });
    const log = openSync(path.join(files.dir, 'vmm.log'), 'a');
    let child;
    try {
      const [cmd, args] = vmmCommand(l, this.binary, [
        '--api-sock',
        files.api,
        '--id',
        path.basename(files.dir),
      ]);
      child = spawn(cmd, args, { detached: true, stdio: ['ignore', log, log], env: scrubbedEnv() });
      child.unref();
    } finally {
      closeSync(log);
    }
    const pid = child.pid as number;
    const api = new FirecrackerClient(files.api, API_TIMEOUT_MS);
    for (let i = 0; ; i++) {
      try {
        await api.version();
        return { pid, api };
      } catch (err) {
        if (!processAlive(pid) || i > 1000) throw withContext('Firecracker did not open its API', err);
        await sleep(5);
      }
    }
  }

  connectAgent(files: VmFiles, timeoutMs?: number): Promise<AgentChannel> {
    return AgentChannel.connect(vsockPath(files), {
      timeoutMs,
      vsockPort: AGENT_VSOCK_PORT,
      outFile: files.out,
      outCapBytes: this.opts.outputCapBytes,
    });
  }

  async boot(l: VmLaunch): Promise<number> {
    const { pid, api } = await this.launch(l);
    await configureAndStart(api, l);
    return pid;
  }

  async snapshot(l: VmLaunch, snapshotDir: string): Promise<void> {
    await saveSnapshot(new FirecrackerClient(l.files.api, API_TIMEOUT_MS), snapshotDir);
  }

  async restore(l: VmLaunch, snapshotDir: string, connect: () => Promise<void>): Promise<number> {
    const { pid, api } = await this.launch(l);
    await loadSnapshot(api, l, snapshotDir);
    // Firecracker resets vsock connections on restore: the agent is reached once the guest runs.
    await connect();
    return pid;
  }

  async setBalloon(l: VmLaunch, guestMiB: number): Promise<void> {
    await new FirecrackerClient(l.files.api).patchBalloon(Math.max(0, l.shape.memoryMiB - guestMiB));
  }

  async balloonStats(l: VmLaunch): Promise<BalloonStats> {
    const s = await new FirecrackerClient(l.files.api).balloonStatistics();
    return {
      actualBytes: (l.shape.memoryMiB - s.actual_mib) * 2 ** 20,
      freeBytes: s.free_memory,
      totalBytes: s.total_memory,
    };
  }
}

/** A fresh VM: shape, kernel and initramfs, the job's disk, balloon, vsock, network; then start. */
export async function configureAndStart(api: FirecrackerClient, l: VmLaunch) {
  await api.putMachineConfig({ vcpu_count: l.shape.vcpus, mem_size_mib: l.shape.memoryMiB, smt: false });
  await api.putBootSource({
    kernel_image_path: l.guest.kernel,
    initrd_path: l.guest.initrd,
    boot_args: `${kernelCommandLine()} pci=off`,
  });
  await api.putDrive({
    drive_id: 'root',
    path_on_host: l.files.disk,
    is_root_device: false,
    is_read_only: false,
  });
  // After the root disk, so the guest names it vdb; Firecracker's default cache drops its flushes.
  await api.putDrive({
    drive_id: 'workspace',
    path_on_host: l.files.workspace,
    is_root_device: false,
    is_read_only: false,
  });
  await api.putBalloon({
    amount_mib: 0,
    deflate_on_oom: true,
    stats_polling_interval_s: 1,
    free_page_reporting: true,
  });
  await api.putVsock({ guest_cid: GUEST_CID, uds_path: vsockPath(l.files) });
  if (l.network) {
    // The seed's limiter is Firecracker's own token bucket: size bytes, refilled every refill_time ms.
    const limiter: RateLimiter = {
      bandwidth: { size: l.network.rate.sizeBytes, refill_time: l.network.rate.refillMs },
    };
    await api.putNetworkInterface({
      iface_id: 'eth0',
      host_dev_name: l.network.tap,
      guest_mac: l.network.mac,
      rx_rate_limiter: limiter,
      tx_rate_limiter: limiter,
    });
  }
  await api.start();
}

export async function saveSnapshot(api: FirecrackerClient, snapshotDir: string) {
  await api.pause();
  await api.createSnapshot({
    snapshot_type: 'Full',
    snapshot_path: path.join(snapshotDir, 'state'),
    mem_file_path: path.join(snapshotDir, 'memory'),
  });
}

/** Loads a snapshot paused, points its disks (and tap) at the job's own, and resumes it. */
export async function loadSnapshot(api: FirecrackerClient, l: VmLaunch, snapshotDir: string) {
  await api.loadSnapshot({
    snapshot_path: path.join(snapshotDir, 'state'),
    mem_backend: { backend_type: 'File', backend_path: path.join(snapshotDir, 'memory') },
    resume_vm: false,
    vsock_override: { uds_path: vsockPath(l.files) },
    ...(l.network ? { network_overrides: [{ iface_id: 'eth0', host_dev_name: l.network.tap }] } : {}),
  });
  await api.patchDrive({ drive_id: 'root', path_on_host: l.files.disk });
  await api.patchDrive({ drive_id: 'workspace', path_on_host: l.files.workspace });
  await api.resume();
}
