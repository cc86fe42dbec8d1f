/**
 * Startup of a runc job: Boxcar (`startupMs`, and the whole `boxcar run` process) beside raw
 * `runc run` of the same bundle and `podman run --rm --runtime runc` of the same rootfs.
 * Run: node dist/bench/runc-startup.js [runs]   (root; installs podman if missing)
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { statePaths } from '../src/config/paths.js';
import { ImageStore } from '../src/images/image-store.js';
import { resolveImage } from '../src/images/resolve.js';
import { JobSpec } from '../src/jobs/spec.js';
import { removeCgroup } from '../src/runtimes/shared/cgroups.js';
import { ociSpec } from '../src/runtimes/shared/oci-spec.js';
import { median, row, timeCommand } from './lib/stats.js';

const RUNS = Number(process.argv[2] ?? 15);
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

async function main() {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-bench-'));
  try {
    const paths = statePaths(path.join(root, 'state'));
    const image = await resolveImage(new ImageStore(paths), undefined);

    // Boxcar: startupMs (acceptance → process running) and the whole CLI process.
    timeCommand(process.execPath, [MAIN, '--state', paths.root, 'run', '--json', '--', 'true']); // warm-up
    const startup: number[] = [];
    const wall: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const r = timeCommand(process.execPath, [
        MAIN,
        '--state',
        paths.root,
        'run',
        '--runtime',
        'runc',
        '--json',
        '--',
        'true',
      ]);
      startup.push((JSON.parse(r.stdout) as { startupMs: number }).startupMs);
      wall.push(r.ms);
    }

    // Raw runc run of the same OCI config (same rootfs, seccomp, mounts, limits).
    const bundle = path.join(root, 'bundle');
    await mkdir(bundle);
    const runcRoot = path.join(root, 'runc');
    const raw: number[] = [];
    for (let i = 0; i < RUNS + 1; i++) {
      const id = randomUUID();
      const spec = ociSpec({
        jobId: id,
        spec: JobSpec.parse({ command: ['true'] }),
        image,
        cgroupsPath: `/boxcar-bench/${id}`,
      });
      await writeFile(path.join(bundle, 'config.json'), JSON.stringify(spec));
      const r = timeCommand('runc', ['--root', runcRoot, 'run', '--bundle', bundle, id]);
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
    execFileSync('tar', ['-C', image.rootfsPath, '-cf', tar, '.']);
    execFileSync('podman', [...pm, 'import', '--change', 'CMD ["/bin/sh"]', tar, 'localhost/bb:latest'], {
      stdio: 'ignore',
    });
    const podmanRun = [
      'run',
      '--rm',
      '--runtime',
      '/usr/sbin/runc',
      '--network',
      'none',
      '--ulimit',
      'nofile=1024:1024',
      '--ulimit',
      'nproc=4096:4096',
      'localhost/bb:latest',
      '/bin/true',
    ];
    timeCommand('podman', [...pm, ...podmanRun]);
    for (let i = 0; i < RUNS; i++) podman.push(timeCommand('podman', [...pm, ...podmanRun]).ms);
    spawnSync('podman', [...pm, 'system', 'reset', '--force'], { stdio: 'ignore' });

    const mRaw = median(raw);
    console.log(`runc startup, ${RUNS} runs each, medians (ms), ${os.cpus().length} cores`);
    console.log(row(['what', 'median', 'vs raw runc']));
    console.log(row(['raw `runc run` (same bundle, foreground)', mRaw, '1.00x']));
    console.log(
      row([
        'boxcar startupMs (accepted → running)',
        median(startup),
        `${(median(startup) / mRaw).toFixed(2)}x`,
      ]),
    );
    console.log(
      row(['boxcar run, whole process (node + job)', median(wall), `${(median(wall) / mRaw).toFixed(2)}x`]),
    );
    console.log(
      row(['podman run --rm --runtime runc', median(podman), `${(median(podman) / mRaw).toFixed(2)}x`]),
    );
    console.log(
      `boxcar overhead above raw runc: ${(median(startup) - mRaw).toFixed(1)} ms (target ≤ 15 ms); startupMs target ≤ 100 ms`,
    );
  } finally {
    await removeCgroup('/boxcar-bench');
    await rm(root, { recursive: true, force: true });
  }
}

await main();
