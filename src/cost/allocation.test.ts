import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JobSpec } from '../jobs/spec.js';
import { costReport, idleCapacity, priceJob, type PricedJob } from './allocation.js';
import { SEED_PRICES } from './model.js';
import { dollars } from './money.js';

const MiB = 2 ** 20;
const HOUR = 3_600_000;
const job = (over: Partial<PricedJob> & { resources?: Record<string, unknown> }): PricedJob => ({
  spec: JobSpec.parse({ command: ['true'], resources: over.resources ?? { memory: '256Mi', cpus: '1' } }),
  peakMemoryBytes: 0,
  cpuUsageNs: 0,
  durationMs: HOUR,
  runtime: 'runc',
  tenant: 'team-a',
  origin: { via: 'cli', actor: 'operator:root' },
  decision: { trust: 'trusted', runtime: 'runc', fallback: null, reasons: [] },
  ...over,
});

test('a job pays for what it reserved or used, whichever is more: an idle default job is one seed slot-hour', () => {
  // 256 MiB for an hour at the seed's rate, and its CPU request.
  const idle = priceJob(job({ peakMemoryBytes: 16 * MiB }), 0, SEED_PRICES);
  const requestCores = job({}).spec.requests.cpuMillis / 1000;
  assert.equal(idle.memory, dollars((5000 / (1000 * 730)) * 1));
  assert.equal(idle.cpu, dollars((3000 / (1000 * 730)) * requestCores));
  assert.equal(idle.overhead, 0);
  const busy = priceJob(
    job({
      peakMemoryBytes: 512 * MiB,
      cpuUsageNs: 2 * 3600e9,
      resources: { memory: '1Gi', cpus: '2', requests: { memory: '256Mi' } },
    }),
    0,
    SEED_PRICES,
  );
  assert.equal(busy.memory, dollars((5000 / (1000 * 730)) * 2), 'its 512 MiB used, over a 256 MiB request');
  assert.equal(busy.cpu, dollars((3000 / (1000 * 730)) * 2), 'two core-hours used');
  assert.equal(busy.total, busy.memory + busy.cpu);
});

test('a runtime’s own memory is priced on its own line, never twice', () => {
  // A microVM's measure is its VMM process: 400 MiB, of which up to 224 MiB is the VMM and the guest kernel.
  const vm = priceJob(job({ peakMemoryBytes: 400 * MiB, runtime: 'firecracker' }), 224 * MiB, SEED_PRICES);
  const slot = 5000 / (1000 * 730);
  assert.equal(vm.overhead, dollars(slot * (224 / 256)));
  assert.equal(
    vm.memory,
    dollars(slot * (176 / 256) > slot ? slot * (176 / 256) : slot),
    'the request, as more',
  );
  // A measure smaller than the declared share: the share is what was there.
  const small = priceJob(job({ peakMemoryBytes: 100 * MiB }), 224 * MiB, SEED_PRICES);
  assert.equal(small.overhead, dollars(slot * (100 / 256)));
});

test('reports sum by tenant, runtime or trust; the isolation premium is what untrusted jobs pay above runc', () => {
  const jobs = [
    job({ tenant: 'a', peakMemoryBytes: 10 * MiB }),
    job({ tenant: 'a', peakMemoryBytes: 10 * MiB }),
    job({
      tenant: 'b',
      runtime: 'gvisor',
      peakMemoryBytes: 300 * MiB,
      decision: { trust: 'untrusted', runtime: 'gvisor', fallback: null, reasons: [] },
    }),
  ];
  const overhead = (j: PricedJob) => (j.runtime === 'gvisor' ? 64 * MiB : 0);
  const byTenant = costReport(jobs, 'tenant', overhead, SEED_PRICES);
  assert.deepEqual(
    byTenant.map((l) => [l.key, l.jobs]),
    [
      ['a', 2],
      ['b', 1],
    ],
  );
  const byTrust = costReport(jobs, 'trust', overhead, SEED_PRICES);
  const untrusted = byTrust.find((l) => l.key === 'untrusted');
  assert.ok(untrusted && untrusted.isolationPremium === untrusted.overhead && untrusted.overhead > 0);
  assert.equal(byTrust.find((l) => l.key === 'trusted')?.isolationPremium, 0);
  const total = (ls: typeof byTenant) => ls.reduce((s, l) => s + l.total, 0);
  assert.equal(
    total(byTenant),
    total(costReport(jobs, 'runtime', overhead, SEED_PRICES)),
    'every view sums alike',
  );
});

test('idle capacity: the node’s capacity over the window, less what its jobs were allocated, from its first job', () => {
  const to = 10 * HOUR;
  const ran = [
    { ...job({ peakMemoryBytes: 16 * MiB }), createdAt: 8 * HOUR },
    { ...job({ peakMemoryBytes: 16 * MiB }), createdAt: 9 * HOUR },
  ];
  const capacity = { memoryBytes: 4 * 2 ** 30, cpuMillis: 2000 };
  const r = idleCapacity(ran, capacity, { from: 0, to }, () => 0, SEED_PRICES);
  assert.equal(r.from, 8 * HOUR, 'a node is not idle before its first job');
  const perHour = 4 * SEED_PRICES.dollarsPerGiBHour + 2 * SEED_PRICES.dollarsPerCoreHour;
  assert.equal(r.capacity, dollars(perHour * 2));
  const allocated = ran.reduce((s, j) => s + priceJob(j, 0, SEED_PRICES).total, 0);
  assert.ok(Math.abs(r.allocated - allocated) <= 1, 'summed before rounding, as the report does');
  assert.ok(Math.abs(r.idle - (r.capacity - r.allocated)) <= 1, 'rounded once, from the dollars');
  assert.equal(
    idleCapacity([], capacity, { from: 0, to }, () => 0, SEED_PRICES).idle,
    0,
    'no jobs: no window',
  );
});
