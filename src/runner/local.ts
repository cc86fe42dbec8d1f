import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import { executeJob, type ExecuteDeps, type ExecuteOptions, type ExecuteResult } from './execute.js';
import { currentOwner } from '../lib/owner.js';
import type { JobSpec } from '../jobs/spec.js';
import { importLocalModule, pinSpec } from '../images/resolve.js';
import { decide, requireRunnable, type DecideDeps } from './decide.js';
import type { Decision } from '../jobs/decision.js';
import type { HealthOverride } from '../policy/health.js';
import { trustFromSpec } from '../policy/route.js';
import { OPERATOR_CEILING, type TrustClaims, type TrustInputs } from '../policy/trust.js';
import type { JobOrigin } from '../store/store.js';

/**
 * `boxcar run` and `boxcar pipeline` are the operator's own commands on the node: a job that
 * does not say where its code comes from is the operator's code. Say `--source external_pr`
 * to run it as untrusted. (Webhooks and the API get no such default.)
 */
export function localTrust(spec: JobSpec): TrustInputs {
  const t = trustFromSpec(spec);
  const defaulted: string[] = [];
  if (t.source === undefined) {
    t.source = 'internal_repo';
    defaulted.push('source=internal_repo');
  }
  if (t.userGroup === undefined) {
    t.userGroup = 'internal_team';
    defaulted.push('user_group=internal_team');
  }
  if (defaulted.length)
    t.evidence.push(`local command: ${defaulted.join(', ')} (not given; the operator's own code)`);
  return t;
}

/** A job the operator runs on this node with the CLI, named after the user who ran it. */
export function operatorOrigin(): JobOrigin {
  return { via: 'cli', actor: `operator:${process.env.SUDO_USER ?? userInfo().username}` };
}

/** The operator's own job: no tenant ceiling above it, and `localTrust` for what it leaves out. */
export function localClaims(spec: JobSpec): TrustClaims {
  return { ceiling: OPERATOR_CEILING, claim: localTrust(spec) };
}

/** Routes a job of the operator's on this node: `localClaims` unless `trust` is given. */
export function decideLocally(
  box: DecideDeps,
  jobId: string,
  spec: JobSpec,
  opts: { trust?: TrustClaims; overrides?: HealthOverride[] } = {},
): Promise<Decision> {
  return decide(box, jobId, spec, { trust: opts.trust ?? localClaims(spec), overrides: opts.overrides });
}

/**
 * Accepts a job on this machine (recorded before anything else) and runs it in the foreground.
 * The chosen runtime is made ready first (a warm worker process for WASM), as a serving node
 * is before it takes a job, so `startupMs` measures the job and not the node's own start.
 */
export async function runLocalJob(
  box: ExecuteDeps & DecideDeps,
  input: JobSpec,
  opts: ExecuteOptions,
  /** A pipeline's job: the id its pipeline reserved, and the pipeline. */
  as: { id?: string; pipeline?: string } = {},
): Promise<ExecuteResult> {
  const spec = await pinSpec(await importLocalModule(box.images, input), box.puller);
  const id = as.id ?? randomUUID();
  const decision = await decideLocally(box, id, spec);
  await requireRunnable(box, decision);
  await box.runtimes.get(decision.runtime).warm?.();
  const job = await box.store.createJob({
    id,
    tenant: 'local',
    spec,
    decision,
    origin: { ...operatorOrigin(), ...(as.pipeline ? { pipeline: as.pipeline } : {}) },
    owner: currentOwner(box.paths.root),
  });
  return executeJob(box, job, opts);
}
