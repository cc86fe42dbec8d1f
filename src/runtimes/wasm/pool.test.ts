import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { leftovers, tempState } from '../../testing/harness.js';
import { silentLogger } from '../../observability/logger.js';
import { existingCgroupDirs } from '../shared/cgroups.js';
import { prepareConfinement, type Confinement } from './launcher.js';
import { WasmPool, type PoolJob } from './pool.js';
import { capResources, moduleLimits } from './module.js';

const MiB = 2 ** 20;
const WASM = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../wasm');
const HELLO = path.join(WASM, 'hello.wasm');

let state: Awaited<ReturnType<typeof tempState>>;
let confinement: Confinement;
before(async () => {
  state = await tempState();
  confinement = await prepareConfinement(state.root, path.join(state.root, 'wasm'));
});
after(async () => {
  const left = await leftovers(state);
  await state.cleanup();
  assert.deepEqual(left, []);
});

function hello(affinity: string): PoolJob & { text: () => string } {
  const chunks: Buffer[] = [];
  return {
    affinity,
    workspaceBytes: 8 * MiB,
    memoryBytes: 32 * MiB,
    key: 'hello',
    bytes: capResources(readFileSync(HELLO), moduleLimits(32 * MiB)),
    args: ['hello'],
    env: {},
    output: (c) => chunks.push(Buffer.from(c)),
    text: () => Buffer.concat(chunks).toString(),
  };
}

test('a worker serves one tenant and trust only: never a job of another, even when the pool is full', async () => {
  const pool = new WasmPool({
    size: 2,
    defaultWorkspaceBytes: 8 * MiB,
    defaultMemoryBytes: 32 * MiB,
    confinement: async () => confinement,
    logger: silentLogger(),
  });
  const served = new Map<number, Set<string>>();
  const cgroups: string[] = [];
  try {
    await pool.warm();
    for (const affinity of [
      'a/trusted',
      'a/trusted',
      'b/untrusted',
      'a/untrusted',
      'a/trusted',
      'c/untrusted',
      'b/untrusted',
    ]) {
      const job = hello(affinity);
      const running = pool.run(job);
      const exit = await running.done;
      assert.equal(exit.exitCode, 7);
      assert.equal(job.text(), 'hello from wasm\n', 'the job’s output, all of it, and only it');
      const pid = running.pid() as number;
      served.set(pid, (served.get(pid) ?? new Set()).add(affinity));
      cgroups.push(...pool.workers().map((w) => w.cgroup));
      assert.ok(pool.workers().length <= 2);
    }
    for (const [pid, whom] of served)
      assert.equal(whom.size, 1, `worker ${pid} served ${[...whom].join(', ')}`);
    assert.ok(
      [...served.values()].some((whom) => whom.has('a/trusted')) &&
        [...served].filter(([, w]) => w.has('a/trusted')).length < 3,
      'a tenant’s next job goes to the worker that serves it (when it is still there)',
    );
  } finally {
    await pool.close();
  }
  assert.deepEqual(pool.workers(), []);
  for (const c of new Set(cgroups)) assert.deepEqual(existingCgroupDirs(c), [], `cgroup ${c} removed`);
});

test('a stopped job’s worker is killed and replaced; a worker that cannot start fails the job with its reason', async () => {
  const pool = new WasmPool({
    size: 1,
    defaultWorkspaceBytes: 8 * MiB,
    defaultMemoryBytes: 32 * MiB,
    confinement: async () => confinement,
    logger: silentLogger(),
  });
  try {
    const spin = {
      ...hello('a/trusted'),
      key: 'spin',
      bytes: Uint8Array.from([
        0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 5, 3, 1, 0, 1, 7, 19, 2, 6, 109, 101, 109,
        111, 114, 121, 2, 0, 6, 95, 115, 116, 97, 114, 116, 0, 0, 10, 9, 1, 7, 0, 3, 64, 12, 0, 11, 11,
      ]), // (module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))
    };
    const running = pool.run(spin);
    await running.started;
    const pid = running.pid();
    running.kill();
    assert.equal((await running.done).exitCode, 137);
    const next = pool.run(hello('a/trusted'));
    assert.equal((await next.done).exitCode, 7);
    assert.notEqual(next.pid(), pid, 'a fresh worker');
  } finally {
    await pool.close();
  }
  const broken = new WasmPool({
    size: 1,
    defaultWorkspaceBytes: 8 * MiB,
    defaultMemoryBytes: 32 * MiB,
    confinement: async () => ({ ...confinement, seccompFile: path.join(state.root, 'missing.bpf') }),
    logger: silentLogger(),
  });
  try {
    await assert.rejects(
      broken.run(hello('a/trusted')).done,
      /did not start: wasm-launcher: open .*missing\.bpf/,
    );
  } finally {
    await broken.close();
  }
});

test('a worker frees a large job’s memory before its next job, and small jobs’ memory within a bound', async () => {
  const pool = new WasmPool({
    size: 1,
    defaultWorkspaceBytes: 8 * MiB,
    defaultMemoryBytes: 64 * MiB,
    confinement: async () => confinement,
    logger: silentLogger(),
  });
  const charged = () => {
    const [w] = pool.workers();
    assert.ok(w, 'one worker');
    return Number(readFileSync(`/sys/fs/cgroup/memory${w.cgroup}/memory.usage_in_bytes`, 'utf8'));
  };
  try {
    await pool.warm();
    const idle = charged();
    const alloc = {
      ...hello('a/trusted'),
      memoryBytes: 64 * MiB,
      key: 'alloc',
      bytes: capResources(readFileSync(path.join(WASM, 'alloc.wasm')), moduleLimits(64 * MiB)),
      args: ['alloc'],
    };
    const big = await pool.run(alloc).done;
    assert.equal(big.exitCode, 3, `allocated until its limit: ${big.trap}`);
    assert.ok(big.memoryBytes > 48 * MiB, `it held ${big.memoryBytes} bytes`);
    // Released in stages (node:wasi's objects): gone within a few jobs, whatever they are.
    let after = 0;
    while (charged() > idle + 16 * MiB && after < 5) {
      assert.equal((await pool.run({ ...hello('a/trusted'), memoryBytes: 64 * MiB }).done).exitCode, 7);
      after++;
    }
    assert.ok(
      charged() < idle + 16 * MiB,
      `its ${big.memoryBytes >> 20} MiB still charged ${after} jobs later`,
    );
    for (let i = 0; i < 200; i++)
      assert.equal((await pool.run({ ...hello('a/trusted'), memoryBytes: 64 * MiB }).done).exitCode, 7);
    assert.ok(
      charged() < idle + 24 * MiB,
      `200 small jobs later: ${charged() >> 20} MiB, idle ${idle >> 20} MiB`,
    );
  } finally {
    await pool.close();
  }
});
