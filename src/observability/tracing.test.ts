import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { JobSpec, RUNTIME_NAMES } from '../jobs/spec.js';
import { PipelineSpec, planOf } from '../pipelines/plan.js';
import { executeJob } from '../runner/execute.js';
import { decideLocally, operatorOrigin } from '../runner/local.js';
import { MockHost, MockRuntime } from '../runtimes/mock/driver.js';
import { RuntimeRegistry } from '../runtimes/registry.js';
import type { SandboxRequest } from '../runtimes/runtime.js';
import { advancePipeline } from '../scheduler/pipelines.js';
import type { JobRecord, PipelineRecord } from '../store/store.js';
import { testBoxcar } from '../testing/harness.js';
import { silentLogger } from './logger.js';
import { otelRecorder, otlpRecorder } from './otel-spans.js';
import { jobSpanIds, pipelineSpanIds } from './trace-ids.js';
import { otlpTracesUrl } from './tracing-setup.js';
import { setSpanRecorder } from './tracing.js';

/**
 * Spans of jobs and pipelines on the mock runtime: their names and CI/CD attributes, the tree
 * (pipeline → job → sandbox start), the TRACEPARENT each job gets, nothing recorded without an
 * endpoint, and a real OTLP/HTTP export to a local server.
 */
type Box = Awaited<ReturnType<typeof testBoxcar>>;

/** The environment each sandbox was prepared with, by job id. */
const envs = new Map<string, Record<string, string>>();

class RecordingRuntime extends MockRuntime {
  override prepare(req: SandboxRequest) {
    envs.set(req.jobId, req.spec.env);
    return super.prepare(req);
  }
}

let box: Box;
before(async () => {
  const host = new MockHost();
  box = await testBoxcar({
    runtimes: () => new RuntimeRegistry(RUNTIME_NAMES.map((n) => new RecordingRuntime(n, host))),
  });
});
after(async () => {
  setSpanRecorder(undefined);
  await box.cleanup();
});

const TRUSTED = { source: 'internal_repo', user_group: 'internal_team' };

async function runSpec(spec: JobSpec, origin = operatorOrigin(), id: string = randomUUID()) {
  const decision = await decideLocally(box, id, spec);
  const job = await box.store.createJob({ id, tenant: 't', spec, decision, origin, owner: null });
  return (await executeJob(box, job)).record;
}

const runJob = (fields: Record<string, unknown>) =>
  runSpec(JobSpec.parse({ ...TRUSTED, command: ['job'], ...fields }));

/** A pipeline run to its end, each job on this process as `boxcar pipeline` runs them. */
async function runPipeline(raw: unknown): Promise<{ p: PipelineRecord; jobs: JobRecord[] }> {
  const plan = planOf(PipelineSpec.parse(raw));
  const created = await box.store.createPipeline({
    id: randomUUID(),
    tenant: 't',
    name: plan.name,
    plan,
    origin: operatorOrigin(),
    createdAt: Date.now(),
  });
  const jobs: JobRecord[] = [];
  const started = new Set<string>(); // an advance may see a job before its record is written
  for (;;) {
    const ran: Promise<void>[] = [];
    const p = await advancePipeline(box.store, created.id, async (q, jobId, spec) => {
      if (started.has(jobId)) return;
      started.add(jobId);
      ran.push(runSpec(spec, { ...q.origin, pipeline: q.id }, jobId).then((r) => void jobs.push(r)));
    });
    await Promise.all(ran);
    if (p && p.state !== 'running') return { p, jobs };
  }
}

function recording() {
  const exporter = new InMemorySpanExporter();
  setSpanRecorder(
    otelRecorder(new SimpleSpanProcessor(exporter), {
      log: silentLogger(),
      publicUrl: 'https://ci.example',
      pipelineOf: (id) => box.store.getPipeline(id),
    }),
  );
  return exporter;
}

const named = (spans: ReadableSpan[], name: string) => {
  const found = spans.filter((s) => s.name === name);
  assert.equal(found.length, 1, `one span named ${name}: ${spans.map((s) => s.name).join(', ')}`);
  return found[0] as ReadableSpan;
};

