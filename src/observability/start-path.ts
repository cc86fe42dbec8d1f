import type { VmAttributes } from '../jobs/handle.js';

export type StartPath = 'cold' | 'restored' | 'pooled';

/** How a job's sandbox came up: a VM from the warm pool or a snapshot; anything else cold. */
export function startPath(vm: VmAttributes | undefined): StartPath {
  if (vm?.fromWarmPool) return 'pooled';
  return vm?.restoredFromSnapshot ? 'restored' : 'cold';
}
