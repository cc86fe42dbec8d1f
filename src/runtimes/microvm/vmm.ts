import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { AgentChannel } from './agent-channel.js';
import type { GuestImage } from './guest/guest.js';
import { ifExists } from '../../lib/errors.js';
import { jailedCommand, type ClaimedJail, type JailFiles, type JailLimits } from './vmm-jail.js';

export interface VmShape {
  memoryMiB: number;
  vcpus: number;
}

export interface VmFiles {
  dir: string;
  /** The VMM's control socket (QMP, or Firecracker's API). */
  api: string;
  /** The agent's control port, served by the VMM as a Unix socket. */
  ctl: string;
  /** The agent's output port: frames the VMM appends to this file (the job's log). */
  out: string;
  /** The guest's serial console and the VMM's own messages. */
  console: string;
  disk: string;
  /** The VM's second disk: the job's workspace (empty unless the job has files; see workspace-disk.ts). */
  workspace: string;
  pidFile: string;
}

/** A VM's files in `dir`; its output goes to `out` (a job's log, or a file of its own). */
export function vmFiles(dir: string, out = path.join(dir, 'out')): VmFiles {
  return {
    dir,
    api: path.join(dir, 'api.sock'),
    ctl: path.join(dir, 'ctl.sock'),
    out,
    console: path.join(dir, 'console.log'),
    disk: path.join(dir, 'disk.qcow2'),
    workspace: workspaceDiskBeside(path.join(dir, 'disk.qcow2')),
    pidFile: path.join(dir, 'vmm.pid'),
  };
}

/** Every VM's workspace disk lies beside its root disk (`createJobDisk` makes both). */
export const workspaceDiskBeside = (disk: string) => path.join(path.dirname(disk), 'workspace.img');

/** A NIC on a tap in the job's network namespace (the VMM runs in that namespace). */
export interface VmNetwork {
  tap: string;
  mac: string;
  netnsPath: string;
  /** The seed's rate limiter: `sizeBytes` per `refillMs`, each way. */
  rate: { sizeBytes: number; refillMs: number };
}

export interface VmLaunch {
  shape: VmShape;
  files: VmFiles;
  guest: GuestImage;
  network?: VmNetwork;
  /** How the VMM is jailed; absent only for the host's own KVM probe (no job code in it). */
  confinement?: VmConfinement;
}

export interface VmConfinement {
  /** The built vmm-jail.c. */
  jailer: string;
  jail: ClaimedJail;
  files: JailFiles;
  limits: JailLimits;
  /** /dev/kvm's group, under KVM. */
  kvmGid?: number;
}

/**
 * What the microVM driver needs of a virtual machine monitor. Two implement it: QEMU's
 * `microvm` machine (runs everywhere, KVM or TCG) and Firecracker (KVM only, where its binary
 * is installed). The guest, its agent and the job's disk are the same on both.
 */
export interface Vmm {
  readonly name: 'qemu' | 'firecracker';
  /**
   * The host relays the agent's output frames into the job's log (Firecracker has no
   * file-backed serial port): a re-attached job needs its channel open to keep its output.
   */
  readonly relaysOutput: boolean;
  /** `kvm` or `tcg`. */
  readonly accel: string;
  /** How a job's disk is layered over its image: a qcow2 overlay, or a sparse raw copy. */
  readonly diskFormat: 'qcow2' | 'raw';
  /** Names the VMM build: a snapshot taken by another version is not restored. */
  version(): Promise<string>;
  /** Cold boot; resolves with the VMM's pid once it runs (the caller waits for the agent). */
  boot(launch: VmLaunch): Promise<number>;
  /** Pauses the running VM, writes its state into `snapshotDir`, and ends it. */
  snapshot(launch: VmLaunch, snapshotDir: string): Promise<void>;
  /**
   * Starts a VM from `snapshotDir` with this launch's disk and channels, and calls `connect`
   * to reach its agent: QEMU before the guest runs again (it wakes with a host attached),
   * Firecracker after (it resets vsock connections on restore). Resolves with the VMM's pid.
   */
  restore(launch: VmLaunch, snapshotDir: string, connect: () => Promise<void>): Promise<number>;
  /** The agent's control channel: a virtio-serial socket under QEMU, vsock under Firecracker. */
  connectAgent(files: VmFiles, timeoutMs?: number): Promise<AgentChannel>;
  /** Sets the balloon so the guest keeps `guestMiB`. */
  setBalloon(launch: VmLaunch, guestMiB: number): Promise<void>;
  balloonStats(launch: VmLaunch): Promise<BalloonStats>;
}

export interface BalloonStats {
  /** Memory the guest has now (its size minus the balloon). */
  actualBytes: number;
  freeBytes?: number;
  totalBytes?: number;
}

/** A restore the VMM refused or could not finish: the snapshot is discarded and the VM boots cold. */
export class RestoreFailed extends Error {}

/** The host CPU's TSC in kHz: given to the guest, it skips calibration (and a rare hang under TCG). */
function cpuKHz(): number {
  const mhz = /cpu MHz\s*:\s*([\d.]+)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1];
  return Math.round(Number(mhz ?? 2000) * 1000);
}

export function kernelCommandLine(): string {
  const khz = cpuKHz();
  return [
    'console=ttyS0',
    'quiet',
    'panic=-1', // a guest panic ends the VM at once (-no-reboot)
    'reboot=t',
    `tsc_early_khz=${khz}`,
    'tsc=reliable',
    `lpj=${khz * 4}`,
    'cryptomgr.notests',
  ].join(' ');
}

/**
 * The VMM's command: jailed (see vmm-jail.ts), inside the job's network namespace when it has a
 * NIC (its tap lives there).
 */
export function vmmCommand(l: VmLaunch, binary: string, args: string[]): [string, string[]] {
  const c = l.confinement;
  if (c)
    return jailedCommand(
      c.jailer,
      c.jail,
      { files: c.files, limits: c.limits, netnsPath: l.network?.netnsPath, kvmGid: c.kvmGid },
      binary,
      args,
    );
  return l.network ? ['nsenter', [`--net=${l.network.netnsPath}`, binary, ...args]] : [binary, args];
}

/** The last lines QEMU and the guest console wrote: why a VM did not come up. */
export async function vmDiagnostics(files: VmFiles): Promise<string> {
  const tail = async (file: string) =>
    ((await ifExists(readFile(file, 'utf8'))) ?? '').trim().split('\n').slice(-3).join(' | ');
  const parts = [await tail(vmmLog(files)), await tail(files.console)].filter(Boolean);
  return parts.length ? ` (${parts.join(' | ')})` : '';
}

/** The VMM's own messages. */
export const vmmLog = (files: VmFiles) => path.join(files.dir, 'vmm.log');
