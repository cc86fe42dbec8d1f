import { test } from 'node:test';
import assert from 'node:assert/strict';
import { verifyIsolationCli } from '../testing/verify-cli.js';
import { leftovers, tempState } from '../testing/harness.js';
import { SYSCALL_PROBES } from './verify.js';

test('boxcar verify-isolation on firecracker: the guest sees no host files, processes or network; limits hold', async (t) => {
  const state = await tempState();
  t.after(() => state.cleanup());
  const results = verifyIsolationCli(state.root, ['--runtime', 'firecracker']);
  assert.ok(results.length >= SYSCALL_PROBES.length + 17, `${results.length} probes`);
  for (const p of results) assert.equal(p.verdict, 'blocked', `${p.probe}: ${p.detail}`);
  // Inside the guest the same seccomp filter answers as in a container.
  for (const name of SYSCALL_PROBES)
    assert.equal(results.find((x) => x.probe === name)?.detail, 'EPERM', name);
  assert.deepEqual(await leftovers(state), []);
});
