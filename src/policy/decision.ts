import type { RuntimeName } from '../jobs/spec.js';

/** Where a job runs and why: recorded with the job and printed by `--json` and `policy explain`. */
export interface Decision {
  runtime: RuntimeName;
  fallback: RuntimeName | null;
  reasons: string[];
}

/** Until the routing policy decides, a job runs where it asked, runc by default. */
export function requestedRuntimeDecision(requested: RuntimeName | undefined): Decision {
  return requested
    ? { runtime: requested, fallback: null, reasons: [`runtime ${requested} was requested`] }
    : { runtime: 'runc', fallback: null, reasons: ['runc is the default runtime'] };
}
