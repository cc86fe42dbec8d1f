import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { capResources, moduleLimits, nonWasiImports, PAGE, TABLE_ELEMENT_BYTES } from './module.js';

/** `(module (memory (export "memory") MIN MAX?) (func (export "grow") (param i32) (result i32) …) (data …))` */
function moduleWith(min: number, max: number | undefined, data: number[]): Uint8Array {
  const leb = (v: number) => {
    const out: number[] = [];
    do {
      let b = v & 0x7f;
      v >>>= 7;
      if (v) b |= 0x80;
      out.push(b);
    } while (v);
    return out;
  };
  const section = (id: number, body: number[]) => [id, ...leb(body.length), ...body];
  const limits = max === undefined ? [0, ...leb(min)] : [1, ...leb(min), ...leb(max)];
  const name = (s: string) => [s.length, ...Buffer.from(s)];
  return Uint8Array.from([
    ...[0, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
    ...section(1, [1, 0x60, 1, 0x7f, 1, 0x7f]), // type (i32) -> i32
    ...section(3, [1, 0]), // one function of that type
    ...section(5, [1, ...limits]),
    ...section(7, [2, ...name('memory'), 2, 0, ...name('grow'), 0, 0]),
    ...section(10, [1, ...leb(6), 0, 0x20, 0, 0x40, 0, 0x0b]), // local.get 0; memory.grow; end
    ...section(11, [1, 0, 0x41, 0, 0x0b, ...leb(data.length), ...data]), // active data at 0
  ]);
}

test('capResources caps the memory maximum, keeps the minimum, and copies everything else unchanged', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 20 }),
      fc.option(fc.integer({ min: 20, max: 70_000 }), { nil: undefined }),
      fc.integer({ min: 1, max: 300 }),
      fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 300 }),
      (min, max, cap, data) => {
        const bytes = moduleWith(min, max, data);
        if (min > cap) {
          assert.throws(
            () => capResources(bytes, { maxPages: cap, maxTableElements: 1 }),
            /needs \d+ pages .* more than the job's limit/,
          );
          return;
        }
        const capped = capResources(bytes, { maxPages: cap, maxTableElements: 1 });
        const instance = new WebAssembly.Instance(new WebAssembly.Module(capped));
        const memory = instance.exports.memory as WebAssembly.Memory;
        const grow = instance.exports.grow as (pages: number) => number;
        assert.equal(memory.buffer.byteLength, min * PAGE);
        const limit = Math.min(max ?? cap, cap);
        assert.equal(grow(limit - min + 1), -1, 'growing past the cap fails inside the module');
        assert.equal(grow(limit - min), min, 'growing to the cap succeeds');
        if (data.length) assert.deepEqual([...new Uint8Array(memory.buffer, 0, data.length)], data);
      },
    ),
    { numRuns: 200 },
  );
});

test('capResources refuses what is not a WebAssembly module', () => {
  assert.throws(
    () => capResources(Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]), moduleLimits(PAGE)),
    /bad magic/,
  );
});

/** `(module (table (export "t") MIN MAX? funcref) (func (export "grow") (param i32) (result i32) ref.null func; local.get 0; table.grow 0))` */
function tableModule(min: number, max: number | undefined): Uint8Array {
  const leb = (v: number) => {
    const out: number[] = [];
    do {
      let b = v & 0x7f;
      v >>>= 7;
      if (v) b |= 0x80;
      out.push(b);
    } while (v);
    return out;
  };
  const section = (id: number, body: number[]) => [id, ...leb(body.length), ...body];
  const limits = max === undefined ? [0, ...leb(min)] : [1, ...leb(min), ...leb(max)];
  const code = [0, 0xd0, 0x70, 0x20, 0, 0xfc, 15, 0, 0x0b]; // no locals; ref.null func; local.get 0; table.grow 0; end
  return Uint8Array.from([
    ...[0, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
    ...section(1, [1, 0x60, 1, 0x7f, 1, 0x7f]),
    ...section(3, [1, 0]),
    ...section(4, [1, 0x70, ...limits]),
    ...section(7, [2, 1, 0x74, 1, 0, 4, ...Buffer.from('grow'), 0, 0]),
    ...section(10, [1, ...leb(code.length), ...code]),
  ]);
}

test('a table without a maximum cannot grow past the job’s share: table.grow fails inside the module', () => {
  const memoryBytes = 16 * 2 ** 20;
  const cap = memoryBytes / TABLE_ELEMENT_BYTES;
  for (const max of [undefined, 2 ** 32 - 1]) {
    const instance = new WebAssembly.Instance(
      new WebAssembly.Module(capResources(tableModule(1, max), moduleLimits(memoryBytes))),
    );
    const grow = instance.exports.grow as (n: number) => number;
    const table = instance.exports.t as WebAssembly.Table;
    assert.equal(grow(cap), -1, 'past the cap');
    assert.equal(grow(cap - 1), 1, 'up to the cap');
    assert.equal(table.length, cap);
    assert.equal(grow(1), -1);
  }
  assert.throws(
    () => capResources(tableModule(cap + 1, undefined), moduleLimits(memoryBytes)),
    /a table of \d+ elements at start/,
  );
});

test('imports other than WASI are named, read from the bytes without compiling them', () => {
  const wasi = new TextEncoder().encode('wasi_snapshot_preview1');
  const imp = (mod: Uint8Array, name: string, desc: number[]) => [
    mod.length,
    ...mod,
    name.length,
    ...Buffer.from(name),
    ...desc,
  ];
  const env = Buffer.from('env');
  const body = [
    3,
    ...imp(wasi, 'fd_write', [0, 0]),
    ...imp(env, 'system', [0, 0]),
    ...imp(env, 'mem', [2, 1, 1, 2]),
  ];
  const bytes = Uint8Array.from([
    0,
    0x61,
    0x73,
    0x6d,
    1,
    0,
    0,
    0,
    1,
    4,
    1,
    0x60,
    0,
    0,
    2,
    body.length,
    ...body,
  ]);
  assert.deepEqual(nonWasiImports(bytes), ['env.system (function)', 'env.mem (memory)']);
});
