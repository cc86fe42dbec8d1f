/**
 * The node's Prometheus metrics: the seed's scheduler_* names (7.1), Boxcar's own boxcar_*,
 * and the Node.js process defaults. Figures are observed once per finished job.
 */

import client from 'prom-client';
import { isTerminal } from '../jobs/states.js';
import type { VmAttributes } from '../jobs/handle.js';
import type { Decision } from '../jobs/decision.js';
import type { JobRecord } from '../store/store.js';
import { startPath } from './start-path.js';

const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });
// prom-client also sums each of these gauges (kept, by type) into one named with a counter's
// `_total` suffix, which Prometheus' own linter (`promtool check metrics`) refuses; a sum over
// the labelled gauge gives the same figure.
for (const name of ['nodejs_active_handles', 'nodejs_active_requests', 'nodejs_active_resources'])
  registry.removeSingleMetric(`${name}_total`);

const startup = new client.Histogram({
  name: 'scheduler_job_startup_duration_seconds',
  help: 'Time from a node taking a job to its process running',
  labelNames: ['runtime'],
  buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.125, 0.25, 0.5, 1, 2.5, 5],
  registers: [registry],
});
const memory = new client.Histogram({
  name: 'scheduler_job_memory_usage_bytes',
  help: 'Peak memory of a finished job',
  labelNames: ['runtime'],
  buckets: [2 ** 20, 2 ** 22, 2 ** 24, 2 ** 26, 2 ** 28, 2 ** 30, 2 ** 32, 2 ** 34],
  registers: [registry],
});
const cost = new client.Histogram({
  name: 'scheduler_job_cost_dollars',
  help: 'Cost of a finished job from its measured memory- and CPU-seconds (_sum: the total)',
  labelNames: ['runtime'],
  buckets: [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
  registers: [registry],
});
const queueWait = new client.Histogram({
  name: 'boxcar_job_queue_wait_seconds',
  help: 'Time a job waited in the queue before a node took it',
  labelNames: ['runtime'],
  buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800],
  registers: [registry],
});
const finished = new client.Counter({
  name: 'boxcar_jobs_finished_total',
  help: 'Jobs that reached a final state',
  labelNames: ['runtime', 'state'],
  registers: [registry],
});

// The seed's Firecracker metrics (7.1), one observation per microVM (each job has its own).
const restore = new client.Histogram({
  name: 'firecracker_snapshot_restore_duration_seconds',
  help: 'Time to restore a microVM from its snapshot, until its agent can take the job',
  buckets: [0.025, 0.05, 0.1, 0.125, 0.25, 0.5, 1, 2.5],
  registers: [registry],
});
const coldBoot = new client.Histogram({
  name: 'boxcar_vm_cold_boot_duration_seconds',
  help: 'Time to boot a microVM from scratch until its agent answered (no snapshot)',
  buckets: [0.1, 0.25, 0.5, 1, 2, 4, 8],
  registers: [registry],
});
const vmUptime = new client.Histogram({
  name: 'firecracker_vm_uptime_seconds',
  help: 'Lifetime of a microVM, from its start to the end of its job',
  buckets: [0.5, 1, 5, 30, 60, 300, 1800, 3600],
  registers: [registry],
});
const vmMemory = new client.Histogram({
  name: 'firecracker_vm_memory_used_bytes',
  help: 'Peak host memory of a microVM: its VMM process, guest memory included',
  buckets: [2 ** 24, 2 ** 25, 2 ** 26, 2 ** 27, 2 ** 28, 2 ** 29, 2 ** 30, 2 ** 32],
  registers: [registry],
});
const vmCpu = new client.Histogram({
  name: 'firecracker_vm_cpu_usage_percent',
  help: 'CPU a microVM used over its lifetime, in percent of one core',
  buckets: [1, 5, 10, 25, 50, 100, 200, 400],
  registers: [registry],
});

const sandboxStart = new client.Histogram({
  name: 'boxcar_sandbox_start_seconds',
  help: 'Time from a node taking a job to its process running, by how its sandbox started: cold, restored from a snapshot, or pooled',
  labelNames: ['runtime', 'start_path'],
  buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.125, 0.25, 0.5, 1, 2.5, 5],
  registers: [registry],
});
const costByTrust = new client.Counter({
  name: 'boxcar_job_cost_dollars_total',
  help: 'What finished jobs cost, by runtime and trust',
  labelNames: ['runtime', 'trust'],
  registers: [registry],
});
const imageBytes = new client.Counter({
  name: 'boxcar_image_bytes_total',
  help: "Image bytes jobs' pulls took, by where they came from: the registry, peer nodes, or this node's cache",
  labelNames: ['origin'],
  registers: [registry],
});

