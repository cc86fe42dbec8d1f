import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { UserError, errorMessage } from '../lib/errors.js';
import { sha256 } from '../lib/digest.js';
import type { ImageStore } from '../images/image-store.js';
import { run } from '../lib/exec.js';

/** wasi-probe.c built with clang for wasm32-wasi, kept beside the image store by source digest. */
const SOURCE = fileURLToPath(new URL('../../../src/isolation/wasi-probe.c', import.meta.url));

export async function ensureWasiProbe(store: ImageStore): Promise<string> {
  const source = await readFile(SOURCE);
  await store.init();
  const out = store.metaPath(`wasi-probe-${sha256(source).slice(7, 19)}.wasm`);
  if (existsSync(out)) return out;
  try {
    await run('clang', ['--target=wasm32-wasi', '--sysroot=/usr', '-O2', '-o', out, SOURCE], {
      timeoutMs: 120_000,
    });
  } catch (err) {
    throw new UserError(
      `verify-isolation builds its WASI probe with clang (${errorMessage(err)}); install the Debian packages clang, lld, wasi-libc and libclang-rt-14-dev-wasm32`,
    );
  }
  return out;
}
