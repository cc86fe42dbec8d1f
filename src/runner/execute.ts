import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { StatePaths } from '../lib/state-paths.js';
import { jobCostDollars, type Prices } from '../cost/model.js';
import { errorMessage, UserError } from '../lib/errors.js';
import type { ImageStore } from '../images/image-store.js';
import type { ImagePuller } from '../images/pull.js';
import { resolveImage } from '../images/resolve.js';
import { unpulledImage } from '../images/image.js';
import { destroySandbox } from './sandbox-cleanup.js';
import { forgetSandbox, recordSandbox, recordsSandboxes } from '../runtimes/sandbox-ledger.js';
import type { Logger } from '../observability/logger.js';
import { traceJob, withTraceparent } from '../observability/tracing.js';
import type { RuntimeRegistry } from '../runtimes/registry.js';
import type { ExitStatus, Runtime } from '../runtimes/runtime.js';
import type { OutputChunk } from '../lib/follow.js';
import { newHandle, type TaskHandle } from '../jobs/handle.js';
import { IllegalTransition, type Fence, type JobPatch, type JobRecord, type Store } from '../store/store.js';
import { OutputMasker } from '../tenants/masking.js';
import type { RegistryLogins } from '../tenants/registry-logins.js';
import type { Secrets } from '../tenants/secrets.js';
import { jobLogPath, JobLogWriter, writeJobLogMetadata } from './job-log.js';
import { OutputCapture } from './output-capture.js';
import { finalState, type JobState } from '../jobs/states.js';
import { sleep } from '../lib/exec.js';
import { wantsWorkspace, type Workspaces } from '../workspace/workspaces.js';

export interface ExecuteDeps {
  paths: StatePaths;
  store: Store;
  images: ImageStore;
  puller: ImagePuller;
  runtimes: RuntimeRegistry;
  logger: Logger;
  prices: Prices;
  secrets: Pick<Secrets, 'forJob'>;
  registryLogins: Pick<RegistryLogins, 'identity'>;
  workspaces: Workspaces;
}

export interface ExecuteOptions {
  /** Every chunk of output as it arrives. */
  onOutput?: (chunk: OutputChunk) => void;
  /** Aborting cancels the job. */
  signal?: AbortSignal;
  /** How much output the result keeps (the job's stored log keeps more); 0: none. */
  outputLimitBytes?: number;
  /** Called once the job's process runs (not when it ends without running). */
  onStartDone?: () => void;
  /** Give a job that failed to start back to the queue (serving nodes; not a foreground run). */
  retry?: { maxAttempts: number; backoffMs: (attempts: number) => number };
  /** How long a stopped job gets between SIGTERM and SIGKILL (default STOP_GRACE_MS). */
  stopGraceMs?: number;
}

export interface ExecuteResult {
  record: JobRecord;
  output: string;
}

/** How long a stopped job gets between SIGTERM and SIGKILL. */
export const STOP_GRACE_MS = 2000;
const DEFAULT_OUTPUT_LIMIT = 1024 * 1024;

/** The sandbox's own log (its monitor's or VMM's), which goes with the sandbox. */
function sandboxLogPath(paths: StatePaths, sandboxId: string): string {
  return path.join(paths.sandboxes, `${sandboxId}.log`);
}

/**
 * Runs one accepted job through its runtime driver, from `queued` to a terminal state. Each
 * state is written before the step it announces; the sandbox is destroyed whatever happens.
 */
export function executeJob(
  deps: ExecuteDeps,
  job: JobRecord,
  opts: ExecuteOptions = {},
): Promise<ExecuteResult> {
  return traceJob(job, () => execute(deps, job, opts));
}

/**
 * Follows a running job to its end: output, time limit (counted from its start), cancel, the
 * final state and figures; destroys the sandbox whatever happens. Also what a restarted node
 * does with a job it re-attaches to.
 */
