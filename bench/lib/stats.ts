import { performance } from 'node:perf_hooks';
import { spawnSync } from 'node:child_process';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
}

/** Wall time of a command run to completion, in ms; throws if it fails. */
export function timeCommand(
  cmd: string,
  args: string[],
  env?: NodeJS.ProcessEnv,
): { ms: number; stdout: string } {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: env ?? process.env });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return { ms, stdout: r.stdout };
}

export function row(cells: Array<string | number>): string {
  return cells
    .map((c, i) => String(typeof c === 'number' ? c.toFixed(1) : c).padEnd(i === 0 ? 44 : 12))
    .join('');
}
