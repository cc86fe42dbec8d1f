import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { UserError, errorMessage } from '../lib/errors.js';
import { sha256 } from '../lib/digest.js';
import type { ImageStore } from '../images/image-store.js';
import { importWasmModule } from '../images/wasm-artifact.js';
import { run } from '../lib/exec.js';
import { writeFileAtomic } from '../lib/fs-util.js';

/**
 * wasi-probe.c built with clang for wasm32-wasi (kept beside the image store by source digest)
 * and imported into the store: the reference a probe job names.
 */
const SOURCE = fileURLToPath(new URL('../../../src/isolation/wasi-probe.c', import.meta.url));

export async function ensureWasiProbe(store: ImageStore): Promise<string> {
  const source = await readFile(SOURCE);
  await store.init();
  const out = store.metaPath(`wasi-probe-${sha256(source).slice(7, 19)}.wasm`);
  if (existsSync(out)) return importWasmModule(store, out);
  try {
    await run('clang', ['--target=wasm32-wasi', '--sysroot=/usr', '-O2', '-o', out, SOURCE], {
      timeoutMs: 120_000,
    });
  } catch (err) {
    throw new UserError(
      `verify-isolation builds its WASI probe with clang (${errorMessage(err)}); install the Debian packages clang, lld, wasi-libc and libclang-rt-14-dev-wasm32`,
    );
  }
  return importWasmModule(store, out);
}

/**
 * A module that grows a table of no maximum by 1024 elements at a time until `table.grow` fails
 * (or 100M elements), then exits with how many thousands it got, 255 for 255 or more:
 *
 *   (module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
 *     (memory (export "memory") 1) (table $t 1 funcref)
 *     (func (export "_start") (local $n i32) (local.set $n (i32.const 1))
 *       (block $done (loop $l
 *         (br_if $done (i32.eq (table.grow $t (ref.null func) (i32.const 1024)) (i32.const -1)))
 *         (local.set $n (i32.add (local.get $n) (i32.const 1024)))
 *         (br_if $l (i32.lt_u (local.get $n) (i32.const 100000000)))))
 *       (local.set $n (i32.shr_u (local.get $n) (i32.const 10)))
 *       (call $exit (select (local.get $n) (i32.const 255) (i32.lt_u (local.get $n) (i32.const 255))))))
 */
const TABLE_GROWTH = [
  0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 2, 96, 1, 127, 0, 96, 0, 0, 2, 36, 1, 22, 119, 97, 115, 105, 95, 115,
  110, 97, 112, 115, 104, 111, 116, 95, 112, 114, 101, 118, 105, 101, 119, 49, 9, 112, 114, 111, 99, 95, 101,
  120, 105, 116, 0, 0, 3, 2, 1, 1, 4, 4, 1, 112, 0, 1, 5, 3, 1, 0, 1, 7, 19, 2, 6, 109, 101, 109, 111, 114,
  121, 2, 0, 6, 95, 115, 116, 97, 114, 116, 0, 1, 10, 68, 1, 66, 1, 1, 127, 65, 1, 33, 0, 2, 64, 3, 64, 208,
  112, 65, 128, 8, 252, 15, 0, 65, 127, 70, 13, 1, 32, 0, 65, 128, 8, 106, 33, 0, 32, 0, 65, 128, 194, 215,
  47, 73, 13, 0, 11, 11, 32, 0, 65, 10, 118, 33, 0, 32, 0, 65, 255, 1, 32, 0, 65, 255, 1, 73, 27, 16, 0, 11,
];

/** The table-growth module in the store: the reference a probe job names. */
export async function ensureTableProbe(store: ImageStore): Promise<string> {
  await store.init();
  const file = store.metaPath('table-growth-probe.wasm');
  if (!existsSync(file)) await writeFileAtomic(file, Buffer.from(TABLE_GROWTH));
  return importWasmModule(store, file);
}
