import type { PipelineRecord } from '../store/store.js';
import type { Logger } from './logger.js';
import { setSpanRecorder, type SpanRecorder } from './tracing.js';

/**
 * Where spans go: the config's `observability.otlp_endpoint`, else the standard
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the traces URL itself) or OTEL_EXPORTER_OTLP_ENDPOINT
 * (a base URL, as the config's). Nowhere when none is set, or OTEL_SDK_DISABLED=true.
 */
export function otlpTracesUrl(configured: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return undefined;
  const traces = (base: string) => `${base.replace(/\/+$/, '')}/v1/traces`;
  if (configured) return traces(configured);
  if (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  return env.OTEL_EXPORTER_OTLP_ENDPOINT ? traces(env.OTEL_EXPORTER_OTLP_ENDPOINT) : undefined;
}

/**
 * Starts sending spans over OTLP/HTTP when an endpoint is configured, loading OpenTelemetry's
 * SDK only then (the CLI stays as cheap without it). Returns the recorder to shut down at exit
 * (it sends what is buffered), or undefined.
 */
export async function startTracing(
  configured: string | undefined,
  log: Logger,
  opts: {
    publicUrl?: string;
    pipelineOf?: (id: string) => Promise<PipelineRecord | undefined>;
    env?: NodeJS.ProcessEnv;
  } = {},
): Promise<SpanRecorder | undefined> {
  const url = otlpTracesUrl(configured, opts.env ?? process.env);
  if (!url) return undefined;
  const { otlpRecorder } = await import('./otel-spans.js');
  const recorder = otlpRecorder(url, { log, publicUrl: opts.publicUrl, pipelineOf: opts.pipelineOf });
  setSpanRecorder(recorder);
  return recorder;
}