describe('traces', () => {
  test('a pipeline: one trace, its run, each job a task run under it, each sandbox start under its job', async () => {
    const exporter = recording();
    const { p, jobs } = await runPipeline({
      name: 'ci',
      jobs: [
        { ...TRUSTED, name: 'build', stage: 'build', command: ['job'] },
        { ...TRUSTED, name: 'unit', needs: ['build'], command: ['job'], env: { MOCK_EXIT: '3' } },
      ],
    });
    assert.equal(p.state, 'failed');
    const spans = exporter.getFinishedSpans();
    const pipelineIds = pipelineSpanIds(p.id);

    const run = named(spans, 'RUN ci');
    assert.equal(run.kind, SpanKind.SERVER);
    assert.deepEqual({ traceId: run.spanContext().traceId, spanId: run.spanContext().spanId }, pipelineIds);
    assert.equal(run.parentSpanContext, undefined);
    assert.deepEqual(run.attributes, {
      'cicd.pipeline.name': 'ci',
      'cicd.pipeline.run.id': p.id,
      'cicd.pipeline.action.name': 'RUN',
      'cicd.pipeline.result': 'failure',
      'error.type': 'failed',
      'boxcar.tenant': 't',
    });
    assert.equal(run.status.code, SpanStatusCode.ERROR);

    for (const job of jobs) {
      const span = named(spans, job.name);
      const ids = jobSpanIds(job);
      assert.equal(span.kind, SpanKind.INTERNAL);
      assert.equal(span.spanContext().traceId, pipelineIds.traceId);
      assert.equal(span.spanContext().spanId, ids.spanId);
      assert.equal(span.parentSpanContext?.spanId, pipelineIds.spanId);
      assert.equal(span.attributes['cicd.pipeline.task.name'], job.name);
      assert.equal(span.attributes['cicd.pipeline.task.run.id'], job.id);
      assert.equal(span.attributes['cicd.pipeline.run.id'], p.id);
      assert.equal(
        span.attributes['cicd.pipeline.task.run.url.full'],
        `https://ci.example/v1/jobs/${job.id}/logs`,
      );
      assert.equal(span.attributes['boxcar.runtime'], job.runtime);
      // The job's TRACEPARENT names this very span, sampled.
      assert.equal(envs.get(job.id)?.TRACEPARENT, `00-${pipelineIds.traceId}-${ids.spanId}-01`);

      const start = spans.find(
        (s) => s.name === 'sandbox start' && s.parentSpanContext?.spanId === ids.spanId,
      );
      assert.ok(start, `${job.name}: a sandbox start span under it`);
      assert.equal(start.attributes['boxcar.runtime'], job.runtime);
      assert.equal(start.attributes['boxcar.sandbox.start_path'], 'cold');
      assert.ok(
        start.endTime[0] * 1e3 + start.endTime[1] / 1e6 <= span.endTime[0] * 1e3 + span.endTime[1] / 1e6,
      );
    }
    const unit = named(spans, 'unit');
    assert.equal(unit.attributes['cicd.pipeline.task.run.result'], 'failure');
    assert.equal(unit.attributes['cicd.pipeline.task.type'], 'test'); // its stage (the default one)
    assert.equal(unit.attributes['process.exit.code'], 3);
    assert.equal(unit.attributes['error.type'], 'failed');
    assert.equal(unit.status.code, SpanStatusCode.ERROR);
    const build = named(spans, 'build');
    assert.equal(build.attributes['cicd.pipeline.task.run.result'], 'success');
    assert.equal(build.attributes['cicd.pipeline.task.type'], 'build');
    assert.equal(build.attributes['error.type'], undefined);
    assert.equal(build.status.code, SpanStatusCode.UNSET);
  });

  test('a job of its own is the root of its trace; one refused before it ran has a span, no sandbox start', async () => {
    const exporter = recording();
    const ran = await runJob({ name: 'alone' });
    const refused = await runJob({ name: 'refused', env: { MOCK_BAD_INPUT: '1' } });
    assert.equal(refused.state, 'error');
    const spans = exporter.getFinishedSpans();
    const alone = named(spans, 'alone');
    assert.equal(alone.parentSpanContext, undefined);
    assert.deepEqual(
      { traceId: alone.spanContext().traceId, spanId: alone.spanContext().spanId },
      jobSpanIds(ran),
    );
    assert.equal(alone.attributes['cicd.pipeline.run.id'], undefined);
    const bad = named(spans, 'refused');
    assert.equal(bad.attributes['cicd.pipeline.task.run.result'], 'error');
    assert.equal(bad.status.code, SpanStatusCode.ERROR);
    assert.equal(spans.filter((s) => s.parentSpanContext?.spanId === bad.spanContext().spanId).length, 0);
  });

  test('without an endpoint: nothing recorded, TRACEPARENT still set, not sampled', async () => {
    setSpanRecorder(undefined);
    const job = await runJob({ name: 'untraced' });
    const ids = jobSpanIds(job);
    assert.equal(envs.get(job.id)?.TRACEPARENT, `00-${ids.traceId}-${ids.spanId}-00`);
    assert.equal(otlpTracesUrl(undefined, {}), undefined);
  });

  test('the endpoint: the config, else the OTEL_EXPORTER_OTLP_* variables; OTEL_SDK_DISABLED wins', () => {
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://env:4318/' };
    assert.equal(otlpTracesUrl('http://cfg:4318/', env), 'http://cfg:4318/v1/traces');
    assert.equal(otlpTracesUrl(undefined, env), 'http://env:4318/v1/traces');
    assert.equal(
      otlpTracesUrl(undefined, { ...env, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:1/x' }),
      'http://t:1/x',
    );
    assert.equal(otlpTracesUrl('http://cfg:4318', { OTEL_SDK_DISABLED: 'true' }), undefined);
  });

  test('OTLP/HTTP: a local collector receives a valid export of the spans', async () => {
    const requests: Array<{ req: IncomingMessage; body: string }> = [];
    const server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        requests.push({ req, body });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = otlpTracesUrl(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, {}) as string;
      const recorder = otlpRecorder(url, { log: silentLogger() });
      setSpanRecorder(recorder);
      const job = await runJob({ name: 'exported' });
      await recorder.shutdown();
      setSpanRecorder(undefined);

      assert.equal(requests.length, 1);
      const [{ req, body }] = requests as [{ req: IncomingMessage; body: string }];
      assert.equal(req.method, 'POST');
      assert.equal(req.url, '/v1/traces');
      assert.match(req.headers['content-type'] ?? '', /^application\/json/);
      // OTLP/JSON (opentelemetry-proto's JSON mapping): ids in hex, times as decimal strings.
      const exported = JSON.parse(body) as {
        resourceSpans: Array<{
          resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> };
          scopeSpans: Array<{ scope: { name: string }; spans: Array<Record<string, unknown>> }>;
        }>;
      };
      const [rs] = exported.resourceSpans;
      assert.ok(rs);
      assert.ok(
        rs.resource.attributes.some((a) => a.key === 'service.name' && a.value.stringValue === 'boxcar'),
      );
      const spans = rs.scopeSpans.flatMap((s) => s.spans);
      assert.equal(rs.scopeSpans[0]?.scope.name, 'boxcar');
      const ids = jobSpanIds(job);
      const span = spans.find((s) => s.name === 'exported');
      assert.ok(span, JSON.stringify(spans));
      assert.equal(span.traceId, ids.traceId);
      assert.equal(span.spanId, ids.spanId);
      assert.equal(span.kind, 1); // SPAN_KIND_INTERNAL
      for (const s of spans) {
        assert.match(String(s.traceId), /^[0-9a-f]{32}$/);
        assert.match(String(s.spanId), /^[0-9a-f]{16}$/);
        assert.match(String(s.startTimeUnixNano), /^\d+$/);
        assert.ok(BigInt(String(s.endTimeUnixNano)) >= BigInt(String(s.startTimeUnixNano)));
      }
      const start = spans.find((s) => s.name === 'sandbox start');
      assert.equal(start?.parentSpanId, ids.spanId);
    } finally {
      server.close();
    }
  });
});
