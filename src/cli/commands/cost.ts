import { Option, type Command } from 'commander';
import { openBoxcar, type BoxcarOptions } from '../../boxcar.js';
import { migrationRoi, scenarioTable, SEED_INPUTS, type ScenarioInputs } from '../../cost/scenarios.js';
import { formatMoney as money } from '../../cost/money.js';
import { JobSpec } from '../../jobs/spec.js';
import { parseDurationMs } from '../../lib/quantity.js';
import {
  COST_GROUPS,
  costReport,
  finishedJobs,
  idleCapacity,
  type CostGroup,
  type CostLine,
  type PricedJob,
} from '../../cost/allocation.js';
import { nodeCapacity } from '../../scheduler/capacity.js';
import { ownedHere } from '../../lib/owner.js';
import { UserError } from '../../lib/errors.js';
import type { Logger } from '../../observability/logger.js';
import { runLocalJob } from '../../runner/local.js';
import { formatTable } from '../table.js';

type PerJob = ScenarioInputs['jobMiB'];
type Measured = { [R in keyof PerJob]: { mib: number; how: string } };

/** The scenario table and the migration's ROI, as text. */
function report(title: string, inputs: ScenarioInputs): string {
  const rows = scenarioTable(inputs);
  const roi = migrationRoi(rows, inputs.migration);
  const pct = (f: number) => `${f >= 0 ? '+' : ''}${(f * 100).toFixed(2)}%`;
  const m = inputs.jobMiB;
  return [
    `${title}: ${inputs.concurrentJobs.toLocaleString('en-US')} concurrent jobs, ${inputs.untrustedShare * 100}% untrusted, ${money(inputs.mibMonth)} per MiB a job holds a month; memory per job: runc ${m.runc} MiB, gVisor ${m.gvisor} MiB, Firecracker ${m.firecracker} MiB`,
    formatTable(
      ['MIX', 'MEMORY/MONTH', 'CPU/MONTH', 'TOTAL/MONTH', 'VS ALL RUNC'],
      rows.map((r) => [r.name, money(r.memory), money(r.cpu), money(r.total), pct(r.vsBaseline)]),
    ),
    roi.annualSavings > 0
      ? `Firecracker migration: ${money(inputs.migration)} once, saves ${money(roi.annualSavings)} a year, pays back in ${roi.paybackYears.toFixed(2)} years, 3-year ROI ${(roi.roi3Years * 100).toFixed(1)}%`
      : `Firecracker migration: ${money(inputs.migration)} once, and it costs ${money(-roi.annualSavings)} more a year than the mixed row: it never pays back here`,
  ].join('\n');
}

/**
 * What an idle job holds on each runtime of this node: three `sleep 1` jobs each, their median
 * peak memory (the job's cgroup, or a microVM's VMM process). A runtime that cannot run here
 * keeps the seed's figure, and says so.
 */
async function measure(box: Awaited<ReturnType<typeof openBoxcar>>): Promise<Measured> {
  const out = {} as Measured;
  for (const runtime of ['runc', 'gvisor', 'firecracker'] as const) {
    const fp = await box.runtimes.fingerprint(runtime);
    if (!fp.usable) {
      out[runtime] = { mib: SEED_INPUTS.jobMiB[runtime], how: `the seed's (not usable here: ${fp.reason})` };
      continue;
    }
    const peaks: number[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await runLocalJob(box, JobSpec.parse({ runtime, command: ['sleep', '1'] }), {});
      if (r.record.state !== 'succeeded' || !r.record.peakMemoryBytes)
        throw new UserError(
          `measuring ${runtime}: its probe job ${r.record.state} (${r.record.error ?? ''})`,
        );
      peaks.push(r.record.peakMemoryBytes);
    }
    const median = [...peaks].sort((a, b) => a - b)[1] as number;
    out[runtime] = { mib: Math.round((median / 2 ** 20) * 10) / 10, how: 'measured: median of 3 idle jobs' };
  }
  return out;
}