export function superviseJob(
  deps: ExecuteDeps,
  job: JobRecord,
  driver: Runtime,
  handle: TaskHandle,
  opts: ExecuteOptions & { secrets?: Record<string, string> } = {},
): Promise<ExecuteResult> {
  return traceJob(job, () => supervise(deps, job, driver, handle, opts));
}

// The two above, untraced: each job's span is recorded once, by whichever of them ran it.

async function execute(deps: ExecuteDeps, job: JobRecord, opts: ExecuteOptions): Promise<ExecuteResult> {
  const { store, logger } = deps;
  const log = logger.child({ job_id: job.id, tenant: job.tenant, runtime: job.runtime });
  let driver: Runtime | undefined;
  let handle: TaskHandle | undefined;
  let secrets: Record<string, string> = {};
  let record = job;
  const fence = fenceOf(job);
  // startupMs counts from the moment this node takes the job, not its time in the queue.
  const takenAt = Date.now();
  try {
    record = await store.transition(job.id, 'starting', {}, undefined, undefined, fence);
  } catch (err) {
    // Cancelled (or settled) between being claimed and starting: nothing to do.
    if (err instanceof IllegalTransition) return { record: (await store.getJob(job.id)) ?? job, output: '' };
    throw err;
  }
  try {
    driver = deps.runtimes.get(job.runtime);
    // The operator's own jobs pull with the node's credentials; a tenant's with its own.
    const identity = job.origin.via === 'cli' ? undefined : deps.registryLogins.identity(job.tenant);
    const image = driver.capabilities.pullsImages
      ? unpulledImage(job.spec.image ?? '')
      : await resolveImage(deps.images, job.spec.image, deps.puller, identity);
    const sandboxId = randomUUID();
    handle = newHandle({
      runtime: job.runtime,
      jobId: job.id,
      sandboxId,
      logPath: sandboxLogPath(deps.paths, sandboxId),
    });
    await store.saveHandle(job.id, handle);
    // A sandbox that ends with this process (WASM's) leaves nothing for a start-up to sweep.
    if (recordsSandboxes(driver)) await recordSandbox(deps.paths, handle);
    secrets = await deps.secrets.forJob(job);
    const workspace = wantsWorkspace(job.spec) ? await deps.workspaces.prepare(job) : undefined;
    handle = await driver.prepare({
      jobId: job.id,
      sandboxId,
      spec: withTraceparent(job, withCheckoutEnv(job.spec)),
      image,
      tenant: job.tenant,
      trust: job.decision.trust,
      secrets,
      logPath: handle.logPath,
      workspaceDir: workspace?.dir,
    });
    if (workspace) handle.attributes.workspace = workspace.attributes;
    // Which image it ran, and (pulled for it) how it came: part of the job's result.
    if (image.pull) handle.attributes.image = { ref: image.ref, digest: image.digest, ...image.pull };
    await store.saveHandle(job.id, handle);
    // A sandbox made ahead (a warm pool's) was handed over: the one requested never existed.
    if (handle.sandboxId !== sandboxId) await forgetSandbox(deps.paths, sandboxId);
    if (opts.signal?.aborted) {
      await tearDown(deps, job, driver, handle, log);
      record = await store.transition(
        job.id,
        'cancelled',
        { finishedAt: Date.now() },
        'cancelled before it started',
        undefined,
        fence,
      );
      return { record, output: '' };
    }
    await driver.start(handle);
  } catch (err) {
    // The job's own input (a missing image or secret) is a UserError, said once in the job's
    // error; anything else failed in the runtime or the host: what the breaker counts, what is
    // worth a retry, and what an operator needs the stack of.
    const infraFailure = !(err instanceof UserError);
    if (infraFailure) log.error({ err }, 'job failed to start');
    else log.info({ why: errorMessage(err) }, 'job refused: its own input');
    await tearDown(deps, job, driver, handle, log);
    const why = errorMessage(err);
    // Only a job whose process never started is run again: nothing of it has run yet.
    const retryable = infraFailure && record.state === 'starting';
    if (retryable && opts.retry && job.attempts + 1 < opts.retry.maxAttempts) {
      const notBefore = Date.now() + opts.retry.backoffMs(job.attempts);
      record = await store.requeue(job.id, notBefore, `infrastructure failure, retried: ${why}`, {
        infraFailure,
        fence,
      });
      return { record, output: '' };
    }
    record = await store.transition(
      job.id,
      'error',
      { finishedAt: Date.now(), error: why, infraFailure },
      why,
      undefined,
      fence,
    );
    return { record, output: '' };
  }
  const startedAt = Date.now();
  try {
    record = await store.transition(
      job.id,
      'running',
      { startedAt, startupMs: startedAt - takenAt },
      undefined,
      startedAudit(record, handle),
      fence,
    );
  } catch (err) {
    // The job moved on while it started (cancelled, taken by another node): its sandbox must
    // not run on unwatched.
    log.warn({ err: errorMessage(err) }, 'the job moved on while its sandbox started: destroying it');
    await tearDown(deps, job, driver, handle, log);
    if (err instanceof IllegalTransition)
      return { record: (await store.getJob(job.id)) ?? record, output: '' };
    throw err;
  }
  log.info({ startupMs: startedAt - takenAt, queuedMs: takenAt - job.createdAt }, 'job started');
  opts.onStartDone?.();
  return supervise(deps, record, driver, handle, { ...opts, secrets });
}

