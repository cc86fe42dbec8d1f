import type { GuestImage } from './guest/guest.js';

/**
 * What the microVM driver needs of a virtual machine monitor. Two implement it: QEMU's
 * `microvm` machine (runs everywhere, KVM or TCG) and Firecracker (KVM only, where its binary
 * is installed). The guest, its agent and the job's disk are the same on both.
 */
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
  pidFile: string;
}

export interface VmNetwork {
  tap: string;
  mac: string;
}

export interface VmLaunch {
  shape: VmShape;
  files: VmFiles;
  guest: GuestImage;
  network?: VmNetwork;
}

export interface Vmm {
  readonly name: 'qemu' | 'firecracker';
  /** `kvm` or `tcg`. */
  readonly accel: string;
  /** Names the VMM build: a snapshot taken by another version is not restored. */
  version(): Promise<string>;
  /** Cold boot; resolves with the VMM's pid once it runs (the caller waits for the agent). */
  boot(launch: VmLaunch): Promise<number>;
  /** Pauses the running VM, writes its state into `snapshotDir`, and ends it. */
  snapshot(launch: VmLaunch, snapshotDir: string): Promise<void>;
  /**
   * Starts a VM from `snapshotDir` with this launch's disk and channels; `beforeResume` runs
   * once the state is loaded and before the guest runs again. Resolves with the VMM's pid.
   */
  restore(launch: VmLaunch, snapshotDir: string, beforeResume: () => Promise<void>): Promise<number>;
  /** Sets the balloon so the guest keeps `targetMiB`. */
  setBalloon(files: VmFiles, targetMiB: number): Promise<void>;
  balloonStats(files: VmFiles): Promise<BalloonStats>;
}

export interface BalloonStats {
  /** Memory the guest has now (its size minus the balloon). */
  actualBytes: number;
  freeBytes?: number;
  totalBytes?: number;
}
