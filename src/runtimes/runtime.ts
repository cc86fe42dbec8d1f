import type { z } from 'zod';
import type { TaskHandle } from '../jobs/handle.js';
import type { JobLimits, JobSpec, RuntimeName } from '../jobs/spec.js';
import type { ResolvedImage } from '../images/image.js';
import type { Trust } from '../jobs/decision.js';
import type { OutputChunk } from '../lib/follow.js';

/**
 * The one seam between the scheduler and sandboxes (after Nomad's DriverPlugin). The caller
 * never knows which driver it holds: what differs between drivers is in their `capabilities`,
 * and everything a driver needs to find its sandbox again after a restart is in the handle it
 * returns (its own `driverState`, read back through its own schema), which the store persists.
 */
export interface Runtime {
  readonly name: RuntimeName;
  readonly capabilities: Capabilities;
  /** Whether this driver can run jobs on this host, and if not, why. Never throws. */
  fingerprint(): Promise<Fingerprint>;
  /**
   * Creates the sandbox (bundle, VM disk, module…) without starting the job's process. A driver
   * with a warm pool may hand over a sandbox it made ahead instead: the handle then names that
   * sandbox (its `sandboxId` and `logPath`), and the one the request named is never made.
   */
  prepare(req: SandboxRequest): Promise<TaskHandle>;
  /** Starts the job's process; resolves once it runs. */
  start(handle: TaskHandle): Promise<void>;
  /** Resolves when the job's process has ended. */
  wait(handle: TaskHandle): Promise<ExitStatus>;
  /** Signals the job; the ending is still observed through `wait`. */
  stop(handle: TaskHandle, signal: StopSignal): Promise<void>;
  /** Removes everything the sandbox holds on the host, its log included. Idempotent; safe after a crash. */
  destroy(handle: TaskHandle): Promise<void>;
  /** Resource usage so far (must be called before `destroy` for the final figures). */
  stats(handle: TaskHandle): Promise<TaskStats>;
  /** After a restart: is the sandbox behind this handle still running, finished, or gone? */
  recover(handle: TaskHandle): Promise<Recovered>;
  /** The job's output from the beginning; with `follow`, keeps reading until the job ends. */
  output(handle: TaskHandle, opts: OutputOptions): AsyncIterable<OutputChunk>;
  /**
   * A job for this runtime is about to come: get ready ahead of it (threads, warm pools).
   * Settles when a job can start without a cold step; a node accepts the job after that.
   */
  warm?(): Promise<void>;
  /** Releases what the driver holds for future jobs (threads, warm pools). */
  close?(): Promise<void>;
  /**
   * What the driver holds for future jobs, for operators: a warm pool is `warmPool: { size,
   * idle: [{ key, memoryBytes, … }] }`, each idle sandbox with the host memory it holds.
   */
  status?(): Promise<Record<string, unknown>>;
  /**
   * After a restart: removes this node's sandboxes that outlive Boxcar and that no job in
   * `live` (sandbox ids of the store's unfinished jobs) holds; returns what it removed. For
   * drivers whose sandboxes are found by a query (a cluster's Pods by label), not by a handle.
   */
  removeStrays?(live: ReadonlySet<string>): Promise<string[]>;
}

export interface Fingerprint {
  runtime: RuntimeName;
  usable: boolean;
  /** One line: what works, or what is missing and how to get it. */
  reason: string;
  /** Versions, paths and modes the driver detected. */
  details: Record<string, string>;
  /**
   * Whether this runtime is a boundary for untrusted code on this node, where that can differ
   * from usable (a microVM on TCG is no boundary). Absent: it is, whenever it is usable.
   */
  untrustedCode?: { allowed: boolean; why: string };
}

