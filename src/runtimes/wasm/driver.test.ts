import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { leftovers, testBoxcar } from '../../testing/harness.js';

/** WASM jobs for real: the sample modules built by set-up from examples/wasm/*.c. */
const WASM = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../wasm');
const mod = (name: string) => path.join(WASM, `${name}.wasm`);
type Box = Awaited<ReturnType<typeof testBoxcar>>;

describe('wasm driver', () => {
  let box: Box;
  const job = (input: Record<string, unknown>) => box.runJob({ runtime: 'wasm', ...input });
  before(async () => {
    box = await testBoxcar();
  });
  after(async () => {
    const left = await leftovers(box.paths);
    await box.cleanup();
    assert.deepEqual(left, []);
  });

  test('a module prints a line and exits 7 through proc_exit; memory and startup are reported', async () => {
    const { record, output } = await job({ image: mod('hello') });
    assert.equal(record.state, 'failed');
    assert.equal(record.exitCode, 7);
    assert.equal(output, 'hello from wasm\n');
    assert.ok((record.peakMemoryBytes ?? 0) >= 65_536, 'linear memory size');
    assert.ok(record.startupMs !== null && record.startupMs >= 0);
    const again = await job({ image: mod('hello') });
    assert.equal(again.record.exitCode, 7, 'the cached module runs again');
  });

  test('an infinite loop is stopped at the timeout and reported timed out', async () => {
    const t0 = Date.now();
    const { record } = await job({ image: mod('spin'), timeout: '1s' });
    assert.equal(record.state, 'timeout');
    assert.equal(record.timedOut, true);
    assert.ok(Date.now() - t0 < 6000);
    const after = await job({ image: mod('hello') });
    assert.equal(after.record.exitCode, 7, 'the pool replaced the stopped thread');
  });

  test('allocating past --memory fails cleanly inside the module', async () => {
    const { record, output } = await job({ image: mod('alloc'), resources: { memory: '16Mi' } });
    assert.equal(record.exitCode, 3);
    assert.match(output, /allocation failed after 1[0-6] MiB/);
    assert.ok((record.peakMemoryBytes ?? 0) <= 16 * 2 ** 20);
  });

  test('the module sees only its workspace: no host paths', async () => {
    const ok = await job({ image: mod('checksum'), command: ['/workspace'] });
    assert.equal(ok.record.exitCode, 0, ok.output);
    const host = await job({ image: mod('checksum'), command: ['/etc'] });
    assert.equal(host.record.exitCode, 1);
    assert.match(host.output, /\/etc: /);
  });

  test('a trap fails the job with the trap message; non-WASI imports are refused', async (t) => {
    const dir = box.paths.root;
    const wat = (name: string, text: string) => {
      writeFileSync(path.join(dir, `${name}.wat`), text);
      execFileSync('wat2wasm', [path.join(dir, `${name}.wat`), '-o', path.join(dir, `${name}.wasm`)]);
      return path.join(dir, `${name}.wasm`);
    };
    t.diagnostic('modules written with wabt’s wat2wasm');
    const trap = await job({
      image: wat('trap', '(module (memory (export "memory") 1) (func (export "_start") unreachable))'),
    });
    assert.equal(trap.record.exitCode, 134);
    assert.match(trap.output, /wasm trap: RuntimeError: unreachable/);
    const oob = await job({
      image: wat(
        'oob',
        '(module (memory (export "memory") 1) (func (export "_start") i32.const 70000 i32.load drop))',
      ),
    });
    assert.equal(oob.record.exitCode, 134);
    assert.equal(oob.record.oomKilled, false, 'an out-of-bounds access is not the memory limit');
    assert.match(oob.output, /memory access out of bounds/);
    const foreign = await job({
      image: wat(
        'foreign',
        '(module (import "env" "system" (func $s (param i32))) (memory (export "memory") 1) (func (export "_start")))',
      ),
    });
    assert.equal(foreign.record.state, 'error');
    assert.match(foreign.record.error ?? '', /imports env\.system \(function\): only WASI preview1/);
  });
});
