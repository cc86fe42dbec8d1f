import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { verifyIsolationCli } from '../testing/verify-cli.js';
import { leftovers, tempState, testBoxcar, TEST_CONFIG } from '../testing/harness.js';
import { openStore } from '../store/open-store.js';
import { ensureProbeImage } from './probe-image.js';
import {
  CROSS_JOB_PROBES,
  PRIMING_JOB,
  SYSCALL_PROBES,
  crossJobChecks,
  runOn,
  victimScript,
} from './verify.js';

test('boxcar verify-isolation: every probe blocked on runc, gvisor and wasm; syscalls refused with EPERM', async (t) => {
  const state = await tempState();
  t.after(() => state.cleanup());
  const results = verifyIsolationCli(state.root, ['--runtime', 'runc', 'gvisor', 'wasm']);
  for (const runtime of ['runc', 'gvisor'] as const) {
    const mine = results.filter((x) => x.runtime === runtime);
    assert.ok(mine.length >= SYSCALL_PROBES.length + 14, `${runtime}: ${mine.length} probes`);
    for (const p of mine) assert.equal(p.verdict, 'blocked', `${runtime} ${p.probe}: ${p.detail}`);
    for (const name of SYSCALL_PROBES)
      assert.equal(mine.find((x) => x.probe === name)?.detail, 'EPERM', `${runtime} ${name}`);
    // The network fails closed: metadata, a changed firewall, forged sources.
    for (const name of ['metadata_address', 'firewall_tampered', 'spoofed_source'])
      assert.ok(
        mine.some((x) => x.probe === name),
        `${runtime}: no ${name} probe`,
      );
  }
  const wasm = results.filter((x) => x.runtime === 'wasm');
  assert.ok(wasm.length >= 13, `wasm: ${wasm.length} probes`);
  for (const name of ['symlink_dotdot', 'table_growth', 'worker_process'])
    assert.ok(
      wasm.some((p) => p.probe === name),
      `wasm probe ${name}`,
    );
  for (const p of wasm) assert.equal(p.verdict, 'blocked', `wasm ${p.probe}: ${p.detail}`);
  assert.deepEqual(await leftovers(state), []);
});

for (const runtime of ['runc', 'gvisor'] as const)
  test(`boxcar verify-isolation on pooled ${runtime} sandboxes: every probe blocked in a sandbox made ahead`, async (t) => {
    const state = await tempState();
    t.after(() => state.cleanup());
    const config = path.join(state.root, 'config.yaml');
    await writeFile(config, `${TEST_CONFIG}\nwarm_pools:\n  ${runtime}: 2\n`);
    const results = verifyIsolationCli(state.root, ['--runtime', runtime], ['--config', config]);
    assert.ok(results.length >= SYSCALL_PROBES.length + 14, `${results.length} probes`);
    for (const p of results) assert.equal(p.verdict, 'blocked', `${p.probe}: ${p.detail}`);
    // Jobs with a network never take a pooled sandbox; every other probe job did (verify.ts
    // primes each shape first).
    const store = await openStore(undefined, state);
    t.after(() => store.close());
    const probes = (await store.listJobs({ limit: 1000 })).filter((j) => j.spec.name !== PRIMING_JOB);
    const plain = probes.filter((j) => !j.spec.network.enabled);
    t.diagnostic(
      `${plain.length} of ${probes.length} probe jobs had no network: each ran in a pooled ${runtime} sandbox`,
    );
    assert.ok(plain.length >= 5, `${plain.length} probe jobs without network`);
    for (const j of plain)
      assert.equal(
        j.handle?.attributes.fromWarmPool,
        true,
        `${j.spec.command.join(' ').slice(0, 80)}: pooled`,
      );
    assert.deepEqual(await leftovers(state), []);
  });

test('positive control: the cross-job checks do find a victim that shares the attacker’s sandbox', async (t) => {
  const box = await testBoxcar();
  t.after(() => box.cleanup());
  const image = await ensureProbeImage(box.images);
  const mark = 'victim-0123456789ab';
  // The victim runs inside the attacker's own sandbox; PID 1 holds the mark only as "$v".
  const victim = victimScript('$v').replace(/"/g, '\\"');
  const script = `v=$(printf '%s%s' victim- 0123456789ab); sh -c "${victim}" & sleep 0.5\n${crossJobChecks(mark)}`;
  const { output } = await runOn(box, 'runc', { image, command: ['sh', '-c', script] });
  for (const probe of CROSS_JOB_PROBES) assert.match(output, new RegExp(`^${probe} ESCAPED$`, 'm'), output);
});