export interface SandboxRequest {
  jobId: string;
  /** Chosen and persisted by the caller before `prepare`, so a crash mid-way can still be cleaned up. */
  sandboxId: string;
  spec: JobSpec;
  image: ResolvedImage;
  /** Whose job it is and how far it is trusted: a driver that reuses processes never mixes them. */
  tenant: string;
  trust: Trust;
  /** Secret values for a trusted job, added to its environment; never persisted. */
  secrets: Record<string, string>;
  /**
   * Where the sandbox keeps the job's output (size-capped by the driver); Boxcar copies it,
   * masked, into the job's stored log. `destroy` removes it with the rest of the sandbox.
   */
  logPath: string;
  /**
   * A host directory the job sees as its /workspace, given when the job starts with files (its
   * checkout, the artifacts of the jobs it needs, a restored cache) or leaves some behind
   * (artifacts, a cache to save). It is on a tmpfs of the job's workspace size that Boxcar
   * mounts and removes, never the driver, and holds nothing but the job's own files. Absent:
   * the driver gives the job an empty workspace of its own.
   */
  workspaceDir?: string;
}

/** What a driver's sandboxes are and can do: what callers ask instead of a runtime's name. */
export interface Capabilities {
  /** Jobs share the host's kernel: only trusted code may run on it. */
  sharedKernel: boolean;
  /** What a job runs: a command in an OCI image's root filesystem, or a WebAssembly module. */
  workload: 'image' | 'wasm-module';
  /**
   * Where a job's memory figures come from: its cgroup, the VMM process holding its guest, the
   * module's own memory, or a cluster's resource metrics API (sampled: approximate, and zeros
   * where the cluster serves none).
   */
  memoryMeasure: 'cgroup' | 'vmm-process' | 'module' | 'metrics-api';
  /** The most host memory a job can show above its memory limit (a VMM and its guest's kernel; 0 in a cgroup). */
  memoryOverheadBytes(limits: JobLimits): number;
  /** A stop sends TERM to the job's processes before KILL; otherwise it kills at once. */
  gracefulStop: boolean;
  /** The job's processes are in a cgroup of the host (`/boxcar/<sandbox id>`), where its limits can be read. */
  hostCgroup: boolean;
  /** Jobs may have network (their own namespace, veth, shaping and nftables rules). */
  network: boolean;
  /** The sandbox outlives a restart of Boxcar (a monitor or VMM holds it): a new process re-attaches. */
  survivesRestart: boolean;
  /**
   * The job may write over its image's files (an overlay of its own, as big as its
   * `resources.rootfs`); otherwise its root is read-only.
   */
  writableRoot: boolean;
  /**
   * What the job left in its workspace is in the request's `workspaceDir` once `wait` has
   * resolved (the job sees the directory itself, or the driver copies it back): where
   * artifacts and caches are collected from. Otherwise the job's files stay in its sandbox.
   */
  workspaceReturned: boolean;
  /**
   * The sandbox's own host pulls the job's image (a cluster's nodes): Boxcar pulls nothing and
   * the request's `image` is only its reference (`unpulledImage`). Absent: Boxcar pulls it.
   */
  pullsImages?: boolean;
}

/** A driver's own state from a handle, through the driver's schema; undefined before its sandbox existed. */
export function driverState<S extends z.ZodType>(handle: TaskHandle, schema: S): z.output<S> | undefined {
  if (handle.driverState === null || handle.driverState === undefined) return undefined;
  const r = schema.safeParse(handle.driverState);
  if (!r.success)
    throw new Error(
      `${handle.runtime}: sandbox ${handle.sandboxId}'s handle holds state this driver does not read (${r.error.issues[0]?.message}): it was written by another version of Boxcar`,
    );
  return r.data;
}

export type StopSignal = 'SIGTERM' | 'SIGKILL';

export interface ExitStatus {
  exitCode: number;
  oomKilled: boolean;
}

export interface TaskStats {
  memoryBytes: number;
  peakMemoryBytes: number;
  cpuUsageNs: number;
  pids: number;
}

/** `created`: the sandbox exists but its process was never started (the node died in between). */
export type Recovered =
  | { state: 'created' }
  | { state: 'running' }
  | { state: 'exited'; exit: ExitStatus }
  | { state: 'gone'; reason: string };

export interface OutputOptions {
  follow: boolean;
  /** Stop at once. */
  signal?: AbortSignal;
  /**
   * Fires when the caller has seen the job's process end (it waited for it): read what is left,
   * then stop. A follower told this need not poll for the end.
   */
  ended?: AbortSignal;
}