/** A checked-out job knows what it runs on, as CI jobs do (GitLab's CI_COMMIT_SHA). */
function withCheckoutEnv(spec: JobRecord['spec']): JobRecord['spec'] {
  if (!spec.checkout) return spec;
  return {
    ...spec,
    env: { BOXCAR_COMMIT: spec.checkout.commit, BOXCAR_REPOSITORY_URL: spec.checkout.url, ...spec.env },
  };
}

/**
 * The audit record of the sandbox a job runs in. Untrusted code in a microVM on TCG (the
 * operator's `microvm.allow_tcg_for_untrusted`: no security boundary) is flagged in it.
 */
export function startedAudit(job: JobRecord, handle: TaskHandle, extra: Record<string, unknown> = {}) {
  const untrustedOnTcg = job.decision.trust === 'untrusted' && handle.attributes.vm?.accel === 'tcg';
  return {
    tenant: job.tenant,
    actor: `node:${job.owner ?? 'unknown'}`,
    action: 'job.started',
    subject: job.id,
    detail: {
      runtime: handle.runtime,
      sandbox: handle.sandboxId,
      trust: job.decision.trust,
      ...(untrustedOnTcg ? { untrustedOnTcg: 'microvm.allow_tcg_for_untrusted' } : {}),
      ...extra,
    },
  };
}

