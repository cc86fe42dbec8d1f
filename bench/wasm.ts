/**
 * WASM jobs: startupMs of a cached module (in a running node, as `serve` will run them: a warm
 * pool of confined worker processes), jobs per second over 1,000 small jobs and the CPU each
 * costs (Boxcar's process, its workers), memory per concurrent instance and per worker process;
 * the same jobs given a workspace of their own (a tmpfs mounted for each, a worker started for
 * each: the path of a job that starts with files), the same module run by a bare `node` process
 * with node:wasi, and the same program built natively and run by raw `runc run`.
 * Run: node dist/bench/wasm.js [jobs]   (root; needs dist/wasm from set-up)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openBoxcar } from '../src/boxcar.js';
import { importWasmModule } from '../src/images/wasm-artifact.js';
import { decideLocally, operatorOrigin } from '../src/runner/local.js';
import { executeJob } from '../src/runner/execute.js';
import { currentOwner } from '../src/lib/owner.js';
import { JobSpec } from '../src/jobs/spec.js';
import { silentLogger } from '../src/observability/logger.js';
import { removeCgroup } from '../src/runtimes/shared/cgroups.js';
import { ociSpec } from '../src/runtimes/shared/oci-spec.js';
import { endedChildrenCpuNs, processFootprint } from '../src/lib/proc.js';
import { median, percentile, row, timeCommand } from './lib/stats.js';
import { removeScratch } from './lib/scratch.js';

const N = Number(process.argv[2] ?? 1000);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const HELLO = path.join(REPO, 'dist/wasm/hello.wasm');

async function main() {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-wasm-bench-'));
  const box = await openBoxcar({ state: root }, silentLogger());
  try {
    // As `boxcar run` does with a local file: jobs run modules from the image store.
    const input = { runtime: 'wasm', image: await importWasmModule(box.images, HELLO) };
    const spec = JobSpec.parse(input);
    // A workspace of its own (a cache it only reads, never there): mounted on the host, and a
    // worker process started for the job alone.
    const withWorkspace = JobSpec.parse({
      ...input,
      cache: { key: 'bench', paths: ['out/'], policy: 'pull' },
    });
    const runOne = async (signal?: AbortSignal, jobSpec = spec) => {
      const id = randomUUID();
      const job = await box.store.createJob({
        id,
        tenant: 'bench',
        spec: jobSpec,
        decision: await decideLocally(box, id, jobSpec),
        origin: operatorOrigin(),
        owner: currentOwner(box.paths.root),
      });
      return executeJob(box, job, { signal });
    };
    const workersCpuNs = async () => {
      const { workers } = (await box.runtimes.get('wasm').status?.()) as { workers: Array<{ pid?: number }> };
      const live = await Promise.all(workers.map((w) => (w.pid ? processFootprint(w.pid) : undefined)));
      return live.reduce((sum, f) => sum + (f?.cpuNs ?? 0), endedChildrenCpuNs());
    };
    /** N jobs at once: how long, how many exited 7, startupMs, CPU per job (this process, workers). */
    const burst = async (n: number, jobSpec: typeof spec) => {
      const ac = new AbortController();
      setMaxListeners(n + 10, ac.signal);
      const [cpu0, workers0, t0] = [process.cpuUsage(), await workersCpuNs(), Date.now()];
      const all = await Promise.all(Array.from({ length: n }, () => runOne(ac.signal, jobSpec)));
      const secs = (Date.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const workersMs = ((await workersCpuNs()) - workers0) / 1e6 / n;
      const startups = all.map((r) => r.record.startupMs ?? NaN);
      return {
        all,
        ok: all.filter((r) => r.record.exitCode === 7).length,
        line: `${(n / secs).toFixed(0)} jobs/s (${secs.toFixed(2)} s; startupMs p50 ${median(startups)}, p95 ${percentile(startups, 95)}); CPU per job: boxcar ${((cpu.user + cpu.system) / 1000 / n).toFixed(2)} ms (${(cpu.system / 1000 / n).toFixed(2)} system), workers ${workersMs.toFixed(2)} ms`,
      };
    };
    await box.runtimes.fingerprint('wasm');
    for (let i = 0; i < 20; i++) await runOne(); // warm: module compiled and cached, threads up
    const startup: number[] = [];
    for (let i = 0; i < 50; i++) startup.push((await runOne()).record.startupMs ?? NaN);

    const rss0 = process.memoryUsage().rss;
    const pooled = await burst(N, spec);
    const rssGrowth = process.memoryUsage().rss - rss0;
    const { all } = pooled;
    const { workers } = (await box.runtimes.get('wasm').status?.()) as { workers: Array<{ cgroup: string }> };
    const workerBytes = workers.map((w) =>
      Number(readFileSync(`/sys/fs/cgroup/memory${w.cgroup}/memory.max_usage_in_bytes`, 'utf8')),
    );
    // A worker's start (~100 ms of CPU: a Node process) for each: a tenth as many jobs.
    const ownN = Math.max(1, Math.round(N / 10));
    const own = await burst(ownN, withWorkspace);
    const linear = median(all.map((r) => r.record.peakMemoryBytes ?? 0));

    // Bare node with node:wasi, a process per run.
    const runner = path.join(root, 'wasi-run.mjs');
    writeFileSync(
      runner,
      `import { WASI } from 'node:wasi'; import { readFileSync } from 'node:fs';
const wasi = new WASI({ version: 'preview1', args: ['hello'], env: {}, returnOnExit: true });
const inst = await WebAssembly.instantiate(await WebAssembly.compile(readFileSync(process.argv[2])), wasi.getImportObject());
process.exitCode = wasi.start(inst) === 7 ? 0 : 1;`,
    );
    const bare = Array.from(
      { length: 15 },
      () => timeCommand(process.execPath, ['--no-warnings', runner, HELLO]).ms,
    );

    // The same program built natively (static) and run by raw runc.
    const bundle = path.join(root, 'bundle');
    mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
    execFileSync('gcc', [
      '-static',
      '-O2',
      '-o',
      path.join(bundle, 'rootfs/hello'),
      path.join(REPO, 'examples/wasm/hello.c'),
    ]);
    for (const d of ['proc', 'sys', 'dev', 'tmp', 'workspace']) mkdirSync(path.join(bundle, 'rootfs', d));
    const native: number[] = [];
    for (let i = 0; i < 16; i++) {
      const id = randomUUID();
      const cfg = ociSpec({
        jobId: id,
        spec: JobSpec.parse({ command: ['/hello'] }),
        image: {
          ref: 'hello',
          digest: 'x',
          content: { layers: [] },
          config: { env: [], entrypoint: [], cmd: [], workingDir: '/' },
        },
        rootPath: path.join(bundle, 'rootfs'),
        cgroupsPath: `/boxcar-bench/${id}`,
      });
      writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(cfg));
      const t = Date.now();
      spawnSync('runc', ['--root', path.join(root, 'runc'), 'run', '--bundle', bundle, id], {
        stdio: 'ignore',
      });
      if (i > 0) native.push(Date.now() - t);
    }
    cpSync(HELLO, path.join(root, 'kept.wasm'));

    console.log(
      `wasm jobs (hello.wasm: prints a line, exits 7), up to ${os.availableParallelism()} worker processes`,
    );
    console.log(row(['what', 'median ms', 'p95 ms']));
    console.log(
      row(['boxcar startupMs, cached module (accepted → _start)', median(startup), percentile(startup, 95)]),
    );
    console.log(row(['bare `node` + node:wasi, whole process', median(bare), percentile(bare, 95)]));
    console.log(
      row(['same program native (static) in raw `runc run`', median(native), percentile(native, 95)]),
    );
    console.log(`${N} concurrent jobs, pooled workers, no mount: ${pooled.ok} exited 7: ${pooled.line}`);
    console.log(
      `${ownN} concurrent jobs, each its own workspace (mounted) and worker: ${own.ok} exited 7: ${own.line}`,
    );
    console.log(
      `memory per instance: ${(linear / 1024).toFixed(0)} KiB linear memory; boxcar RSS grew ${(rssGrowth / 2 ** 20).toFixed(1)} MiB over ${N} jobs (${(rssGrowth / N / 1024).toFixed(1)} KiB per job, store and logs included)`,
    );
    console.log(
      `worker processes: ${workers.length}, peak ${workerBytes.map((b) => (b / 2 ** 20).toFixed(1)).join(', ')} MiB each in their cgroups`,
    );
  } finally {
    await box.close();
    await removeCgroup('/boxcar-bench');
    await removeScratch(root);
  }
  process.exit(0);
}

await main();
