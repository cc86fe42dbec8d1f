import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ifExists } from '../lib/errors.js';

/**
 * Content-addressed files (`sha256/<hex>`) for what jobs leave behind: artifacts and caches.
 * A blob is written under a temporary name and renamed once whole, so a reader never sees
 * half of one; the same content is stored once.
 */
export class BlobStore {
  constructor(readonly dir: string) {}

  path(digest: string): string {
    const hex = /^sha256:([0-9a-f]{64})$/.exec(digest)?.[1];
    if (!hex) throw new Error(`not a sha256 digest: ${digest}`);
    return path.join(this.dir, 'sha256', hex);
  }

  async put(source: Readable): Promise<{ digest: string; bytes: number }> {
    await mkdir(path.join(this.dir, 'sha256'), { recursive: true, mode: 0o700 });
    const tmp = path.join(this.dir, `.${randomUUID()}.tmp`);
    const hash = createHash('sha256');
    let bytes = 0;
    const count = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        bytes += chunk.length;
        cb(null, chunk);
      },
    });
    try {
      await pipeline(source, count, createWriteStream(tmp, { mode: 0o600 }));
      const digest = `sha256:${hash.digest('hex')}`;
      await rename(tmp, this.path(digest));
      return { digest, bytes };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async has(digest: string): Promise<boolean> {
    return (await ifExists(stat(this.path(digest)))) !== undefined;
  }

  async remove(digest: string): Promise<void> {
    await rm(this.path(digest), { force: true });
  }
}