async function supervise(
  deps: ExecuteDeps,
  job: JobRecord,
  driver: Runtime,
  handle: TaskHandle,
  opts: ExecuteOptions & { secrets?: Record<string, string> },
): Promise<ExecuteResult> {
  const { store, logger } = deps;
  const log = logger.child({ job_id: job.id, tenant: job.tenant, runtime: job.runtime });
  const capture = new OutputCapture(opts.outputLimitBytes ?? DEFAULT_OUTPUT_LIMIT, opts.onOutput);
  const startedAt = job.startedAt ?? Date.now();
  let record = job;
  try {
    const processEnded = new AbortController();
    const stored = storeOutput(deps, job, driver, handle, {
      follow: true,
      ended: processEnded.signal,
      secrets: opts.secrets,
      onChunk: (c) => capture.add(c),
      log,
    });
    const remainingMs = Math.max(0, job.spec.timeoutMs - (Date.now() - startedAt));
    let finishedAt = 0;
    const limits = { timeoutMs: remainingMs, graceMs: opts.stopGraceMs ?? STOP_GRACE_MS };
    const waiting = waitWithLimits(driver, handle, limits, opts.signal, log).finally(() => {
      finishedAt = Date.now();
      processEnded.abort();
    });
    // Both settle whatever happens (the copy ends when the process does): no failure goes unseen.
    const [ended] = await Promise.all([waiting, stored]);
    const stats = await driver.stats(handle);
    const durationMs = finishedAt - startedAt;
    let state = finalState({ ...ended.exit, timedOut: ended.timedOut, cancelled: ended.cancelled });
    const kept = await keepWorkspace(deps, job, driver, handle, state === 'succeeded');
    if (kept && state === 'succeeded') state = 'failed'; // artifacts it should have kept were refused
    record = await landFinalState(store, log, job.id, fenceOf(job), state, {
      ...(kept ? { error: kept } : {}),
      exitCode: ended.exit.exitCode,
      oomKilled: ended.exit.oomKilled,
      timedOut: ended.timedOut,
      durationMs,
      peakMemoryBytes: stats.peakMemoryBytes,
      cpuUsageNs: stats.cpuUsageNs,
      costDollars: jobCostDollars(
        { peakMemoryBytes: stats.peakMemoryBytes, durationMs, cpuUsageNs: stats.cpuUsageNs },
        deps.prices,
      ),
      finishedAt,
    });
    log.info({ state, exitCode: ended.exit.exitCode, durationMs }, 'job finished');
  } catch (err) {
    if (err instanceof IllegalTransition) {
      // It moved on while it ran (this node was paused or cut off, and another took it over):
      // the write is refused, its sandbox goes below, and its new holder records its end.
      log.warn({ err: errorMessage(err) }, 'the job moved on: its result here is not recorded');
      return { record: (await store.getJob(job.id)) ?? record, output: capture.text() };
    }
    log.error({ err }, 'job failed while running');
    record = await store.transition(
      job.id,
      'error',
      { finishedAt: Date.now(), error: errorMessage(err) },
      errorMessage(err),
      undefined,
      fenceOf(job),
    );
  } finally {
    await tearDown(deps, job, driver, handle, log);
  }
  return { record, output: capture.text() };
}

/** The claim this process holds on the job: every write it makes for the job carries it. */
const fenceOf = (job: JobRecord): Fence | undefined =>
  job.owner === null ? undefined : { owner: job.owner, attempts: job.attempts };

const LAND_FIRST_WAIT_MS = 100;
const LAND_MAX_WAIT_MS = 5000;

/**
 * Records a job's final state, and keeps trying while the store fails (a failover, a busy or
 * full database): the result is known and must land, or the job would be run again. This
 * process keeps the job's lease meanwhile (its heartbeat renews every job it holds). A
 * transition the job no longer allows (it moved on) is not retried.
 */
async function landFinalState(
  store: Store,
  log: Logger,
  id: string,
  fence: Fence | undefined,
  state: JobState,
  patch: JobPatch,
): Promise<JobRecord> {
  for (let wait = LAND_FIRST_WAIT_MS; ; wait = Math.min(LAND_MAX_WAIT_MS, wait * 2)) {
    try {
      return await store.transition(id, state, patch, undefined, undefined, fence);
    } catch (err) {
      if (err instanceof IllegalTransition) throw err;
      log.error({ err, state, retryInMs: wait }, "recording the job's final state failed; retrying");
      await sleep(wait);
    }
  }
}

/**
 * What the job leaves in its workspace is kept: its artifacts and its cache (see
 * Workspaces.finish), recorded in its handle. Returns why artifacts it asked for could not be
 * kept, which fails the job.
 */
async function keepWorkspace(
  deps: ExecuteDeps,
  job: JobRecord,
  driver: Runtime,
  handle: TaskHandle,
  succeeded: boolean,
): Promise<string | undefined> {
  const { artifacts, cache } = job.spec;
  if (!artifacts && !cache) return undefined;
  const before = handle.attributes.workspace ?? {};
  if (!driver.capabilities.workspaceReturned) {
    const why = `the ${driver.name} runtime does not return a job's workspace yet: artifacts and caches are not kept`;
    handle.attributes.workspace = { ...before, error: why };
    await deps.store.saveHandle(job.id, handle);
    return artifacts ? why : undefined;
  }
  const after = await deps.workspaces.finish(job, succeeded, before);
  handle.attributes.workspace = after;
  await deps.store.saveHandle(job.id, handle);
  return after.error;
}

