/**
 * Startup of a container job: Boxcar (`startupMs`, and the whole `boxcar run` process) beside
 * the raw OCI runtime (`runc run` / `runsc run`) on the same bundle and `podman run --rm` with
 * that runtime on the same rootfs.
 * With a warm pool: startupMs of a job that takes over a pooled sandbox, in a node as `serve`
 * runs them, with a pooled sandbox free for each job; and an idle one's memory.
 * And what the whole process spends before its job: Node's own start, and loading the command.
 * Run: node dist/bench/startup.js [runc|gvisor|both] [runs]   (root; installs podman if missing)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { statePaths } from '../src/lib/state-paths.js';
import { ImageStore } from '../src/images/image-store.js';
import { resolveImage } from '../src/images/resolve.js';
import { JobSpec } from '../src/jobs/spec.js';
import { removeCgroup } from '../src/runtimes/shared/cgroups.js';
import { ociSpec } from '../src/runtimes/shared/oci-spec.js';
import { mountJobRoot, unmountJobRoot } from '../src/runtimes/shared/job-root.js';
import { imageLayers } from '../src/images/image.js';
import { median, row, timeCommand } from './lib/stats.js';
import { removeScratch } from './lib/scratch.js';
import { openBoxcar } from '../src/boxcar.js';
import { silentLogger } from '../src/observability/logger.js';
import { decideLocally, operatorOrigin } from '../src/runner/local.js';
import { executeJob } from '../src/runner/execute.js';
import { currentOwner } from '../src/lib/owner.js';
import { sleep } from '../src/lib/exec.js';

type Measured = 'runc' | 'gvisor';
const RUNTIMES: Measured[] =
  !process.argv[2] || process.argv[2] === 'both' ? ['runc', 'gvisor'] : [process.argv[2] as Measured];
const RUNS = Number(process.argv[3] ?? 15);
/** The raw tool, as Boxcar's driver calls it (gVisor: same platform and network flags). */
const RAW: Record<Measured, { bin: string; flags: (root: string) => string[]; podman: string[] }> = {
  runc: { bin: '/usr/sbin/runc', flags: (root) => ['--root', root], podman: ['--runtime', '/usr/sbin/runc'] },
  gvisor: {
    bin: '/usr/bin/runsc',
    flags: (root) => ['--root', root, '--platform=ptrace', '--network=none', '--oci-seccomp'],
    podman: [
      '--runtime',
      '/usr/bin/runsc',
      '--runtime-flag',
      'platform=ptrace',
      '--runtime-flag',
      'network=none',
    ],
  },
};
const mib = (b = 0) => (b / 2 ** 20).toFixed(2);
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

async function main() {
  for (const runtime of RUNTIMES) await measure(runtime);
  // What a whole `boxcar run` process spends before its job does anything.
  const bare = Array.from({ length: RUNS }, () => timeCommand(process.execPath, ['-e', '0']).ms);
  const loaded = Array.from(
    { length: RUNS },
    () => timeCommand(process.execPath, [MAIN, 'run', '--help']).ms,
  );
  console.log('a whole `boxcar run` process, before its job (medians, ms)');
  console.log(row(['node -e 0 (the runtime alone)', median(bare), '']));
  console.log(row(['boxcar run --help (node + the command loaded)', median(loaded), '']));
}

