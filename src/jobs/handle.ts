import { z } from 'zod';
import { RuntimeName } from './spec.js';

export const HANDLE_VERSION = 2;

/** What a driver tells the rest of Boxcar about a sandbox. */
export interface SandboxAttributes {
  /** The host process that holds the sandbox and outlives Boxcar: its monitor or its VMM. */
  hostPid?: number;
  /** How a microVM came up: its VMM and accelerator, restored or booted, and how long it took. */
  vm?: VmAttributes;
  /** The registry image the sandbox runs, and how it was pulled for the job. */
  image?: ImageAttributes;
  /** What the job's workspace started with and what was kept of it. */
  workspace?: WorkspaceAttributes;
  /** A container made ahead, idle in the driver's warm pool until this job took it over. */
  fromWarmPool?: boolean;
}

const Workspace = z.object({
  checkout: z
    .object({
      url: z.string(),
      commit: z.string(),
      /** The node's mirror had the commit: nothing was fetched. */
      warm: z.boolean(),
      fetchMs: z.number(),
      checkoutMs: z.number(),
      submodules: z.number(),
    })
    .optional(),
  /** Jobs whose artifacts were put into the workspace. */
  artifactsFrom: z.array(z.string()).optional(),
  /** The cache restored (hit) or looked for (miss), by key and namespace. */
  cache: z.object({ key: z.string(), namespace: z.string(), hit: z.boolean(), bytes: z.number() }).optional(),
  /** The artifacts kept when the job ended (a tar, by digest). */
  artifacts: z
    .object({ digest: z.string(), bytes: z.number(), files: z.number(), expiresAt: z.number() })
    .optional(),
  cacheSaved: z.object({ key: z.string(), namespace: z.string(), bytes: z.number() }).optional(),
  /** Why collecting artifacts or saving the cache failed, when it did. */
  error: z.string().optional(),
});
export type WorkspaceAttributes = z.output<typeof Workspace>;

export interface ImageAttributes {
  ref: string;
  digest: string;
  pullMs: number;
  /** Bytes from the registry, from peer nodes, and found in the node's cache. */
  bytes: { origin: number; peers: number; cache: number };
}

export interface VmAttributes {
  vmm: string;
  accel: string;
  restoredFromSnapshot: boolean;
  /** Restore or boot time; for a VM from the warm pool, the time to take it over. */
  bootMs: number;
  fromWarmPool?: boolean;
}

/**
 * A job's sandbox as the store keeps it (after Nomad's TaskHandle): enough for the driver that
 * made it to find the sandbox again after any crash. The handle is versioned, because handles
 * outlive the Boxcar that wrote them in the store. Its `driverState` belongs to that driver
 * alone, which reads it back through its own schema; everyone else reads `attributes`.
 */
export interface TaskHandle {
  version: typeof HANDLE_VERSION;
  runtime: RuntimeName;
  jobId: string;
  /** Fixed-length id of this attempt's sandbox (runsc matches ids by prefix). */
  sandboxId: string;
  /** The sandbox's own log of the job's output (its monitor's or VMM's); it goes with the sandbox. */
  logPath: string;
  /** The driver's own, validated by that driver's schema; null before the sandbox exists. */
  driverState: unknown;
  attributes: SandboxAttributes;
}

/** A handle chosen before its sandbox exists, so a crash half-way can still be cleaned up. */
export function newHandle(h: Pick<TaskHandle, 'runtime' | 'jobId' | 'sandboxId' | 'logPath'>): TaskHandle {
  return { version: HANDLE_VERSION, ...h, driverState: null, attributes: {} };
}

const Vm = z.object({
  vmm: z.string(),
  accel: z.string(),
  restoredFromSnapshot: z.boolean(),
  bootMs: z.number(),
  fromWarmPool: z.boolean().optional(),
});

const Common = {
  runtime: RuntimeName,
  jobId: z.string(),
  sandboxId: z.string(),
  logPath: z.string(),
};

const V2 = z.object({
  version: z.literal(HANDLE_VERSION),
  ...Common,
  driverState: z.unknown(),
  attributes: z.object({
    hostPid: z.number().optional(),
    vm: Vm.optional(),
    image: z
      .object({
        ref: z.string(),
        digest: z.string(),
        pullMs: z.number(),
        bytes: z.object({ origin: z.number(), peers: z.number(), cache: z.number() }),
      })
      .optional(),
    workspace: Workspace.optional(),
    fromWarmPool: z.boolean().optional(),
  }),
});

/** Version 1 kept everything in one `state` map: the monitor's or VMM's pid, and a microVM's `vm`. */
const V1 = z.object({ ...Common, state: z.record(z.string(), z.unknown()) }).transform((h): TaskHandle => {
  const { vm, ...own } = h.state;
  const pid = own.conmonPid ?? own.pid;
  const parsedVm = Vm.safeParse(vm);
  return {
    version: HANDLE_VERSION,
    runtime: h.runtime,
    jobId: h.jobId,
    sandboxId: h.sandboxId,
    logPath: h.logPath,
    driverState: own,
    attributes: {
      ...(typeof pid === 'number' ? { hostPid: pid } : {}),
      ...(parsedVm.success ? { vm: parsedVm.data } : {}),
    },
  };
});

/** A stored handle in this version's shape, whichever version wrote it. */
export function readHandle(stored: unknown): TaskHandle {
  const r = z.union([V2, V1]).safeParse(stored);
  if (!r.success)
    throw new Error(
      `a stored sandbox handle is not one this Boxcar reads (${r.error.issues[0]?.message ?? 'unknown shape'}): ${JSON.stringify(stored).slice(0, 200)}`,
    );
  return r.data as TaskHandle;
}
