import { isTerminal } from '../jobs/states.js';
import type { JobSpec } from '../jobs/spec.js';
import type { JobRecord, PipelineRecord } from '../store/store.js';
import { jobSpanIds, traceparent } from './trace-ids.js';

/**
 * Where the spans of finished jobs and pipelines go: OpenTelemetry's SDK (otel-spans.ts), only
 * loaded when an OTLP endpoint is configured. Without one, nothing is recorded and this module,
 * on every job's path, costs a hash per job and loads no OpenTelemetry code.
 */
export interface SpanRecorder {
  /** A job ended in this process; `takenAt`: when this process took it, if it never started. */
  jobEnded(job: JobRecord, takenAt: number): Promise<void>;
  pipelineEnded(pipeline: PipelineRecord): void;
  /** Sends what is still buffered, then stops. */
  shutdown(): Promise<void>;
}

let recorder: SpanRecorder | undefined;

/** Spans go to `r` from now on (undefined: nowhere). */
export function setSpanRecorder(r: SpanRecorder | undefined): void {
  recorder = r;
}

/**
 * The job's spec with TRACEPARENT, the W3C trace context of the job's span, so that tools the
 * job runs can put their own spans under it. It replaces one the spec sets: that could only
 * name a span of some other run.
 */
export function withTraceparent(job: JobRecord, spec: JobSpec): JobSpec {
  return { ...spec, env: { ...spec.env, TRACEPARENT: traceparent(jobSpanIds(job), recorder !== undefined) } };
}

/**
 * Runs a job (or follows it to its end) and records its span once it ends here. Not when it
 * goes back to the queue (its next attempt's end will), nor when it moved on to another
 * node's claim (that node records it).
 */
export async function traceJob<T extends { record: JobRecord }>(
  job: JobRecord,
  run: () => Promise<T>,
): Promise<T> {
  const takenAt = Date.now();
  const result = await run();
  const end = result.record;
  if (recorder && isTerminal(end.state) && end.owner === job.owner && end.attempts === job.attempts)
    await recorder.jobEnded(end, takenAt);
  return result;
}

/** A pipeline reached its final state (recorded by the one writer that moved it there). */
export function pipelineEnded(p: PipelineRecord): void {
  if (p.state !== 'running') recorder?.pipelineEnded(p);
}
