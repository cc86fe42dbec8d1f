import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JobSpec } from '../jobs/spec.js';
import type { TaskHandle } from '../jobs/handle.js';
import type { JobRecord } from '../store/store.js';
import { metricsText, observeFinishedJob } from './metrics.js';

/** A finished job as the store returns it, with the fields the metrics read. */
function finished(over: {
  runtime: JobRecord['runtime'];
  trust: 'trusted' | 'untrusted';
  handle: Partial<TaskHandle>;
}) {
  return {
    id: 'j',
    tenant: 't',
    name: 'j',
    state: 'succeeded',
    runtime: over.runtime,
    spec: JobSpec.parse({ command: ['true'] }),
    decision: { trust: over.trust, runtime: over.runtime, fallback: null, reasons: [] },
    origin: { via: 'cli', actor: 'operator:root' },
    handle: over.handle as TaskHandle,
    createdAt: 1000,
    startedAt: 2000,
    finishedAt: 3000,
    startupMs: 40,
    durationMs: 1000,
    peakMemoryBytes: 2 ** 20,
    cpuUsageNs: 1e6,
    costDollars: 0.25,
  } as unknown as JobRecord;
}

test('a finished job feeds start time by start path, cost by trust and image bytes by origin', async () => {
  const vm = { vmm: 'qemu', accel: 'tcg', restoredFromSnapshot: true, bootMs: 70, fromWarmPool: true };
  observeFinishedJob(
    finished({ runtime: 'firecracker', trust: 'untrusted', handle: { attributes: { vm } } }),
  );
  const image = { ref: 'r', digest: 'd', pullMs: 5, bytes: { origin: 1000, peers: 300, cache: 7 } };
  observeFinishedJob(finished({ runtime: 'runc', trust: 'trusted', handle: { attributes: { image } } }));
  const { text } = await metricsText();
  assert.match(text, /boxcar_sandbox_start_seconds_count\{runtime="firecracker",start_path="pooled"\} 1/);
  assert.match(text, /boxcar_sandbox_start_seconds_count\{runtime="runc",start_path="cold"\} 1/);
  assert.match(text, /boxcar_job_cost_dollars_total\{runtime="firecracker",trust="untrusted"\} 0\.25/);
  assert.match(text, /boxcar_image_bytes_total\{origin="origin"\} 1000/);
  assert.match(text, /boxcar_image_bytes_total\{origin="peers"\} 300/);
  assert.match(text, /boxcar_image_bytes_total\{origin="cache"\} 7/);
  assert.doesNotMatch(text, /job_id|="j"/, 'no job ids in labels');
});