async function measure(runtime: Measured) {
  const source = runtime === 'runc' ? 'internal_repo' : 'external_pr';
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-bench-'));
  try {
    const paths = statePaths(path.join(root, 'state'));
    const image = await resolveImage(new ImageStore(paths), undefined);

    // Boxcar: startupMs (acceptance → process running) and the whole CLI process.
    const run = ['run', '--runtime', runtime, '--source', source, '--json', '--', 'true'];
    timeCommand(process.execPath, [MAIN, '--state', paths.root, ...run]); // warm-up
    const startup: number[] = [];
    const wall: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const r = timeCommand(process.execPath, [MAIN, '--state', paths.root, ...run]);
      startup.push((JSON.parse(r.stdout) as { startupMs: number }).startupMs);
      wall.push(r.ms);
    }

    // A node with a warm pool of one container: each job waits until one is free, as a node
    // does whose pool keeps up with its start rate.
    const pooled: number[] = [];
    let idle1: { memoryBytes: number; cgroupBytes: number; monitorPssBytes: number } | undefined;
    {
      const config = path.join(root, 'pool.yaml');
      await writeFile(config, `warm_pools:\n  ${runtime}: 1\n`);
      const box = await openBoxcar({ state: path.join(root, 'pooled'), config }, silentLogger());
      try {
        const spec = JobSpec.parse({
          runtime: runtime,
          command: ['true'],
          source: source,
          user_group: runtime === 'runc' ? 'internal_team' : 'external_contributor',
        });
        const idle = async () =>
          (
            (await box.runtimes.status())[runtime] as {
              warmPool: {
                idle: Array<{ memoryBytes: number; cgroupBytes: number; monitorPssBytes: number }>;
              };
            }
          ).warmPool.idle;
        for (let i = 0; i < RUNS + 1; i++) {
          for (let w = 0; w < 400 && i > 0 && (await idle()).length < 1; w++) await sleep(25);
          const [member] = await idle();
          if (member) idle1 = member;
          const id = randomUUID();
          const job = await box.store.createJob({
            id,
            tenant: 'bench',
            spec,
            decision: await decideLocally(box, id, spec),
            origin: operatorOrigin(),
            owner: currentOwner(box.paths.root),
          });
          const { record } = await executeJob(box, job);
          if (record.state !== 'succeeded') throw new Error(`pooled job ${record.state}: ${record.error}`);
          if (i > 0) {
            if (!record.handle?.attributes.fromWarmPool)
              throw new Error('a pooled job found no pooled sandbox');
            pooled.push(record.startupMs ?? NaN);
          }
        }
      } finally {
        await box.close();
      }
    }

    // The raw runtime on the same OCI config (same seccomp, mounts, limits) and a root like a
    // job's (the image's layers under an overlay on a tmpfs), mounted once: what Boxcar's
    // startupMs has on top of it includes mounting that root for each job.
    const bundle = path.join(root, 'bundle');
    await mkdir(bundle);
    const rootPath = await mountJobRoot(
      bundle,
      imageLayers(image),
      JobSpec.parse({ command: ['true'] }).limits.rootfsBytes,
    );
    const runcRoot = path.join(root, 'runc');
    const raw: number[] = [];
    for (let i = 0; i < RUNS + 1; i++) {
      const id = randomUUID();
      const spec = ociSpec({
        jobId: id,
        spec: JobSpec.parse({ command: ['true'] }),
        image,
        rootPath,
        cgroupsPath: `/boxcar-bench/${id}`,
      });
      await writeFile(path.join(bundle, 'config.json'), JSON.stringify(spec));
      const r = timeCommand(RAW[runtime].bin, [
        ...RAW[runtime].flags(runcRoot),
        'run',
        '--bundle',
        bundle,
        id,
      ]);
      if (i > 0) raw.push(r.ms);
    }

    // podman run --rm with runc, same rootfs imported as an image.
    const podman: number[] = [];
    if (spawnSync('which', ['podman']).status !== 0) {
      execFileSync('apt-get', ['install', '-y', '-qq', 'podman'], {
        stdio: 'ignore',
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      });
    }
    const pm = [
      '--root',
      path.join(root, 'pm/root'),
      '--runroot',
      path.join(root, 'pm/runroot'),
      '--tmpdir',
      path.join(root, 'pm/tmp'),
      '--cgroup-manager',
      'cgroupfs',
      '--events-backend',
      'file',
      '--storage-driver',
      'overlay',
    ];
    const tar = path.join(root, 'rootfs.tar');
    execFileSync('tar', ['-C', rootPath, '-cf', tar, '.']);
    execFileSync('podman', [...pm, 'import', '--change', 'CMD ["/bin/sh"]', tar, 'localhost/bb:latest'], {
      stdio: 'ignore',
    });
    const podmanRun = [
      'run',
      '--rm',
      '--network',
      'none',
      '--ulimit',
      'nofile=1024:1024',
      '--ulimit',
      'nproc=4096:4096',
      'localhost/bb:latest',
      '/bin/true',
    ];
    const pmRuntime = RAW[runtime].podman;
    timeCommand('podman', [...pm, ...pmRuntime, ...podmanRun]);
    for (let i = 0; i < RUNS; i++) podman.push(timeCommand('podman', [...pm, ...pmRuntime, ...podmanRun]).ms);
    spawnSync('podman', [...pm, 'system', 'reset', '--force'], { stdio: 'ignore' });
    spawnSync('umount', ['-l', path.join(root, 'pm/root/overlay')], { stdio: 'ignore' }); // podman's own bind mount

    const mRaw = median(raw);
    const tool = runtime === 'runc' ? 'runc' : 'runsc';
    const vsRaw = (v: number) => `${(v / mRaw).toFixed(2)}x`;
    console.log(`${runtime} startup, ${RUNS} runs each, medians (ms), ${os.cpus().length} cores`);
    console.log(row(['what', 'median', `vs raw ${tool}`]));
    console.log(row([`raw \`${tool} run\` (same bundle, foreground)`, mRaw, '1.00x']));
    console.log(row(['boxcar startupMs (accepted → running)', median(startup), vsRaw(median(startup))]));
    if (pooled.length)
      console.log(row(['boxcar startupMs, pooled sandbox free', median(pooled), vsRaw(median(pooled))]));
    console.log(row(['boxcar run, whole process (node + job)', median(wall), vsRaw(median(wall))]));
    console.log(row([`podman run --rm --runtime ${tool}`, median(podman), vsRaw(median(podman))]));
    console.log(`boxcar startupMs minus raw ${tool}: ${(median(startup) - mRaw).toFixed(1)} ms`);
    console.log(
      `idle pooled sandbox: ${mib(idle1?.memoryBytes)} MiB (its cgroup ${mib(idle1?.cgroupBytes)}, its conmon's PSS ${mib(idle1?.monitorPssBytes)})`,
    );
  } catch (err) {
    console.error('benchmark failed:', err);
    process.exitCode = 1;
  } finally {
    spawnSync('umount', ['-l', path.join(root, 'pm/root/overlay')], { stdio: 'ignore' }); // podman's own bind mount
    await unmountJobRoot(path.join(root, 'bundle'));
    await removeCgroup('/boxcar-bench');
    await removeScratch(root);
  }
}

await main();
