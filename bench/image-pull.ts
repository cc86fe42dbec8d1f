/**
 * Pulling a ~100 MB image across a 200 Mbit/s link (a registry in a network namespace behind
 * `tc tbf`): Boxcar's cold pull (download and unpack overlapped) beside `skopeo copy` +
 * `umoci unpack` and `podman pull`; then the warm start of a job in that cached image beside
 * one in the built-in base image.
 * Run: node dist/bench/image-pull.js [runs]   (root)
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImageStore } from '../src/images/image-store.js';
import { statePaths } from '../src/lib/state-paths.js';
import { pushLayout } from '../src/testing/oci-images.js';
import { benchImage } from './lib/bench-image.js';
import { startShapedRegistry } from './lib/shaped-registry.js';
import { median, row, timeCommand } from './lib/stats.js';
import { removeScratch } from './lib/scratch.js';

const RUNS = Number(process.argv[2] ?? 3);
const RATE_MBIT = 200;
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

async function main() {
  const { layout, bytes } = await benchImage();
  const registry = await startShapedRegistry(RATE_MBIT);
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-bench-pull-'));
  try {
    const ref = `${registry.host}/bench/app:1`;
    await pushLayout(layout, 'app', ref);
    const config = path.join(root, 'config.yaml');
    await writeFile(config, `registries:\n  insecure: ['${registry.host}']\n`);
    const boxcar = (state: string, args: string[]) =>
      timeCommand(process.execPath, [MAIN, '--state', state, '--config', config, ...args]);

    const cold: number[] = [];
    const pullMs: number[] = [];
    const unpackOnly: number[] = [];
    const download: number[] = [];
    const umoci: number[] = [];
    const podman: number[] = [];
    let pinned = '';
    for (let i = 0; i < RUNS; i++) {
      // Boxcar, from nothing: the command a user runs.
      const state = path.join(root, `state-${i}`);
      const r = boxcar(state, ['images', 'pull', '--json', ref]);
      cold.push(r.ms);
      const pulled = JSON.parse(r.stdout) as { ref: string; digest: string; pullMs: number };
      pullMs.push(pulled.pullMs);
      pinned = pulled.ref;
      // Boxcar's unpack alone: the same blobs, already here, unpacked again.
      const paths = statePaths(state);
      await rm(paths.layers, { recursive: true, force: true });
      const t0 = performance.now();
      await new ImageStore(paths).open(pulled.ref, pulled.digest);
      unpackOnly.push(performance.now() - t0);
      if (i < RUNS - 1) await rm(state, { recursive: true, force: true });

      // skopeo (download only), then umoci (unpack only): what a user would script.
      const oci = path.join(root, `oci-${i}`);
      download.push(
        timeCommand('skopeo', [
          'copy',
          '--quiet',
          '--src-tls-verify=false',
          `docker://${ref}`,
          `oci:${oci}:app`,
        ]).ms,
      );
      umoci.push(
        timeCommand('umoci', ['unpack', '--image', `${oci}:app`, path.join(root, `bundle-${i}`)]).ms,
      );
      await rm(oci, { recursive: true, force: true });
      await rm(path.join(root, `bundle-${i}`), { recursive: true, force: true });

      // podman pull into a store of its own.
      const pm = path.join(root, `podman-${i}`);
      const pmFlags = ['--root', `${pm}/root`, '--runroot', `${pm}/run`, '--storage-driver', 'overlay'];
      podman.push(timeCommand('podman', [...pmFlags, 'pull', '-q', '--tls-verify=false', ref]).ms);
      spawnSync('podman', [...pmFlags, 'system', 'reset', '--force'], { stdio: 'ignore' });
      spawnSync('umount', ['-l', `${pm}/root/overlay`], { stdio: 'ignore' });
      await rm(pm, { recursive: true, force: true });
    }

    // Warm start: a job in the cached registry image beside one in the built-in image.
    const warmState = path.join(root, `state-${RUNS - 1}`);
    const job = (image: string[]) =>
      (
        JSON.parse(
          boxcar(warmState, ['run', '--source', 'internal_repo', '--json', ...image, '--', 'true']).stdout,
        ) as { startupMs: number }
      ).startupMs;
    job([]);
    job(['--image', pinned]);
    const base: number[] = [];
    const cached: number[] = [];
    for (let i = 0; i < 10; i++) {
      base.push(job([]));
      cached.push(job(['--image', pinned]));
    }

    const mDown = median(download);
    const mUnpack = median(unpackOnly);
    const bound = Math.max(mDown, mUnpack);
    const x = (v: number) => `${(v / bound).toFixed(2)}x`;
    console.log(
      `cold pull of ${(bytes / 2 ** 20).toFixed(0)} MiB (compressed, 5 layers) over ${RATE_MBIT} Mbit/s, ${RUNS} runs, medians (ms), ${os.cpus().length} cores`,
    );
    console.log(row(['what', 'median', 'vs max(download, unpack)']));
    console.log(row(['download alone (skopeo copy)', mDown, x(mDown)]));
    console.log(row(['boxcar unpack alone (blobs here)', mUnpack, x(mUnpack)]));
    console.log(row(['boxcar images pull (whole command)', median(cold), x(median(cold))]));
    console.log(row(['boxcar pullMs', median(pullMs), x(median(pullMs))]));
    console.log(row(['skopeo copy + umoci unpack', mDown + median(umoci), x(mDown + median(umoci))]));
    console.log(row(['  umoci unpack alone', median(umoci), x(median(umoci))]));
    console.log(row(['podman pull', median(podman), x(median(podman))]));
    console.log(`target: boxcar pullMs ≤ 1.15 × max(download, unpack) = ${(1.15 * bound).toFixed(0)} ms`);
    console.log('');
    console.log('warm start, 10 runs each, medians (ms)');
    console.log(row(['job in the built-in base image: startupMs', median(base)]));
    console.log(row(['job in the cached registry image: startupMs', median(cached)]));
    console.log(`difference: ${(median(cached) - median(base)).toFixed(1)} ms (target ≤ 5 ms)`);
  } catch (err) {
    console.error('benchmark failed:', err);
    process.exitCode = 1;
  } finally {
    await registry.stop();
    await removeScratch(root);
  }
}

await main();
