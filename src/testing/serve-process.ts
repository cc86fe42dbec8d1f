import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The built `boxcar` command, run as a separate process by tests and benchmarks. */
export const BOXCAR_MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url));
const SKEWED_CLOCK = fileURLToPath(new URL('./skewed-clock.js', import.meta.url));

/** Runs `boxcar ARGS…` to completion and returns its trimmed stdout; throws if it fails. */
export function boxcarSync(args: string[]): string {
  const r = spawnSync(process.execPath, [BOXCAR_MAIN, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`boxcar ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout.trim();
}

/**
 * Starts `boxcar serve` on a loopback port the kernel picks, with `args` (global options such as
 * --state, --store, --config, and serve's own), and waits for the URL it prints.
 */
export async function startServe(
  args: string[],
  opts: { clockSkewMs?: number; logs?: (line: string) => void } = {},
): Promise<{ child: ChildProcess; url: string }> {
  // A node whose clock is wrong: testing/skewed-clock.ts moves its Date.now().
  const skew = opts.clockSkewMs ? ['--import', SKEWED_CLOCK] : [];
  const child = spawn(process.execPath, [...skew, BOXCAR_MAIN, 'serve', '--listen', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', opts.logs ? 'pipe' : 'inherit'],
    env: {
      ...process.env,
      // BOXCAR_TEST_SERVE_LOG_LEVEL=debug shows what the nodes of a failing test did.
      BOXCAR_LOG_LEVEL: process.env.BOXCAR_TEST_SERVE_LOG_LEVEL ?? 'warn',
      BOXCAR_TEST_CLOCK_SKEW_MS: String(opts.clockSkewMs ?? 0),
    },
  });
  // Its log lines, to a test that reads them (what a node says when its writes are refused).
  if (opts.logs && child.stderr) createInterface({ input: child.stderr }).on('line', opts.logs);
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`boxcar serve exited with ${code}`)));
  });
  return { child, url };
}

/** Settles when the process has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) =>
    child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve()),
  );
}
