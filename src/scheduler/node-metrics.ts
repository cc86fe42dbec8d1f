import type { Boxcar } from '../boxcar.js';
import { RUNTIME_NAMES } from '../jobs/spec.js';
import { counterOf, enableTenantLabels, gauge, labelledGauge } from '../observability/metrics.js';
import { firewallRepairs } from '../runtimes/shared/firewall.js';
import { RuntimeHealthBook } from '../policy/health.js';
import type { Scheduler } from './scheduler.js';

const BREAKER_STATE = { closed: 0, 'half-open': 1, open: 2 } as const;

/** A serving node's gauges, read when scraped: its jobs, the queue, the breakers. */
export function registerNodeMetrics(box: Boxcar, scheduler: Scheduler): void {
  gauge('boxcar_jobs_running', 'Jobs this node runs now', () => scheduler.running);
  gauge(
    'boxcar_node_requested_memory_bytes',
    'Memory requested by the jobs this node runs',
    () => scheduler.placement.used.requestsMemoryBytes,
  );
  labelledGauge(
    'boxcar_queue_depth',
    'Queued jobs by the runtime they were routed to, across every node of the store',
    ['runtime'],
    async () => {
      const queued = await box.store.queuedByRuntime();
      return RUNTIME_NAMES.map((runtime) => [{ runtime }, queued.get(runtime) ?? 0]);
    },
  );
  labelledGauge(
    'boxcar_breaker_state',
    "Each runtime's fallback breaker, from recorded starts: 0 closed, 1 half-open, 2 open",
    ['runtime'],
    async () => {
      const book = await new RuntimeHealthBook(box.policy, (r) => box.runtimes.fingerprint(r)).loadHistory(
        box.store,
      );
      const views = await book.views(Date.now());
      return RUNTIME_NAMES.map((runtime) => [{ runtime }, BREAKER_STATE[views(runtime).breaker]]);
    },
  );
  const idle = async () =>
    Object.entries(await box.runtimes.status()).map(([runtime, status]) => {
      const pool = status.warmPool as { idle?: Array<{ memoryBytes?: number }> } | undefined;
      return { runtime, idle: pool?.idle ?? [] };
    });
  labelledGauge(
    'boxcar_warm_pool_idle',
    'Idle sandboxes in the warm pools, made ahead for jobs',
    ['runtime'],
    async () => (await idle()).map(({ runtime, idle }) => [{ runtime }, idle.length]),
  );
  labelledGauge(
    'boxcar_warm_pool_idle_memory_bytes',
    "Host memory the warm pools' idle sandboxes hold",
    ['runtime'],
    async () =>
      (await idle()).map(({ runtime, idle }) => [
        { runtime },
        idle.reduce((n, m) => n + (m.memoryBytes ?? 0), 0),
      ]),
  );
  counterOf(
    'boxcar_firewall_repairs_total',
    'Times a network job found Boxcar’s nftables table missing or changed and reinstalled it',
    firewallRepairs,
  );
  if (box.config.observability.tenant_labels) enableTenantLabels();
}
