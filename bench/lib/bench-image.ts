import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { writeLayout, type TestEntry } from '../../src/testing/oci-images.js';

/**
 * A ~100 MB (compressed) image for pull benchmarks, built once and kept: busybox (so jobs run
 * in it), then four gzip layers of many files, half of each file random and half text, so it
 * compresses about as real images do and unpacking it is real work. Seeded, so every build has
 * the same digest.
 */
const CACHE = '/var/cache/boxcar/bench-image-v1';

const LAYERS = 4;
const FILES_PER_LAYER = 1500;
const FILE_BYTES = 32 * 1024;

function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

function layer(n: number, variant: number): TestEntry[] {
  const rand = prng(variant * 1000 + n + 1);
  const text = Buffer.from('the quick brown fox jumps over the lazy dog; '.repeat(FILE_BYTES / 45 + 1));
  const entries: TestEntry[] = [{ name: `layer${n}/`, type: 'directory' }];
  for (let d = 0; d < 30; d++) entries.push({ name: `layer${n}/d${d}/`, type: 'directory' });
  for (let i = 0; i < FILES_PER_LAYER; i++) {
    const content = Buffer.alloc(FILE_BYTES);
    for (let b = 0; b < FILE_BYTES / 2; b += 4) content.writeUInt32LE(Math.floor(rand() * 2 ** 32), b);
    text.copy(content, FILE_BYTES / 2, 0, FILE_BYTES / 2);
    entries.push({ name: `layer${n}/d${i % 30}/f${i}.bin`, content });
  }
  return entries;
}

/**
 * The image's OCI layout directory (tag `app`) and its total compressed size. Each `variant`
 * has other bytes, so other layer digests: an image no node holds yet.
 */
export async function benchImage(variant = 0): Promise<{ layout: string; bytes: number }> {
  const dir = variant ? `${CACHE}-${variant}` : CACHE;
  if (!existsSync(path.join(dir, 'index.json'))) {
    const tmp = `${dir}.${process.pid}.tmp`;
    await rm(tmp, { recursive: true, force: true });
    await mkdir(path.dirname(dir), { recursive: true });
    await writeLayout(
      tmp,
      'app',
      [
        [
          { name: 'bin/', type: 'directory' },
          { name: 'bin/busybox', content: readFileSync('/bin/busybox'), mode: 0o755 },
          { name: 'bin/sh', type: 'symlink', linkname: 'busybox' },
          { name: 'bin/true', type: 'symlink', linkname: 'busybox' },
        ],
        ...Array.from({ length: LAYERS }, (_, n) => layer(n, variant)),
      ],
      { compression: 'gzip', cmd: ['/bin/sh'] },
    );
    await rename(tmp, dir);
  }
  const index = JSON.parse(await readFile(path.join(dir, 'index.json'), 'utf8')) as {
    manifests: Array<{ digest: string }>;
  };
  const manifest = JSON.parse(
    await readFile(path.join(dir, 'blobs', 'sha256', (index.manifests[0]?.digest ?? '').slice(7)), 'utf8'),
  ) as { layers: Array<{ size: number }> };
  return { layout: dir, bytes: manifest.layers.reduce((n, l) => n + l.size, 0) };
}
