/**
 * What a sandbox costs beyond its job, per runtime class: the RuntimeClass's `overhead.podFixed`,
 * which Kubernetes adds to every such Pod's requests and limits (for scheduling, its cgroup and
 * ResourceQuota). Defaults are the overheads Boxcar's own drivers account (their capabilities'
 * `memoryOverheadBytes`); an operator who has measured the cluster's nodes sets them instead.
 * `boxcar cost --scenario measured` measures per-job memory live and records it nowhere, so it
 * is not a source here.
 */

import { GUEST_OVERHEAD_MIB } from '../runtimes/microvm/driver.js';
import { VMM_OVERHEAD_BYTES } from '../runtimes/microvm/launcher.js';
import type { RuntimeClassSettings } from './settings.js';

export interface Overhead {
  memoryBytes?: number;
  cpuMillis?: number;
  /** Where the figures come from, for the manifest's comment. */
  source: string;
}

/**
 * Boxcar's figures: a microVM's guest (kernel, page cache, agent) and its VMM process, as the
 * microVM driver's `memoryOverheadBytes` gives for a memory limit in whole MiB; gVisor's sentry
 * and gofer run inside the job's own cgroup (its driver's overhead is 0), as they do inside a
 * Pod's, so the job's limit already covers them.
 */
const DRIVER_OVERHEAD = {
  firecracker: {
    memoryBytes: GUEST_OVERHEAD_MIB * 2 ** 20 + VMM_OVERHEAD_BYTES,
    source: `Boxcar's microVM driver (its memoryOverheadBytes for a limit in whole MiB): the guest's ${GUEST_OVERHEAD_MIB} MiB (GUEST_OVERHEAD_MIB) plus the VMM process's ${VMM_OVERHEAD_BYTES / 2 ** 20} MiB (VMM_OVERHEAD_BYTES)`,
  },
  gvisor: {
    source:
      "Boxcar's gVisor driver (memoryOverheadBytes 0): the sentry and gofer count inside the job's limit",
  },
} satisfies Record<string, Overhead>;

export type SandboxRuntime = keyof typeof DRIVER_OVERHEAD;

/** The overhead for a runtime class: each figure the operator gives, else the driver's. */
export function runtimeOverhead(runtime: SandboxRuntime, settings: RuntimeClassSettings): Overhead {
  const own = settings.overhead;
  const driver: Overhead = DRIVER_OVERHEAD[runtime];
  if (own.memory === undefined && own.cpu === undefined) return driver;
  const field = `kubernetes.runtime_classes.${runtime}.overhead`;
  return {
    memoryBytes: own.memory ?? driver.memoryBytes,
    cpuMillis: own.cpu,
    source:
      own.memory === undefined
        ? `memory: ${driver.source}; cpu: the config file (${field}.cpu)`
        : `the config file (${field})`,
  };
}
