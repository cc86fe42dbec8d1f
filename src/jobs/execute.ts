import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { StatePaths } from '../config/paths.js';
import { jobCostDollars, type Prices } from '../cost/model.js';
import { errorMessage, UserError } from '../errors.js';
import type { ImageStore } from '../images/image-store.js';
import { resolveImage } from '../images/resolve.js';
import type { Logger } from '../observability/logger.js';
import type { RuntimeRegistry } from '../runtimes/registry.js';
import type { ExitStatus, OutputChunk, Runtime, TaskHandle } from '../runtimes/runtime.js';
import { IllegalTransition, type JobRecord, type Store } from '../store/store.js';
import { OutputCapture } from './output-capture.js';
import { resolveSecrets } from './secrets.js';
import { finalState } from './states.js';

/**
 * Runs one accepted job through its runtime driver, from `queued` to a terminal state. Each
 * state is written before the step it announces; the sandbox is destroyed whatever happens.
 */
export interface ExecuteDeps {
  paths: StatePaths;
  store: Store;
  images: ImageStore;
  runtimes: RuntimeRegistry;
  logger: Logger;
  prices: Prices;
}

export interface ExecuteOptions {
  /** Every chunk of output as it arrives. */
  onOutput?: (chunk: OutputChunk) => void;
  /** Aborting cancels the job. */
  signal?: AbortSignal;
  /** How much output the result keeps (the log file keeps more); 0: none, and nothing is followed. */
  outputLimitBytes?: number;
  /** Called once the job's process runs (not when it ends without running). */
  onStartDone?: () => void;
  /** Give a job that failed to start back to the queue (serving nodes; not a foreground run). */
  retry?: { maxAttempts: number; backoffMs: (attempts: number) => number };
}

export interface ExecuteResult {
  record: JobRecord;
  output: string;
}

/** How long a stopped job gets between SIGTERM and SIGKILL. */
export const STOP_GRACE_MS = 2000;
const DEFAULT_OUTPUT_LIMIT = 1024 * 1024;

export function jobLogPath(paths: StatePaths, jobId: string): string {
  return path.join(paths.logs, `${jobId}.log`);
}

export async function executeJob(
  deps: ExecuteDeps,
  job: JobRecord,
  opts: ExecuteOptions = {},
): Promise<ExecuteResult> {
  const { store, logger } = deps;
  const log = logger.child({ jobId: job.id, runtime: job.runtime });
  let driver: Runtime | undefined;
  let handle: TaskHandle | undefined;
  let record = job;
  // startupMs counts from the moment this node takes the job, not its time in the queue.
  const takenAt = Date.now();
  try {
    record = await store.transition(job.id, 'starting');
  } catch (err) {
    // Cancelled (or settled) between being claimed and starting: nothing to do.
    if (err instanceof IllegalTransition) return { record: (await store.getJob(job.id)) ?? job, output: '' };
    throw err;
  }
  try {
    driver = deps.runtimes.get(job.runtime);
    const image = await resolveImage(deps.images, job.spec.image);
    const sandboxId = randomUUID();
    handle = {
      runtime: job.runtime,
      jobId: job.id,
      sandboxId,
      logPath: jobLogPath(deps.paths, job.id),
      state: {},
    };
    await store.saveHandle(job.id, handle);
    const secrets = job.decision.trust === 'trusted' ? resolveSecrets(job.spec.secrets) : {};
    handle = await driver.prepare({
      jobId: job.id,
      sandboxId,
      spec: job.spec,
      image,
      secrets,
      logPath: handle.logPath,
    });
    await store.saveHandle(job.id, handle);
    if (opts.signal?.aborted) {
      await destroyQuietly(driver, handle, log);
      record = await store.transition(
        job.id,
        'cancelled',
        { finishedAt: Date.now() },
        'cancelled before it started',
      );
      return { record, output: '' };
    }
    await driver.start(handle);
  } catch (err) {
    log.error({ err }, 'job failed to start');
    if (driver && handle) await destroyQuietly(driver, handle, log);
    const why = errorMessage(err);
    // Only a job whose process never started is run again: nothing of it has run yet.
    const retryable = !(err instanceof UserError) && record.state === 'starting';
    if (retryable && opts.retry && job.attempts + 1 < opts.retry.maxAttempts) {
      const notBefore = Date.now() + opts.retry.backoffMs(job.attempts);
      record = await store.requeue(job.id, notBefore, `infrastructure failure, retried: ${why}`);
      return { record, output: '' };
    }
    record = await store.transition(job.id, 'error', { finishedAt: Date.now(), error: why }, why);
    return { record, output: '' };
  }
  const startedAt = Date.now();
  record = await store.transition(job.id, 'running', { startedAt, startupMs: startedAt - takenAt });
  log.info({ startupMs: startedAt - takenAt, queuedMs: takenAt - job.createdAt }, 'job started');
  opts.onStartDone?.();
  return superviseJob(deps, record, driver, handle, opts);
}

/**
 * Follows a running job to its end: output, time limit (counted from its start), cancel, the
 * final state and figures; destroys the sandbox whatever happens. Also what a restarted node
 * does with a job it re-attaches to.
 */
export async function superviseJob(
  deps: ExecuteDeps,
  job: JobRecord,
  driver: Runtime,
  handle: TaskHandle,
  opts: ExecuteOptions = {},
): Promise<ExecuteResult> {
  const { store, logger } = deps;
  const log = logger.child({ jobId: job.id, runtime: job.runtime });
  const capture = new OutputCapture(opts.outputLimitBytes ?? DEFAULT_OUTPUT_LIMIT, opts.onOutput);
  const startedAt = job.startedAt ?? Date.now();
  let record = job;
  try {
    // A serving node keeps no output in memory (clients read the log): nothing to follow then.
    const following = opts.onOutput !== undefined || (opts.outputLimitBytes ?? DEFAULT_OUTPUT_LIMIT) > 0;
    const pumped = following ? pump(driver.output(handle, { follow: true }), capture) : undefined;
    const remainingMs = Math.max(0, job.spec.timeoutMs - (Date.now() - startedAt));
    const ended = await waitWithLimits(driver, handle, remainingMs, opts.signal, log);
    const finishedAt = Date.now();
    await pumped;
    const stats = await driver.stats(handle);
    const durationMs = finishedAt - startedAt;
    const state = finalState({ ...ended.exit, timedOut: ended.timedOut, cancelled: ended.cancelled });
    record = await store.transition(job.id, state, {
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
    log.error({ err }, 'job failed while running');
    record = await store.transition(
      job.id,
      'error',
      { finishedAt: Date.now(), error: errorMessage(err) },
      errorMessage(err),
    );
  } finally {
    await destroyQuietly(driver, handle, log);
  }
  return { record, output: capture.text() };
}

async function destroyQuietly(driver: Runtime, handle: TaskHandle, log: Logger): Promise<void> {
  try {
    await driver.destroy(handle);
  } catch (err) {
    log.error(
      { err, sandboxId: handle.sandboxId },
      'destroying the sandbox failed; it may hold host resources',
    );
  }
}

async function pump(chunks: AsyncIterable<OutputChunk>, capture: OutputCapture): Promise<void> {
  for await (const chunk of chunks) capture.add(chunk);
}

interface Ended {
  exit: ExitStatus;
  timedOut: boolean;
  cancelled: boolean;
}

/** Waits for the job, stopping it (TERM, then KILL after a grace period) on timeout or cancel. */
export async function waitWithLimits(
  driver: Runtime,
  handle: TaskHandle,
  timeoutMs: number,
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
    }, STOP_GRACE_MS);
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
