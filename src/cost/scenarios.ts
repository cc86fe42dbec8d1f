/**
 * The seed's cost question (its section 6): what each runtime mix costs a month at 1,000
 * concurrent jobs, and when the Firecracker migration pays back. The model: memory is what
 * differs between runtimes (the seed holds CPU at $3,000 in every row), priced per MiB a job
 * holds for a month; trusted jobs stay on runc and the untrusted share moves between runtimes.
 * Money is held in integer micro-dollars.
 */

import { dollars, type Micro } from './money.js';

export interface ScenarioInputs {
  concurrentJobs: number;
  /** The share of jobs that is untrusted code (external pull requests). */
  untrustedShare: number;
  /** Memory each job holds, per runtime (MiB). */
  jobMiB: { runc: number; gvisor: number; firecracker: number };
  /** What one MiB held by one job costs a month. */
  mibMonth: Micro;
  /** CPU a month, the same in every row. */
  cpu: Micro;
  /** What migrating to Firecracker costs once (development and testing). */
  migration: Micro;
}

/**
 * The seed's own inputs. Memory per job is its section 3.2's (runc 10 MB, gVisor 30 MB); the
 * untrusted share (30%) is what its "mixed" row implies ($5,000 × 0.7 + $15,000 × 0.3 =
 * $8,000). Its Firecracker row ($4,100) implies 4 MB per microVM job, not section 3.2's 5 MB
 * (which gives $4,250): the table is reproduced from the figure the table itself used.
 */
export const SEED_INPUTS: ScenarioInputs = {
  concurrentJobs: 1000,
  untrustedShare: 0.3,
  jobMiB: { runc: 10, gvisor: 30, firecracker: 4 },
  // All runc: 1,000 jobs × 10 MB = $5,000 a month.
  mibMonth: dollars(0.5),
  cpu: dollars(3000),
  migration: dollars(50_000),
};

export interface ScenarioRow {
  name: string;
  memory: Micro;
  cpu: Micro;
  total: Micro;
  /** Against the all-runc baseline: +1.25 is 125% more. */
  vsBaseline: number;
}

export interface Roi {
  /** What the Firecracker row saves a year against the mixed row (today's). */
  annualSavings: Micro;
  paybackYears: number;
  /** (3 years of savings − the migration) / the migration. */
  roi3Years: number;
}

export function scenarioTable(i: ScenarioInputs): ScenarioRow[] {
  const memory = (mix: { runc: number; gvisor: number; firecracker: number }) =>
    Math.round(
      i.concurrentJobs *
        i.mibMonth *
        (mix.runc * i.jobMiB.runc + mix.gvisor * i.jobMiB.gvisor + mix.firecracker * i.jobMiB.firecracker),
    );
  const u = i.untrustedShare;
  const mixes = [
    { name: 'all runc', mix: { runc: 1, gvisor: 0, firecracker: 0 } },
    { name: 'all gVisor', mix: { runc: 0, gvisor: 1, firecracker: 0 } },
    { name: 'mixed (untrusted on gVisor)', mix: { runc: 1 - u, gvisor: u, firecracker: 0 } },
    { name: 'Firecracker for untrusted', mix: { runc: 1 - u, gvisor: 0, firecracker: u } },
  ];
  const rows = mixes.map(({ name, mix }) => {
    const m = memory(mix);
    return { name, memory: m, cpu: i.cpu, total: m + i.cpu, vsBaseline: 0 };
  });
  const base = rows[0]?.total ?? 1;
  return rows.map((r) => ({ ...r, vsBaseline: r.total / base - 1 }));
}

/** The migration from the mixed row (today's) to Firecracker for untrusted code. */
export function migrationRoi(rows: ScenarioRow[], migration: Micro): Roi {
  const mixed = rows[2];
  const firecracker = rows[3];
  if (!mixed || !firecracker) throw new Error('the scenario table has no mixed or Firecracker row');
  const annualSavings = (mixed.total - firecracker.total) * 12;
  return {
    annualSavings,
    paybackYears: migration / annualSavings,
    roi3Years: (annualSavings * 3 - migration) / migration,
  };
}
