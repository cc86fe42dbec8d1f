import {
  diag,
  DiagLogLevel,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  trace,
  type Attributes,
  type Context,
  type Tracer,
} from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  RandomIdGenerator,
  type IdGenerator,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { ATTR_ERROR_TYPE, ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { JobState } from '../jobs/states.js';
import { errorMessage } from '../lib/errors.js';
import type { Logger } from './logger.js';
import type { JobRecord, PipelineRecord } from '../store/store.js';
import {
  ATTR_CICD_PIPELINE_ACTION_NAME,
  ATTR_CICD_PIPELINE_NAME,
  ATTR_CICD_PIPELINE_RESULT,
  ATTR_CICD_PIPELINE_RUN_ID,
  ATTR_CICD_PIPELINE_TASK_NAME,
  ATTR_CICD_PIPELINE_TASK_RUN_ID,
  ATTR_CICD_PIPELINE_TASK_RUN_RESULT,
  ATTR_CICD_PIPELINE_TASK_RUN_URL_FULL,
  ATTR_CICD_PIPELINE_TASK_TYPE,
  ATTR_CICD_WORKER_ID,
  ATTR_PROCESS_EXIT_CODE,
  CICD_PIPELINE_ACTION_NAME_VALUE_RUN,
  CICD_PIPELINE_TASK_TYPE_VALUES,
  CICD_RESULT,
  type CicdResult,
} from './cicd-semconv.js';
import { startPath } from './start-path.js';
import { jobSpanIds, pipelineSpanIds, type SpanIds } from './trace-ids.js';
import type { SpanRecorder } from './tracing.js';

/**
 * Random ids, except while a span whose ids Boxcar derives (trace-ids.ts) is started: the
 * SDK draws a span's ids itself, and this is its one hook for choosing them. Spans start
 * synchronously, so the preset cannot leak to another span.
 */
class DerivedIds implements IdGenerator {
  private readonly random = new RandomIdGenerator();
  private preset: SpanIds | undefined;

  generateTraceId(): string {
    return this.preset?.traceId ?? this.random.generateTraceId();
  }

  generateSpanId(): string {
    return this.preset?.spanId ?? this.random.generateSpanId();
  }

  with<T>(ids: SpanIds, start: () => T): T {
    this.preset = ids;
    try {
      return start();
    } finally {
      this.preset = undefined;
    }
  }
}

const TASK_RESULT: Record<JobState, CicdResult | undefined> = {
  queued: undefined,
  starting: undefined,
  running: undefined,
  succeeded: CICD_RESULT.success,
  failed: CICD_RESULT.failure,
  oom: CICD_RESULT.failure,
  timeout: CICD_RESULT.timeout,
  cancelled: CICD_RESULT.cancellation,
  error: CICD_RESULT.error,
};

const PIPELINE_RESULT: Record<PipelineRecord['state'], CicdResult | undefined> = {
  running: undefined,
  succeeded: CICD_RESULT.success,
  failed: CICD_RESULT.failure,
  cancelled: CICD_RESULT.cancellation,
};

/** A span elsewhere (a pipeline's, a job's) as the parent of one started here. */
const under = (ids: SpanIds): Context =>
  trace.setSpanContext(ROOT_CONTEXT, { ...ids, traceFlags: TraceFlags.SAMPLED, isRemote: true });

/**
 * The `error.type` of a run that failed (the Boxcar state it ended in: low cardinality), for
 * the span's attributes and status (OpenTelemetry's "Recording errors"); a cancel is no error.
 */
function errorTypeOf(result: CicdResult | undefined, state: string): string | undefined {
  const failed =
    result === CICD_RESULT.failure || result === CICD_RESULT.error || result === CICD_RESULT.timeout;
  return failed ? state : undefined;
}

export interface OtelOptions {
  log: Logger;
  /** Where each job's page is (`<public_url>/v1/jobs/ID/logs`), for cicd.pipeline.task.run.url.full. */
  publicUrl?: string;
  /** Reads a pipeline, for the stage of its jobs (cicd.pipeline.task.type). */
  pipelineOf?: (id: string) => Promise<PipelineRecord | undefined>;
}

/**
 * Spans of CI/CD's semantic conventions, made when a job or pipeline ends, with the times it
 * recorded: a pipeline run (SERVER, `RUN <pipeline>`), each job a task run (INTERNAL, named
 * after the job) under it, and each job's sandbox start (runtime, start path) under the job.
 */
export function otelRecorder(processor: SpanProcessor, opts: OtelOptions): SpanRecorder {
  const ids = new DerivedIds();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: 'boxcar' }),
    idGenerator: ids,
    spanProcessors: [processor],
  });
  const tracer: Tracer = provider.getTracer('boxcar');
  /** The job's stage, when it is one of the task types; a pipeline that cannot be read leaves it out. */
  const taskType = async (job: JobRecord): Promise<Attributes> => {
    if (!job.origin.pipeline || !opts.pipelineOf) return {};
    try {
      const stage = (await opts.pipelineOf(job.origin.pipeline))?.plan.jobs.find(
        (j) => j.name === job.name,
      )?.stage;
      return stage && CICD_PIPELINE_TASK_TYPE_VALUES.includes(stage)
        ? { [ATTR_CICD_PIPELINE_TASK_TYPE]: stage }
        : {};
    } catch (err) {
      opts.log.warn({ err: errorMessage(err), job_id: job.id }, "the job's span goes without its stage");
      return {};
    }
  };
  return {
    async jobEnded(job, takenAt) {
      const type = await taskType(job);
      const own = jobSpanIds(job);
      const started = job.startedAt !== null && job.startupMs !== null;
      const startTime = started ? (job.startedAt as number) - (job.startupMs as number) : takenAt;
      const result = TASK_RESULT[job.state];
      const errorType = errorTypeOf(result, job.state);
      const span = ids.with(own, () =>
        tracer.startSpan(
          job.name,
          {
            kind: SpanKind.INTERNAL,
            startTime,
            attributes: {
              [ATTR_CICD_PIPELINE_TASK_NAME]: job.name,
              [ATTR_CICD_PIPELINE_TASK_RUN_ID]: job.id,
              ...type,
              ...(opts.publicUrl
                ? { [ATTR_CICD_PIPELINE_TASK_RUN_URL_FULL]: `${opts.publicUrl}/v1/jobs/${job.id}/logs` }
                : {}),
              ...(job.origin.pipeline ? { [ATTR_CICD_PIPELINE_RUN_ID]: job.origin.pipeline } : {}),
              ...(job.owner ? { [ATTR_CICD_WORKER_ID]: job.owner } : {}),
              'boxcar.tenant': job.tenant,
              'boxcar.runtime': job.runtime,
              'boxcar.trust': job.decision.trust,
            },
          },
          job.origin.pipeline ? under(pipelineSpanIds(job.origin.pipeline)) : ROOT_CONTEXT,
        ),
      );
      if (started) {
        tracer
          .startSpan(
            'sandbox start',
            {
              kind: SpanKind.INTERNAL,
              startTime,
              attributes: {
                'boxcar.runtime': job.runtime,
                'boxcar.sandbox.start_path': startPath(job.handle?.attributes.vm),
              },
            },
            under(own),
          )
          .end(job.startedAt as number);
      }
      span.setAttributes({
        ...(result ? { [ATTR_CICD_PIPELINE_TASK_RUN_RESULT]: result } : {}),
        ...(job.exitCode !== null ? { [ATTR_PROCESS_EXIT_CODE]: job.exitCode } : {}),
        ...(errorType ? { [ATTR_ERROR_TYPE]: errorType } : {}),
      });
      if (errorType) span.setStatus({ code: SpanStatusCode.ERROR, message: job.error ?? job.state });
      span.end(job.finishedAt ?? Date.now());
    },

    pipelineEnded(p) {
      const result = PIPELINE_RESULT[p.state];
      const errorType = errorTypeOf(result, p.state);
      const span = ids.with(pipelineSpanIds(p.id), () =>
        tracer.startSpan(
          `${CICD_PIPELINE_ACTION_NAME_VALUE_RUN} ${p.name}`,
          {
            kind: SpanKind.SERVER,
            startTime: p.createdAt,
            attributes: {
              [ATTR_CICD_PIPELINE_NAME]: p.name,
              [ATTR_CICD_PIPELINE_RUN_ID]: p.id,
              [ATTR_CICD_PIPELINE_ACTION_NAME]: CICD_PIPELINE_ACTION_NAME_VALUE_RUN,
              ...(result ? { [ATTR_CICD_PIPELINE_RESULT]: result } : {}),
              ...(errorType ? { [ATTR_ERROR_TYPE]: errorType } : {}),
              'boxcar.tenant': p.tenant,
            },
          },
          ROOT_CONTEXT,
        ),
      );
      if (errorType) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end(p.finishedAt ?? Date.now());
    },

    shutdown: () => provider.shutdown(),
  };
}

/**
 * Spans in batches to an OTLP/HTTP collector (`url`: its traces endpoint, …/v1/traces). The
 * SDK says why an export failed only to its diagnostic logger: that goes to the service log.
 */
export function otlpRecorder(url: string, opts: OtelOptions): SpanRecorder {
  const { log } = opts;
  const say =
    (level: 'error' | 'warn') =>
    (msg: string, ...args: unknown[]) =>
      log[level]({ otlp: url, detail: args.map(errorMessage) }, `opentelemetry: ${msg}`);
  const quiet = () => undefined;
  diag.setLogger(
    { error: say('error'), warn: say('warn'), info: quiet, debug: quiet, verbose: quiet },
    DiagLogLevel.WARN,
  );
  return otelRecorder(new BatchSpanProcessor(new OTLPTraceExporter({ url })), opts);
}
