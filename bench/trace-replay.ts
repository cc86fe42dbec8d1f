/**
 * The peak hour of a 100,000-jobs/day CI fleet, replayed against a real `boxcar serve` on this
 * machine, compressed in time. Arrivals are Poisson at the peak rate (2.5× the daily mean);
 * 70% are internal jobs (runc), 30% external pull requests (untrusted: the microVM, or gVisor
 * where there is none); durations are log-normal (median 3 min, p90 ~11 min, at most 30 min)
 * and shrink with the compression, so about as many jobs run at once as in the real hour.
 * Reports queue wait percentiles, start-up by runtime, and lost or duplicated jobs (must be 0).
 * Run: node dist/bench/trace-replay.js [speedup=10] [trace-minutes=60]   (root)
 */
import { mkdtemp } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { JobView } from '../src/api/job-view.js';
import { isTerminal } from '../src/jobs/states.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';
import { boxcarSync, exited, startServe } from '../src/testing/serve-process.js';
import { median, percentile, row } from './lib/stats.js';
import { removeScratch } from './lib/scratch.js';

const SPEEDUP = Number(process.argv[2] ?? 10);
const TRACE_MINUTES = Number(process.argv[3] ?? 60);
const PEAK_PER_SECOND = (100_000 / 86_400) * 2.5;

/** A seeded generator, so two runs replay the same trace. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

interface TraceJob {
  at: number; // seconds into the compressed replay
  external: boolean;
  seconds: number; // compressed duration
}

function trace(): TraceJob[] {
  const r = rng(100_000);
  const normal = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const jobs: TraceJob[] = [];
  for (let t = 0; ;) {
    t += -Math.log(1 - r()) / PEAK_PER_SECOND; // real seconds between arrivals
    if (t > TRACE_MINUTES * 60) break;
    const real = Math.min(1800, 180 * Math.exp(0.9 * normal()));
    jobs.push({ at: t / SPEEDUP, external: r() < 0.3, seconds: Math.max(0.1, real / SPEEDUP) });
  }
  return jobs;
}

async function main() {
  const jobs = trace();
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-trace-'));
  // The tenant is trusted (its jobs on runc, as a platform team's own CI), and its token may
  // read the node's status.
  const config = path.join(root, 'config.yaml');
  writeFileSync(config, 'tenants:\n  fleet: { trust: trusted }\n');
  const token = boxcarSync(['--state', root, 'token', 'create', '--tenant', 'fleet', '--operator']);
  const { child, url } = await startServe(['--state', root, '--config', config]);
  const auth = { authorization: `Bearer ${token}` };
  const ids: string[] = [];
  let refused = 0;
  try {
    const t0 = Date.now();
    let concurrent = 0;
    let peakConcurrent = 0;
    const sampler = setInterval(async () => {
      const node = (await (await fetch(`${url}/v1/node`, { headers: auth })).json()) as { running: number };
      concurrent = node.running;
      peakConcurrent = Math.max(peakConcurrent, concurrent);
    }, 1000);
    for (const j of jobs) {
      const wait = t0 + j.at * 1000 - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const res = await fetch(`${url}/v1/jobs`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({
          name: j.external ? 'pr-check' : 'build',
          ...(j.external
            ? { source: 'external_pr', user_group: 'external_contributor' }
            : { source: 'internal_repo', user_group: 'internal_team' }),
          command: ['sleep', j.seconds.toFixed(2)],
          // Sized for `sleep`: the node's requests capacity is not what this measures (a gVisor
          // job's cgroup also holds its sentry and gofer, hence the larger limit).
          resources: j.external
            ? { memory: '64Mi', pids: 32, tmp: '8Mi', requests: { memory: '24Mi', cpus: '1m' } }
            : { memory: '32Mi', pids: 32, tmp: '8Mi', requests: { memory: '8Mi', cpus: '1m' } },
        }),
      });
      if (res.status === 201) ids.push(((await res.json()) as JobView).id);
      else refused++;
    }
    const submitSecs = (Date.now() - t0) / 1000;
    // Drain: every accepted job must reach a final state.
    const views: JobView[] = [];
    for (const id of ids)
      views.push((await (await fetch(`${url}/v1/jobs/${id}?wait=30m`, { headers: auth })).json()) as JobView);
    clearInterval(sampler);
    const totalSecs = (Date.now() - t0) / 1000;
    child.kill('SIGTERM');
    await exited(child);

    const store = new SqliteStore(path.join(root, 'boxcar.db'));
    let duplicated = 0;
    for (const id of ids)
      if ((await store.events(id)).filter((e) => e.to === 'running').length > 1) duplicated++;
    await store.close();
    const finals = views.filter((v) => isTerminal(v.state));
    const waits = views
      .filter((v) => v.startedAt !== null && v.startupMs !== null)
      .map((v) => (v.startedAt as number) - (v.startupMs as number) - v.createdAt);
    const byRuntime = new Map<string, number[]>();
    for (const v of views)
      if (v.startupMs !== null) byRuntime.set(v.runtime, [...(byRuntime.get(v.runtime) ?? []), v.startupMs]);
    const states = new Map<string, number>();
    for (const v of views) states.set(v.state, (states.get(v.state) ?? 0) + 1);

    console.log(
      `peak hour of 100,000 jobs/day: ${TRACE_MINUTES} min of trace at ${SPEEDUP}× = ${((TRACE_MINUTES * 60) / SPEEDUP).toFixed(0)} s; ` +
        `${jobs.length} jobs (${jobs.filter((j) => j.external).length} external PRs), ${os.availableParallelism()} cores`,
    );
    console.log(row(['what', 'figure', '']));
    console.log(row(['accepted / refused', `${ids.length} / ${refused}`, '']));
    console.log(row(['final states', [...states].map(([s, n]) => `${s} ${n}`).join(', '), '']));
    console.log(
      row([
        'lost (accepted, never final) / run twice',
        `${ids.length - finals.length} / ${duplicated}`,
        'must be 0 / 0',
      ]),
    );
    console.log(row(['jobs running at once, peak (sampled 1/s)', peakConcurrent, '']));
    console.log(
      row([
        'queue wait p50 / p95 / p99 (ms)',
        `${median(waits).toFixed(0)} / ${percentile(waits, 95).toFixed(0)} / ${percentile(waits, 99).toFixed(0)}`,
        '',
      ]),
    );
    for (const [runtime, xs] of byRuntime)
      console.log(
        row([
          `startupMs ${runtime} p50 / p95`,
          `${median(xs).toFixed(0)} / ${percentile(xs, 95).toFixed(0)}`,
          '',
        ]),
      );
    console.log(
      row([
        'replay: submitting / until all finished (s)',
        `${submitSecs.toFixed(0)} / ${totalSecs.toFixed(0)}`,
        '',
      ]),
    );
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited(child);
    }
    await removeScratch(root);
  }
}

await main();
