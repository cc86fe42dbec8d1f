/**
 * Memory per running container job: N concurrent `sleep` jobs through the real executor,
 * measured three ways: the host's MemAvailable drop (everything, kernel included), each
 * conmon's PSS, and each job's cgroup usage (for gVisor: sentry and gofer included).
 * Run: node dist/bench/density.js [runc|gvisor] [jobs]   (root)
 */
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { openBoxcar } from '../src/boxcar.js';
import { jobTrustFields } from '../src/isolation/verify.js';
import { executeJob } from '../src/runner/execute.js';
import { currentOwner } from '../src/lib/owner.js';
import { JobSpec } from '../src/jobs/spec.js';
import { silentLogger } from '../src/observability/logger.js';
import { decideLocally, operatorOrigin } from '../src/runner/local.js';
import { readCgroupStats } from '../src/runtimes/shared/cgroups.js';
import { sleep } from '../src/lib/exec.js';
import { memAvailable, pss } from '../src/lib/proc.js';
import { row } from './lib/stats.js';
import { removeScratch } from './lib/scratch.js';

const RUNTIME = (process.argv[2] ?? 'runc') as 'runc' | 'gvisor';
const N = Number(process.argv[3] ?? (RUNTIME === 'runc' ? 200 : 50));
const MiB = 2 ** 20;

async function main() {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-density-'));
  const box = await openBoxcar({ state: root }, silentLogger());
  const ac = new AbortController();
  setMaxListeners(N + 10, ac.signal); // one cancel signal shared by every job
  const runs: Array<Promise<unknown>> = [];
  try {
    const trust = jobTrustFields(box.runtimes.get(RUNTIME).capabilities);
    const spec = JobSpec.parse({
      runtime: RUNTIME,
      ...trust,
      command: ['sleep', '600'],
      resources: { memory: '64Mi', tmp: '1Mi', workspace: '1Mi' },
    });
    await executeJob(
      box,
      await box.store.createJob({
        id: randomUUID(),
        tenant: 'bench',
        spec: JobSpec.parse({ ...trust, runtime: RUNTIME, command: ['true'] }),
        decision: await decideLocally(box, 'bench', spec),
        origin: operatorOrigin(),
        owner: currentOwner(box.paths.root),
      }),
    );
    await sleep(1000);
    const before = memAvailable();
    const rssBefore = process.memoryUsage().rss;
    const t0 = Date.now();
    for (let i = 0; i < N; i++) {
      const job = await box.store.createJob({
        id: randomUUID(),
        tenant: 'bench',
        spec,
        decision: await decideLocally(box, 'bench', spec),
        origin: operatorOrigin(),
        owner: currentOwner(box.paths.root),
      });
      runs.push(executeJob(box, job, { signal: ac.signal }));
    }
    let running = 0;
    while (running < N && Date.now() - t0 < 300_000) {
      await sleep(500);
      running = (await box.store.listJobs({ states: ['running'], limit: N + 10 })).length;
    }
    const startSecs = (Date.now() - t0) / 1000;
    await sleep(2000);
    const after = memAvailable();
    const rssGrowth = process.memoryUsage().rss - rssBefore;
    const jobs = await box.store.listJobs({ states: ['running'], limit: N + 10 });
    let conmonPss = 0;
    let cgroupBytes = 0;
    for (const j of jobs) {
      const pid = j.handle?.attributes.hostPid;
      if (typeof pid === 'number') conmonPss += pss(pid) ?? 0;
      if (j.handle) cgroupBytes += (await readCgroupStats(`/boxcar/${j.handle.sandboxId}`)).memoryBytes;
    }
    console.log(
      `${jobs.length} concurrent ${RUNTIME} jobs (sleep 600) running after ${startSecs.toFixed(1)} s (${(jobs.length / startSecs).toFixed(1)} starts/s)`,
    );
    console.log(row(['measure', 'per job MiB', 'total MiB']));
    console.log(
      row(['host MemAvailable drop (all in)', (before - after) / jobs.length / MiB, (before - after) / MiB]),
    );
    console.log(
      row(['  of which the boxcar process (RSS growth)', rssGrowth / jobs.length / MiB, rssGrowth / MiB]),
    );
    console.log(
      row([
        '  the rest: jobs, monitors, kernel',
        (before - after - rssGrowth) / jobs.length / MiB,
        (before - after - rssGrowth) / MiB,
      ]),
    );
    console.log(row(['conmon PSS', conmonPss / jobs.length / MiB, conmonPss / MiB]));
    console.log(
      row(['job cgroup usage (process + kernel)', cgroupBytes / jobs.length / MiB, cgroupBytes / MiB]),
    );
    console.log(
      row([
        'conmon PSS + cgroup',
        (conmonPss + cgroupBytes) / jobs.length / MiB,
        (conmonPss + cgroupBytes) / MiB,
      ]),
    );
    console.log(`target: ≤ ${RUNTIME === 'runc' ? '1.5' : '12'} MiB per running job`);
  } finally {
    ac.abort();
    // Each job's run ends once its sandbox is destroyed (root unmounted, cgroup gone).
    await Promise.allSettled(runs);
    await box.close();
    await removeScratch(root);
  }
}

await main();
