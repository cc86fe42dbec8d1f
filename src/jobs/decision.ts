import type { RuntimeName } from './spec.js';

/** Whether a job's code may share the host's kernel and receive secrets. */
export type Trust = 'trusted' | 'untrusted';

/** Where a job runs and why: recorded with the job and printed by `--json` and `policy explain`. */
export interface Decision {
  trust: Trust;
  runtime: RuntimeName;
  fallback: RuntimeName | null;
  reasons: string[];
}
