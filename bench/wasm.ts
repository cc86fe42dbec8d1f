/**
 * WASM jobs: startupMs of a cached module (in a running node, as `serve` will run them: a warm
 * pool of confined worker processes), jobs per second over 1,000 small jobs, memory per
 * concurrent instance and per worker process; beside the same module run by a bare `node`
 * process with node:wasi, and the same program built natively and run by raw `runc run`.
 * Run: node dist/bench/wasm.js [jobs]   (root; needs dist/wasm from set-up)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
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
import { median, percentile, row, timeCommand } from './lib/stats.js';

const N = Number(process.argv[2] ?? 1000);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const HELLO = path.join(REPO, 'dist/wasm/hello.wasm');

async function main() {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-wasm-bench-'));
  const box = await openBoxcar({ state: root }, silentLogger());
  try {
    // As `boxcar run` does with a local file: jobs run modules from the image store.
    const spec = JobSpec.parse({ runtime: 'wasm', image: await importWasmModule(box.images, HELLO) });
    const runOne = async (signal?: AbortSignal) => {
      const id = randomUUID();
      const job = await box.store.createJob({
        id,
        tenant: 'bench',
        spec,
        decision: await decideLocally(box, id, spec),
        origin: operatorOrigin(),
        owner: currentOwner(box.paths.root),
      });
      return executeJob(box, job, { signal });
    };
    await box.runtimes.fingerprint('wasm');
    for (let i = 0; i < 20; i++) await runOne(); // warm: module compiled and cached, threads up
    const startup: number[] = [];
    for (let i = 0; i < 50; i++) startup.push((await runOne()).record.startupMs ?? NaN);

    const ac = new AbortController();
    setMaxListeners(N + 10, ac.signal);
    const rss0 = process.memoryUsage().rss;
    const t0 = Date.now();
    const all = await Promise.all(Array.from({ length: N }, () => runOne(ac.signal)));
    const secs = (Date.now() - t0) / 1000;
    const rssGrowth = process.memoryUsage().rss - rss0;
    const { workers } = (await box.runtimes.get('wasm').status?.()) as { workers: Array<{ cgroup: string }> };
    const workerBytes = workers.map((w) =>
      Number(readFileSync(`/sys/fs/cgroup/memory${w.cgroup}/memory.max_usage_in_bytes`, 'utf8')),
    );
    const ok = all.filter((r) => r.record.exitCode === 7).length;
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
    console.log(
      `${N} concurrent jobs: ${ok} exited 7 in ${secs.toFixed(2)} s = ${(N / secs).toFixed(0)} jobs/s`,
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
    await rm(root, { recursive: true, force: true });
  }
  process.exit(0);
}

await main();
