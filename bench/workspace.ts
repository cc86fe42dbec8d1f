/**
 * What a job's workspace costs at its start, beside the tools a user would pick instead:
 * - a warm checkout (the node's mirror already has the commit) of a ~100 MB repository, and
 *   what it adds to a runc job's `startupMs`, beside `git clone --depth 1` of the same commit;
 * - restoring a cache of 10,000 small files, beside `tar -x` of the same files.
 * Run: node dist/bench/workspace.js [runs]   (root)
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Mirrors } from '../src/checkout/mirror.js';
import { silentLogger } from '../src/observability/logger.js';
import { mountTmpfs, unmount } from '../src/runtimes/shared/mounts.js';
import { testBoxcar } from '../src/testing/harness.js';
import { Caches } from '../src/workspace/caches.js';
import { median, row, timeCommand } from './lib/stats.js';
import { removeScratch } from './lib/scratch.js';

const RUNS = Number(process.argv[2] ?? 7);
const MiB = 2 ** 20;

const git = (cwd: string, ...args: string[]) =>
  execFileSync('git', ['-c', 'user.name=b', '-c', 'user.email=b@b', ...args], {
    cwd,
    encoding: 'utf8',
  }).trim();

/** A repository of about 100 MB: 400 files of 256 KiB (incompressible) and 4,000 small sources. */
async function bigRepository(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  git(dir, 'init', '-q');
  for (let i = 0; i < 400; i++) {
    await mkdir(path.join(dir, 'assets', String(i % 20)), { recursive: true });
    await writeFile(path.join(dir, 'assets', String(i % 20), `blob${i}.bin`), randomBytes(256 * 1024));
  }
  for (let i = 0; i < 4000; i++) {
    await mkdir(path.join(dir, 'src', String(i % 100)), { recursive: true });
    await writeFile(
      path.join(dir, 'src', String(i % 100), `mod${i}.js`),
      `export const n${i} = ${i};\n`.repeat(20),
    );
  }
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '-m', 'big');
  return git(dir, 'rev-parse', 'HEAD');
}

async function timed<T>(fn: () => Promise<T>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function main() {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-bench-ws-'));
  const targets: string[] = [];
  const scratch = async (name: string, bytes = 512 * MiB) => {
    const dir = path.join(root, 'ws', name);
    await mountTmpfs(dir, { bytes, mode: 0o755 });
    targets.push(dir);
    return dir;
  };
  try {
    const repo = path.join(root, 'repo');
    const commit = await bigRepository(repo);
    const size = Number(
      execFileSync('du', ['-sb', path.join(repo, '.git')], { encoding: 'utf8' }).split('\t')[0],
    );

    // Warm checkout: the mirror has the commit, git writes it into a fresh tmpfs.
    const mirrors = new Mirrors({
      dir: path.join(root, 'mirrors'),
      protocols: ['file'],
      logger: silentLogger(),
    });
    await mirrors.ensureCommit(repo, commit);
    const boxcar: number[] = [];
    const clone: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const a = await scratch(`b${i}`);
      boxcar.push(await timed(() => mirrors.checkout({ url: repo, commit, submodules: false, workTree: a })));
      const b = await scratch(`c${i}`);
      clone.push(
        timeCommand('git', ['clone', '-q', '--depth', '1', '--no-tags', `file://${repo}`, path.join(b, 'w')])
          .ms,
      );
    }

    // The same, as a runc job's startupMs: a job with the checkout against one without.
    const box = await testBoxcar();
    const withCheckout: number[] = [];
    const without: number[] = [];
    try {
      const job = async (extra: Record<string, unknown>) =>
        (
          await box.runJob({
            runtime: 'runc',
            command: ['true'],
            resources: { workspace: '512Mi' },
            ...extra,
          })
        ).record;
      await job({ checkout: { url: repo, commit } }); // fills the node's mirror: later ones are warm
      for (let i = 0; i < RUNS; i++) {
        const w = await job({ checkout: { url: repo, commit } });
        if (w.state !== 'succeeded') throw new Error(`job with a checkout: ${w.state} ${w.error}`);
        withCheckout.push(w.startupMs as number);
        without.push((await job({})).startupMs as number);
      }
    } finally {
      await box.cleanup();
    }

    // A cache of 10,000 small files: restored by Boxcar, and by tar -x from the same tar.
    const ws = await scratch('cache-src');
    for (let d = 0; d < 100; d++) {
      await mkdir(path.join(ws, 'node_modules', `pkg${d}`, 'lib'), { recursive: true });
      for (let f = 0; f < 100; f++)
        await writeFile(
          path.join(ws, 'node_modules', `pkg${d}`, 'lib', `f${f}.js`),
          `module.exports = ${d * 100 + f};\n`,
        );
    }
    const caches = new Caches(path.join(root, 'caches'), 4096 * MiB, silentLogger());
    const scope = { tenant: 't', repository: 'r', namespace: 'trusted' as const };
    await caches.save(scope, 'k', ws, ['node_modules/'], 512 * MiB);
    const blobDir = path.join(root, 'caches', 'trusted', 'blobs', 'sha256');
    const tarFile = path.join(blobDir, execFileSync('ls', [blobDir], { encoding: 'utf8' }).trim());
    const restore: number[] = [];
    const untar: number[] = [];
    const limits = { maxBytes: 512 * MiB, maxEntries: 1_000_000, maxPathLength: 4096 };
    for (let i = 0; i < RUNS; i++) {
      const a = await scratch(`r${i}`);
      restore.push(await timed(() => caches.restore(scope, 'k', a, limits)));
      const b = await scratch(`t${i}`);
      untar.push(timeCommand('tar', ['-xf', tarFile, '-C', b]).ms);
    }

    console.log(
      `workspace: ${RUNS} runs each, medians; repository .git ${(size / MiB).toFixed(0)} MiB, 4,400 files`,
    );
    console.log(row(['', 'Boxcar', 'instead', 'ratio']));
    const cmp = (what: string, ours: number[], theirs: number[]) =>
      console.log(
        row([what, median(ours), median(theirs), `${(median(ours) / median(theirs)).toFixed(2)}×`]),
      );
    cmp('warm checkout ms (vs git clone --depth 1)', boxcar, clone);
    cmp('runc startupMs with checkout (vs without)', withCheckout, without);
    console.log(row(['  added to startupMs by the checkout', median(withCheckout) - median(without)]));
    cmp('cache restore ms, 10,000 files (vs tar -x)', restore, untar);
  } finally {
    for (const t of targets) await unmount(t);
    await removeScratch(root);
  }
}

await main();
