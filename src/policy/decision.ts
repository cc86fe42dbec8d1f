import type { RuntimeName } from '../jobs/spec.js';
import type { Trust } from './trust.js';

/** Where a job runs and why: recorded with the job and printed by `--json` and `policy explain`. */
export interface Decision {
  trust: Trust;
  runtime: RuntimeName;
  fallback: RuntimeName | null;
  reasons: string[];
}
