import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import type { ProbeResult } from '../isolation/verify.js';
import { BOXCAR_MAIN } from './serve-process.js';

/**
 * `boxcar --state STATE [GLOBALS…] verify-isolation --json ARGS…` as an operator runs it: it
 * must exit 0 and report every probe passed; returns the probes' results.
 */
export function verifyIsolationCli(state: string, args: string[], globals: string[] = []): ProbeResult[] {
  const r = spawnSync(
    process.execPath,
    [BOXCAR_MAIN, '--state', state, ...globals, 'verify-isolation', ...args, '--json'],
    { encoding: 'utf8', timeout: 300_000 },
  );
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const { passed, results } = JSON.parse(r.stdout) as { passed: boolean; results: ProbeResult[] };
  assert.equal(passed, true);
  return results;
}
