import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { leftovers, tempState } from '../testing/harness.js';
import { SYSCALL_PROBES, type ProbeResult } from './verify.js';

const MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url));

test('boxcar verify-isolation on firecracker: the guest sees no host files, processes or network; limits hold', async (t) => {
  const state = await tempState();
  t.after(() => state.cleanup());
  const r = spawnSync(
    process.execPath,
    [MAIN, '--state', state.root, 'verify-isolation', '--runtime', 'firecracker', '--json'],
    { encoding: 'utf8', timeout: 300_000 },
  );
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const { passed, results } = JSON.parse(r.stdout) as { passed: boolean; results: ProbeResult[] };
  assert.equal(passed, true);
  assert.ok(results.length >= SYSCALL_PROBES.length + 17, `${results.length} probes`);
  for (const p of results) assert.equal(p.verdict, 'blocked', `${p.probe}: ${p.detail}`);
  // Inside the guest the same seccomp filter answers as in a container.
  for (const name of SYSCALL_PROBES)
    assert.equal(results.find((x) => x.probe === name)?.detail, 'EPERM', name);
  assert.deepEqual(await leftovers(state), []);
});