/**
 * Removes what a job holds on the host: its sandbox (when it got one) and its workspace (when it
 * had one). Failures are logged, not thrown: whatever stays behind is reconcile's to remove.
 */
async function tearDown(
  deps: ExecuteDeps,
  job: JobRecord,
  driver: Runtime | undefined,
  handle: TaskHandle | undefined,
  log: Logger,
): Promise<void> {
  if (driver && handle) await destroySandbox({ paths: deps.paths, logger: log }, driver, handle);
  if (wantsWorkspace(job.spec))
    await deps.workspaces
      .remove(job.id)
      .catch((err: unknown) => log.error({ err }, "removing the job's workspace failed"));
}

/**
 * Copies the sandbox's output into the job's stored log, masking the secrets the job received
 * (`secrets`, or looked up again after a restart), until the job ends (`follow`) or to the end
 * of what is there. Every chunk also goes to `onChunk`, masked.
 */
export async function storeOutput(
  deps: Pick<ExecuteDeps, 'paths' | 'logger' | 'secrets'>,
  job: JobRecord,
  driver: Runtime,
  handle: TaskHandle,
  opts: {
    follow: boolean;
    ended?: AbortSignal;
    secrets?: Record<string, string>;
    onChunk?: (c: OutputChunk) => void;
    /** The job's logger, when the caller has one. */
    log?: Logger;
  },
): Promise<void> {
  const log = opts.log ?? deps.logger.child({ job_id: job.id });
  const secrets =
    opts.secrets ??
    (await deps.secrets.forJob(job).catch((err: unknown) => {
      log.error({ err: errorMessage(err) }, "the job's secrets could not be looked up to mask its output");
      return {};
    }));
  const masker = new OutputMasker(Object.values(secrets));
  const writer = await JobLogWriter.create(jobLogPath(deps.paths, job.id), log);
  await writeJobLogMetadata(deps.paths, job);
  const emit = (c: OutputChunk) => {
    writer.write(c);
    opts.onChunk?.(c);
  };
  try {
    for await (const chunk of driver.output(handle, { follow: opts.follow, ended: opts.ended }))
      for (const c of masker.push(chunk)) emit(c);
    for (const c of masker.flush()) emit(c);
  } finally {
    await writer.close();
  }
}

interface Ended {
  exit: ExitStatus;
  timedOut: boolean;
  cancelled: boolean;
}

/** Waits for the job, stopping it (TERM, then KILL after a grace period) on timeout or cancel. */
async function waitWithLimits(
  driver: Runtime,
  handle: TaskHandle,
  { timeoutMs, graceMs }: { timeoutMs: number; graceMs: number },
  signal: AbortSignal | undefined,
  log: Logger,
): Promise<Ended> {
  let timedOut = false;
  let cancelled = false;
  let killTimer: NodeJS.Timeout | undefined;
  const stop = (why: 'timeout' | 'cancel') => {
    if (timedOut || cancelled) return;
    if (why === 'timeout') timedOut = true;
    else cancelled = true;
    log.info({ why }, 'stopping job');
    driver.stop(handle, 'SIGTERM').catch((err: unknown) => log.warn({ err }, 'SIGTERM failed'));
    killTimer = setTimeout(() => {
      driver.stop(handle, 'SIGKILL').catch((err: unknown) => log.error({ err }, 'SIGKILL failed'));
    }, graceMs);
  };
  const timer = setTimeout(() => stop('timeout'), timeoutMs);
  const onAbort = () => stop('cancel');
  signal?.addEventListener('abort', onAbort, { once: true });
  if (signal?.aborted) onAbort();
  try {
    const exit = await driver.wait(handle);
    return { exit, timedOut, cancelled };
  } finally {
    clearTimeout(timer);
    clearTimeout(killTimer);
    signal?.removeEventListener('abort', onAbort);
  }
}
