import type { Footprint } from '../../lib/proc.js';
import type { AgentChannel } from './agent-channel.js';
import type { RunRequest } from './protocol.js';
import type { VmLaunch } from './vmm.js';

/**
 * What the driver holds in memory for one job's VM, from `prepare` to `destroy` (as
 * `wasm/driver.ts` holds a Task): nothing here is needed to find the VM again after a restart.
 */
export class VmTask {
  /** The agent's control channel (reconnected on demand after a restart). */
  channel: AgentChannel | undefined;
  /** The run request until the job starts: it holds the job's secrets, so it is never written. */
  request: RunRequest | undefined;
  /** The VMM's last footprint, for the job's figures once the VMM is gone. */
  footprint: Footprint | undefined;
  /** The warm pool key to top up once this job has started. */
  refillKey: string | undefined;
  /** A pooled VM whose balloon is let out once its job has started. */
  deflate: VmLaunch | undefined;

  close(): void {
    this.channel?.close();
    this.channel = undefined;
    this.request = undefined;
  }
}
