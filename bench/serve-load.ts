/**
 * A serving node under load: N concurrent runc jobs (`sleep`) submitted over HTTP to a real
 * `boxcar serve` process on this machine. Reports the sustained start rate, control-plane RSS
 * (the serve process), memory per running job (the host's MemAvailable drop, everything
 * included), and API latency (submit, get, list) while the node holds N running jobs. (The
 * per-job start beside raw `runc run` is bench/startup.ts.)
 * Run: node dist/bench/serve-load.js [jobs]   (root; default 1000)
 */
import { mkdtemp } from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { sleep } from '../src/lib/exec.js';
import { boxcarSync, exited, startServe } from '../src/testing/serve-process.js';
import { hostCpuNs, memAvailable, processFootprint, rss } from '../src/lib/proc.js';
import { median, percentile, row } from './lib/stats.js';
import { removeScratch } from './lib/scratch.js';

const N = Number(process.argv[2] ?? 1000);
const MiB = 2 ** 20;

async function main() {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-serve-load-'));
  // The tenant is trusted (its jobs on runc, as a platform team's own CI), and its token may
  // read the node's status.
  const config = path.join(root, 'config.yaml');
  writeFileSync(config, 'tenants:\n  load: { trust: trusted }\n');
  const token = boxcarSync(['--state', root, 'token', 'create', '--tenant', 'load', '--operator']);
  // At the end the node drains until every cancelled job's sandbox is destroyed (its root
  // unmounted), so that the state directory can go.
  const { child, url } = await startServe(['--state', root, '--config', config, '--drain', '5m']);
  const auth = { authorization: `Bearer ${token}` };
  const headers = { ...auth, 'content-type': 'application/json' };
  const timed = async (p: string, init: RequestInit = {}) => {
    const t0 = performance.now();
    const res = await fetch(`${url}${p}`, { ...init, headers });
    const body = await res.json();
    if (!res.ok) throw new Error(`${p}: ${res.status} ${JSON.stringify(body)}`);
    return { ms: performance.now() - t0, body };
  };
  const job = JSON.stringify({
    source: 'internal_repo',
    user_group: 'internal_team',
    command: ['sleep', '1800'],
    timeout: '1h', // not the default 10 min: filling 2,000 can take longer
    // A sleeping job holds ~1.5 MiB: it requests 8Mi (under a 16Mi limit), so the node's
    // capacity (its memory less 1Gi) places 2,000 of them, as a node packs idle-heavy CI jobs.
    resources: { memory: '16Mi', pids: 16, tmp: '1Mi', requests: { cpus: '1m', memory: '8Mi' } },
  });
  try {
    await sleep(500);
    const idleRss = rss(child.pid as number);
    const avail0 = memAvailable();
    const cpu0 = hostCpuNs();
    const serveCpu0 = (await processFootprint(child.pid as number))?.cpuNs ?? NaN;
    const clientCpu0 = process.cpuUsage();
    const submitMs: number[] = [];
    const ids: string[] = [];
    const t0 = performance.now();
    for (let i = 0; i < N; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, N - i) }, () => timed('/v1/jobs', { method: 'POST', body: job })),
      );
      for (const r of batch) {
        submitMs.push(r.ms);
        ids.push((r.body as { id: string }).id);
      }
    }
    let running = 0;
    for (;;) {
      running = ((await timed('/v1/node')).body as { running: number }).running;
      const list = (await timed('/v1/jobs?state=running&limit=10000')).body as unknown[];
      if (list.length >= N) break;
      if (performance.now() - t0 > 15 * 60_000)
        throw new Error(`only ${list.length} of ${N} running after 15 min`);
      await sleep(250);
    }
    const fillSecs = (performance.now() - t0) / 1000;
    // Everything the host spent while filling (the node, monitors, runc, the kernel), per job.
    const cpu1 = hostCpuNs();
    const cpuPerJob = {
      user: (cpu1.userNs - cpu0.userNs) / N / 1e6,
      system: (cpu1.systemNs - cpu0.systemNs) / N / 1e6,
    };
    // Of which the node itself (its process) and this client; the rest is the sandboxes'
    // making: conmon, runc create and runc init, the root's mounts, and the kernel's part.
    const serveMsPerJob =
      (((await processFootprint(child.pid as number))?.cpuNs ?? NaN) - serveCpu0) / N / 1e6;
    const client = process.cpuUsage(clientCpu0);
    const clientMsPerJob = (client.user + client.system) / N / 1e3;
    const sandboxMsPerJob = cpuPerJob.user + cpuPerJob.system - serveMsPerJob - clientMsPerJob;
    await sleep(2000);
    const perJob = (avail0 - memAvailable()) / N;
    const loadedRss = rss(child.pid as number);
    const heap = ((await timed('/v1/node')).body as { memory: NodeJS.MemoryUsage }).memory;
    const getMs: number[] = [];
    const listMs: number[] = [];
    for (let i = 0; i < 200; i++) {
      getMs.push((await timed(`/v1/jobs/${ids[i % ids.length]}`)).ms);
      if (i % 4 === 0) listMs.push((await timed('/v1/jobs?limit=50')).ms);
    }
    const loadedSubmit: number[] = [];
    for (let i = 0; i < 50; i++) {
      const r = await timed('/v1/jobs', {
        method: 'POST',
        body: JSON.stringify({
          command: ['true'],
          source: 'internal_repo',
          user_group: 'internal_team',
          priority: -1,
        }),
      });
      loadedSubmit.push(r.ms);
    }

    console.log(
      `boxcar serve with ${N} concurrent runc jobs (sleep), ${os.availableParallelism()} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`,
    );
    console.log(row(['what', 'figure', 'target']));
    console.log(row([`jobs running at once (node says ${running})`, N, '1000']));
    console.log(row(['sustained starts per second (submit → running)', N / fillSecs, '≥ 50']));
    console.log(
      row([
        'host CPU per job start, user + system (ms)',
        `${cpuPerJob.user.toFixed(1)} + ${cpuPerJob.system.toFixed(1)}`,
        '',
      ]),
    );
    console.log(row(['  of which the node (boxcar serve) (ms)', serveMsPerJob, '']));
    console.log(row(['  of which this benchmark client (ms)', clientMsPerJob, '']));
    console.log(row(['  of which making sandboxes (runc, conmon…) (ms)', sandboxMsPerJob, '']));
    console.log(
      row([
        'control-plane RSS idle → loaded (MiB)',
        `${(idleRss / MiB).toFixed(0)} → ${(loadedRss / MiB).toFixed(0)}`,
        '≤ 150',
      ]),
    );
    console.log(
      row([
        '  of which V8 heap used / total (MiB)',
        `${(heap.heapUsed / MiB).toFixed(0)} / ${(heap.heapTotal / MiB).toFixed(0)}`,
        '',
      ]),
    );
    console.log(row(['memory per running job, all-in (MiB)', perJob / MiB, '–']));
    console.log(
      row([
        'API submit p50 / p99 while filling (ms)',
        `${median(submitMs).toFixed(1)} / ${percentile(submitMs, 99).toFixed(1)}`,
        '',
      ]),
    );
    console.log(
      row([
        'API get job p50 / p99, loaded (ms)',
        `${median(getMs).toFixed(1)} / ${percentile(getMs, 99).toFixed(1)}`,
        'p99 ≤ 50',
      ]),
    );
    console.log(
      row([
        'API list 50 p50 / p99, loaded (ms)',
        `${median(listMs).toFixed(1)} / ${percentile(listMs, 99).toFixed(1)}`,
        'p99 ≤ 50',
      ]),
    );
    console.log(
      row([
        'API submit p50 / p99, loaded (ms)',
        `${median(loadedSubmit).toFixed(1)} / ${percentile(loadedSubmit, 99).toFixed(1)}`,
        'p99 ≤ 50',
      ]),
    );
  } finally {
    // Cancel everything, then stop the node; its jobs end with it.
    const all = (await (
      await fetch(`${url}/v1/jobs?limit=10000&state=queued,starting,running`, { headers })
    ).json()) as Array<{ id: string }>;
    for (let i = 0; i < all.length; i += 100)
      await Promise.all(
        all
          .slice(i, i + 100)
          .map((j) => fetch(`${url}/v1/jobs/${j.id}/cancel`, { method: 'POST', headers: auth })),
      );
    for (let i = 0; i < 240; i++) {
      const left = (await (
        await fetch(`${url}/v1/jobs?limit=10000&state=queued,starting,running`, { headers })
      ).json()) as unknown[];
      if (left.length === 0) break;
      await sleep(500);
    }
    child.kill('SIGTERM');
    await exited(child);
    await removeScratch(root);
  }
}

await main();
