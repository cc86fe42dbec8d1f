import os from 'node:os';
import type { SchedulerConfig } from '../config/config.js';
import { formatBytes } from '../lib/quantity.js';
import type { RuntimeName } from '../jobs/spec.js';
import { addUsage, jobUsage } from '../tenants/quota.js';
import type { JobSpec } from '../jobs/spec.js';
import { ZERO_USAGE, type Usage } from '../store/store.js';

const RESERVED_MEMORY = 2 ** 30; // for the host, Boxcar itself and the jobs' monitors

export interface NodeCapacity {
  memoryBytes: number;
  cpuMillis: number;
}

export function nodeCapacity(config: SchedulerConfig): NodeCapacity {
  return {
    memoryBytes: config.capacity.memory ?? Math.max(0, os.totalmem() - RESERVED_MEMORY),
    cpuMillis: config.capacity.cpus ?? os.availableParallelism() * 1000,
  };
}

/**
 * What this node can still place: its capacity against the requests of the jobs it holds (as
 * the Kubernetes scheduler places pods by requests), and a per-runtime limit on jobs at once.
 */
export class Placement {
  private held: Usage = ZERO_USAGE;
  private readonly perRuntime = new Map<RuntimeName, number>();

  constructor(
    readonly capacity: NodeCapacity,
    private readonly concurrency: Partial<Record<RuntimeName, number>>,
  ) {}

  /** Why the job cannot be placed here now, or undefined if it can. */
  refusal(spec: JobSpec, runtime: RuntimeName): string | undefined {
    const want = jobUsage(spec);
    if (this.held.requestsMemoryBytes + want.requestsMemoryBytes > this.capacity.memoryBytes)
      return `waiting for node memory: ${formatBytes(this.held.requestsMemoryBytes)} of ${formatBytes(this.capacity.memoryBytes)} requested`;
    if (this.held.requestsCpuMillis + want.requestsCpuMillis > this.capacity.cpuMillis)
      return `waiting for node CPU: ${this.held.requestsCpuMillis}m of ${this.capacity.cpuMillis}m requested`;
    const limit = this.concurrency[runtime];
    if (limit !== undefined && (this.perRuntime.get(runtime) ?? 0) >= limit)
      return `waiting for a ${runtime} slot: ${limit} at once on this node`;
    return undefined;
  }

  /** Whether the job could ever be placed on an empty node like this one. */
  fitsEmpty(spec: JobSpec): boolean {
    const want = jobUsage(spec);
    return (
      want.requestsMemoryBytes <= this.capacity.memoryBytes &&
      want.requestsCpuMillis <= this.capacity.cpuMillis
    );
  }

  hold(spec: JobSpec, runtime: RuntimeName): void {
    this.held = addUsage(this.held, jobUsage(spec));
    this.perRuntime.set(runtime, (this.perRuntime.get(runtime) ?? 0) + 1);
  }

  free(spec: JobSpec, runtime: RuntimeName): void {
    const u = jobUsage(spec);
    this.held = addUsage(this.held, {
      pods: -u.pods,
      requestsMemoryBytes: -u.requestsMemoryBytes,
      limitsMemoryBytes: -u.limitsMemoryBytes,
      requestsCpuMillis: -u.requestsCpuMillis,
      limitsCpuMillis: -u.limitsCpuMillis,
    });
    this.perRuntime.set(runtime, (this.perRuntime.get(runtime) ?? 1) - 1);
  }

  get used(): Usage {
    return this.held;
  }

  running(runtime: RuntimeName): number {
    return this.perRuntime.get(runtime) ?? 0;
  }
}
