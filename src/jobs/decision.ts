import type { RuntimeName } from './spec.js';

/** Whether a job's code may share the host's kernel and receive secrets. */
export type Trust = 'trusted' | 'untrusted';

/** Where a job runs and why: recorded with the job and printed by `--json` and `policy explain`. */
export interface Decision {
  trust: Trust;
  runtime: RuntimeName;
  fallback: RuntimeName | null;
  reasons: string[];
  /** The job went to the policy's fallback instead of its primary runtime, and why (for metrics). */
  fellBack?: { from: RuntimeName; reason: FallbackReason };
}

/** Why untrusted code went to the fallback: a bounded set, for metric labels. */
export type FallbackReason = 'canary' | 'unusable' | 'no_boundary' | 'unavailable' | 'breaker_open';

/** What is known of a job's code, from which trust is granted: the seed's trust inputs. */
export interface TrustInputs {
  source?: string;
  userGroup?: string;
  repository?: string;
  imageKind?: 'wasm' | 'oci';
  /** How the inputs were derived (from a webhook payload, from flags…), for the reasons. */
  evidence: string[];
}