function printReport(
  lines: CostLine[],
  by: CostGroup,
  format: 'table' | 'json' | 'csv',
  idle?: ReturnType<typeof idleCapacity>,
): void {
  if (format === 'json') {
    // The node's idle capacity is null in a tenant's report: it is the operator's, not a tenant's.
    process.stdout.write(`${JSON.stringify({ lines, idleCapacity: idle ?? null })}\n`);
    return;
  }
  const fields = ['jobs', 'memory', 'cpu', 'overhead', 'total', 'isolationPremium'] as const;
  if (format === 'csv') {
    // Micro-dollars as dollars with six decimals: exact, and what a spreadsheet reads.
    const cell = (v: number, f: string) => (f === 'jobs' ? String(v) : (v / 1e6).toFixed(6));
    const csvKey = (k: string) => (/[",\n]/.test(k) ? `"${k.replace(/"/g, '""')}"` : k);
    const rows = lines.map((l) => [csvKey(l.key), ...fields.map((f) => cell(l[f], f))].join(','));
    process.stdout.write(`${[[by, ...fields].join(','), ...rows].join('\n')}\n`);
    return;
  }
  const sum = (f: (typeof fields)[number]) => lines.reduce((s, l) => s + l[f], 0);
  const row = (key: string, get: (f: (typeof fields)[number]) => number) => [
    key,
    String(get('jobs')),
    ...fields.slice(1).map((f) => money(get(f), 6)),
  ];
  process.stdout.write(
    `${formatTable(
      [by.toUpperCase(), 'JOBS', 'MEMORY', 'CPU', 'RUNTIME OVERHEAD', 'TOTAL', 'ISOLATION PREMIUM'],
      [...lines.map((l) => row(l.key, (f) => l[f])), row('all', sum)],
    )}\n`,
  );
  if (idle && idle.capacity > 0)
    process.stdout.write(
      `\nidle capacity of this node since ${new Date(idle.from).toISOString()}: ${money(idle.idle, 6)} of ${money(idle.capacity, 6)} (its jobs were allocated ${money(idle.allocated, 6)})\n`,
    );
}

/**
 * `boxcar cost`: what finished jobs cost, summed by tenant, repository, pipeline, runtime or
 * trust; with `--scenario`, the seed's section 6 from its inputs or from this node's.
 */
export function registerCost(program: Command, logger: Logger): void {
  program
    .command('cost')
    .addOption(
      new Option(
        '--scenario <name>',
        "seed: the seed's inputs; measured: this node's, beside the seed's",
      ).choices(['seed', 'measured']),
    )
    .addOption(new Option('--by <group>', 'what to sum by').choices(COST_GROUPS).default('runtime'))
    .option('--since <duration>', 'jobs finished this recently, e.g. 7d, 24h', '7d')
    .option('--tenant <name>', "one tenant's jobs")
    .option('--json', 'print JSON (amounts in micro-dollars)')
    .option('--csv', 'print CSV (amounts in dollars)')
    .action(
      async (flags: {
        scenario?: 'seed' | 'measured';
        by: CostGroup;
        since: string;
        tenant?: string;
        json?: boolean;
        csv?: boolean;
      }) => {
        if (!flags.scenario) {
          const since = parseDurationMs(flags.since);
          if (!since.ok) throw new UserError(`--since: ${since.message}`);
          const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
          try {
            const overheadOf = (j: PricedJob) =>
              box.runtimes.get(j.runtime).capabilities.memoryOverheadBytes(j.spec.limits);
            const jobs = await finishedJobs(box.store, { sinceMs: since.value, tenant: flags.tenant });
            const lines = costReport(jobs, flags.by, overheadOf, box.prices);
            // The node's idle capacity is the operator's, not a tenant's: only in the whole report.
            const now = Date.now();
            const idle = flags.tenant
              ? undefined
              : idleCapacity(
                  jobs.filter((j) => ownedHere(j.owner, box.paths.root)),
                  nodeCapacity(box.config.scheduler),
                  { from: now - since.value, to: now },
                  overheadOf,
                  box.prices,
                );
            printReport(lines, flags.by, flags.json ? 'json' : flags.csv ? 'csv' : 'table', idle);
          } finally {
            await box.close();
          }
          return;
        }
        await printScenarios(program, logger, flags.scenario, flags.json ?? false);
      },
    );
}

async function printScenarios(
  program: Command,
  logger: Logger,
  scenario: 'seed' | 'measured',
  json: boolean,
): Promise<void> {
  const scenarios: Array<{ title: string; inputs: ScenarioInputs; how?: Measured }> = [
    { title: 'seed', inputs: SEED_INPUTS },
  ];
  if (scenario === 'measured') {
    if (process.getuid?.() !== 0)
      throw new UserError('boxcar cost --scenario measured runs probe jobs: run it as root');
    const box = await openBoxcar(program.opts<BoxcarOptions>(), logger);
    try {
      const how = await measure(box);
      const jobMiB = { runc: how.runc.mib, gvisor: how.gvisor.mib, firecracker: how.firecracker.mib };
      scenarios.push({ title: 'measured on this node', inputs: { ...SEED_INPUTS, jobMiB }, how });
    } finally {
      await box.close();
    }
  }
  if (json) {
    const out = scenarios.map((s) => {
      const rows = scenarioTable(s.inputs);
      return {
        scenario: s.title,
        inputs: s.inputs,
        measured: s.how,
        rows,
        roi: migrationRoi(rows, s.inputs.migration),
      };
    });
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return;
  }
  const text = scenarios.map((s) => {
    const how = s.how
      ? `\n${Object.entries(s.how)
          .map(([r, m]) => `  ${r}: ${m.mib} MiB, ${m.how}`)
          .join('\n')}`
      : '';
    return `${report(s.title, s.inputs)}${how}`;
  });
  process.stdout.write(`${text.join('\n\n')}\n`);
}