const admissions = counter(
  'boxcar_admissions_total',
  'Jobs admitted to run, made to wait, or refused, by reason (queue_full, limits, policy, runtime, secrets, quota, capacity)',
  ['outcome', 'reason'],
);
const fallbacks = counter(
  'boxcar_fallbacks_total',
  "Untrusted jobs routed to the policy's fallback instead of its primary runtime, by why",
  ['from', 'to', 'reason'],
);

export type AdmissionOutcome = 'admitted' | 'waiting' | 'refused';
export type AdmissionReason =
  'ok' | 'queue_full' | 'limits' | 'policy' | 'runtime' | 'secrets' | 'quota' | 'capacity';

/** A job was admitted, made to wait, or refused (at intake or by a scheduler). */
export function observeAdmission(outcome: AdmissionOutcome, reason: AdmissionReason): void {
  admissions.inc({ outcome, reason });
}

/** A job was accepted with this decision: counted when it fell back. */
export function observeDecision(d: Decision): void {
  if (d.fellBack) fallbacks.inc({ from: d.fellBack.from, to: d.runtime, reason: d.fellBack.reason });
}

/** Per-tenant series, only where the operator enables them (`observability.tenant_labels`): tenants are unbounded. */
let tenantFinished: client.Counter<'tenant' | 'state'> | undefined;
export function enableTenantLabels(): void {
  tenantFinished ??= counter(
    'boxcar_tenant_jobs_finished_total',
    'Jobs that reached a final state, by tenant',
    ['tenant', 'state'],
  );
}

/** A gauge with labels, read when scraped (from the store, the breakers…). */
export function labelledGauge<L extends string>(
  name: string,
  help: string,
  labelNames: readonly L[],
  collect: () => Promise<Array<[Partial<Record<L, string>>, number]>>,
): void {
  new client.Gauge({
    name,
    help,
    labelNames,
    registers: [registry],
    async collect() {
      this.reset();
      for (const [labels, value] of await collect()) this.set(labels, value);
    },
  });
}

function observeVm(job: JobRecord, vm: VmAttributes): void {
  (vm.restoredFromSnapshot ? restore : coldBoot).observe(vm.bootMs / 1000);
  const lifetimeMs = (job.startupMs ?? 0) + (job.durationMs ?? 0);
  if (lifetimeMs > 0) vmUptime.observe(lifetimeMs / 1000);
  if (job.peakMemoryBytes !== null) vmMemory.observe(job.peakMemoryBytes);
  if (job.cpuUsageNs !== null && lifetimeMs > 0) vmCpu.observe((job.cpuUsageNs / 1e6 / lifetimeMs) * 100);
}

/** Gauges read when scraped (running jobs, requested capacity) register here. */
export function gauge(name: string, help: string, collect: () => number): void {
  new client.Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(collect());
    },
  });
}

/**
 * A counter kept elsewhere as a plain number (a module that must not load this one, on the
 * CLI's path), read at each scrape.
 */
export function counterOf(name: string, help: string, read: () => number): void {
  let seen = 0;
  new client.Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const now = read();
      this.inc(now - seen);
      seen = now;
    },
  });
}

/** A counter other modules increment as events happen (firewall repairs, …); labels bounded. */
export function counter<L extends string = never>(
  name: string,
  help: string,
  labelNames: readonly L[] = [],
): client.Counter<L> {
  return new client.Counter({ name, help, labelNames, registers: [registry] });
}

export function observeFinishedJob(job: JobRecord): void {
  if (!isTerminal(job.state)) return; // requeued for another attempt
  const runtime = job.runtime;
  finished.inc({ runtime, state: job.state });
  tenantFinished?.inc({ tenant: job.tenant, state: job.state });
  const vm = job.handle?.attributes.vm;
  if (job.startupMs !== null) {
    startup.observe({ runtime }, job.startupMs / 1000);
    sandboxStart.observe({ runtime, start_path: startPath(vm) }, job.startupMs / 1000);
  }
  if (job.peakMemoryBytes !== null) memory.observe({ runtime }, job.peakMemoryBytes);
  if (job.costDollars !== null) {
    cost.observe({ runtime }, job.costDollars);
    costByTrust.inc({ runtime, trust: job.decision.trust }, job.costDollars);
  }
  const image = job.handle?.attributes.image;
  if (image) for (const [origin, bytes] of Object.entries(image.bytes)) imageBytes.inc({ origin }, bytes);
  if (job.startedAt !== null && job.startupMs !== null)
    queueWait.observe({ runtime }, Math.max(0, job.startedAt - job.startupMs - job.createdAt) / 1000);
  if (vm) observeVm(job, vm);
}

export async function metricsText(): Promise<{ contentType: string; text: string }> {
  return { contentType: registry.contentType, text: await registry.metrics() };
}
