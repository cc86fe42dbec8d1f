import { createHash } from 'node:crypto';
import type { JobRecord } from '../store/store.js';

/** W3C trace context ids, in lowercase hex: 32 digits for the trace, 16 for the span. */
export interface SpanIds {
  traceId: string;
  spanId: string;
}

/**
 * Ids derived from Boxcar's own ids, not drawn at random: any node, any process, and a node
 * restarted mid-job all name a job's span (and its pipeline's) the same way without storing
 * anything, so the span a job's TRACEPARENT names is the one recorded at its end.
 */
const digest = (kind: 'trace' | 'span', id: string, hexDigits: number) =>
  createHash('sha256').update(`${kind}:${id}`).digest('hex').slice(0, hexDigits);

/** A pipeline's span: the root of its trace. */
export function pipelineSpanIds(pipelineId: string): SpanIds {
  return { traceId: digest('trace', pipelineId, 32), spanId: digest('span', pipelineId, 16) };
}

/** A job's span: in its pipeline's trace, or the root of its own. */
export function jobSpanIds(job: Pick<JobRecord, 'id' | 'origin'>): SpanIds {
  return { traceId: digest('trace', job.origin.pipeline ?? job.id, 32), spanId: digest('span', job.id, 16) };
}

/** The W3C `traceparent` header naming a span; `sampled`: whether that span is recorded. */
export function traceparent(ids: SpanIds, sampled: boolean): string {
  return `00-${ids.traceId}-${ids.spanId}-${sampled ? '01' : '00'}`;
}
