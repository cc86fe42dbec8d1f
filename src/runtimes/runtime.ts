import type { JobSpec, RuntimeName } from '../jobs/spec.js';
import type { ResolvedImage } from '../images/image.js';

/**
 * The one seam between the scheduler and sandboxes (after Nomad's DriverPlugin). The caller
 * never knows which driver it holds; everything a driver needs to find its sandbox again after
 * a restart lives in the JSON-serialisable `TaskHandle.state`, which the store persists.
 */
export interface Runtime {
  readonly name: RuntimeName;
  /** Whether this driver can run jobs on this host, and if not, why. Never throws. */
  fingerprint(): Promise<Fingerprint>;
  /** Creates the sandbox (bundle, VM disk, module…) without starting the job's process. */
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
  /** What the driver holds for future jobs, for operators (warm pools and their memory). */
  status?(): Promise<Record<string, unknown>>;
}

export interface Fingerprint {
  runtime: RuntimeName;
  usable: boolean;
  /** One line: what works, or what is missing and how to get it. */
  reason: string;
  /** Versions, paths and modes the driver detected. */
  details: Record<string, string>;
}

export interface SandboxRequest {
  jobId: string;
  /** Chosen and persisted by the caller before `prepare`, so a crash mid-way can still be cleaned up. */
  sandboxId: string;
  spec: JobSpec;
  image: ResolvedImage;
  /** Secret values for a trusted job, added to its environment; never persisted. */
  secrets: Record<string, string>;
  /**
   * Where the sandbox keeps the job's output (size-capped by the driver); Boxcar copies it,
   * masked, into the job's stored log. `destroy` removes it with the rest of the sandbox.
   */
  logPath: string;
}

export interface TaskHandle {
  runtime: RuntimeName;
  jobId: string;
  /** Fixed-length id of this attempt's sandbox (runsc matches ids by prefix). */
  sandboxId: string;
  logPath: string;
  state: Record<string, unknown>;
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

export interface OutputChunk {
  stream: 'stdout' | 'stderr';
  text: string;
}
