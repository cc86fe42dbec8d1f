import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { sleep } from './exec.js';
import { growingFile } from './growing-file.js';

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

async function withFile(fn: (file: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'bx-grow-'));
  try {
    const file = path.join(dir, 'blob');
    await writeFile(file, '');
    await fn(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Writes `data` front to back in pieces, pausing between them, as a download would. */
async function writeSlowly(file: string, data: Buffer, progress: { bytes: number }): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    for (let at = 0; at < data.length; at += 64 * 1024) {
      const n = Math.min(64 * 1024, data.length - at);
      await fh.write(data, at, n, at);
      progress.bytes = at + n;
      await sleep(5);
    }
  } finally {
    await fh.close();
  }
}

test('a reader keeps pace with a writer and ends with its last byte, even once the file is removed', async () => {
  await withFile(async (file) => {
    const data = Buffer.from(Array.from({ length: 1024 * 1024 }, (_, i) => i % 251));
    const progress = { bytes: 0 };
    const written = writeSlowly(file, data, progress).then(() => rm(file));
    const read = await collect(await growingFile(file, written, digestOf(data), () => progress.bytes));
    assert.deepEqual(read, data);
  });
});

test('a writer that starts over with different bytes fails the reader; a failed writer fails it too', async () => {
  await withFile(async (file) => {
    const first = Buffer.alloc(512 * 1024, 1);
    const final = Buffer.alloc(512 * 1024, 2);
    // A download that starts over: the count of written bytes goes back.
    const progress = { bytes: 0 };
    const restarted = (async () => {
      await writeSlowly(file, first.subarray(0, 256 * 1024), progress);
      await sleep(50);
      await writeSlowly(file, final, progress);
    })();
    await assert.rejects(
      collect(await growingFile(file, restarted, digestOf(final), () => progress.bytes)),
      /went back/,
    );
    // Pieces fetched again after a bad one: the same offsets, other bytes, and the count never
    // goes back, so only the digest can tell.
    const before = { bytes: 0 };
    const again = { bytes: 0 };
    const refetched = (async () => {
      await writeSlowly(file, first.subarray(0, 256 * 1024), before);
      await sleep(50);
      await writeSlowly(file, final, again);
    })();
    await assert.rejects(
      collect(await growingFile(file, refetched, digestOf(final), () => Math.max(before.bytes, again.bytes))),
      /changed under its reader/,
    );
  });
  await withFile(async (file) => {
    const failed = sleep(30).then(() => Promise.reject(new Error('connection reset')));
    await assert.rejects(
      collect(await growingFile(file, failed, digestOf(Buffer.alloc(0)), () => 0)),
      /connection reset/,
    );
  });
});

test('a reader destroyed unread closes its file', async () => {
  await withFile(async (file) => {
    const fds = async () => (await readdir('/proc/self/fd')).length;
    const before = await fds();
    const reader = await growingFile(file, new Promise(() => undefined), digestOf(Buffer.alloc(0)), () => 0);
    assert.equal(await fds(), before + 1);
    reader.destroy();
    await sleep(30); // the close is asynchronous
    assert.equal(await fds(), before);
  });
});
