import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { sleep } from './exec.js';

const POLL_MS = 15;
const CHUNK = 256 * 1024;

/**
 * Reads a file while another writer is still filling it (a download), until `done` settles
 * and the last byte is read: the reader keeps pace with the writer instead of waiting for it.
 * `written` says how many bytes from the start are in the file so far. The file is opened
 * before this returns, so the writer may remove it once done; the handle closes when the
 * stream does (read to its end, failed, or destroyed unread).
 *
 * A writer that starts over rewrites bytes the reader may already have passed, so what was
 * read is checked against the file's known final `digest` before the stream ends: a writer
 * going back (`written` shrinking) or a different hash fails the stream.
 */
export async function growingFile(
  file: string,
  done: Promise<unknown>,
  digest: string,
  written: () => number,
): Promise<Readable> {
  let settled: { ok: boolean; err?: unknown } | undefined;
  done.then(
    () => (settled = { ok: true }),
    (err: unknown) => (settled = { ok: false, err }),
  );
  const fh = await open(file, 'r');
  async function* chunks() {
    let pos = 0;
    const hash = createHash('sha256');
    for (;;) {
      const finished = settled; // read after this: every byte of a finished writer is in the file
      const size = written();
      if (size < pos) throw new Error(`${file} went back while it was being read: its writer started over`);
      if (size > pos) {
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, size - pos));
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        pos += bytesRead;
        hash.update(buf.subarray(0, bytesRead));
        yield buf.subarray(0, bytesRead);
        continue;
      }
      if (finished && !finished.ok) throw finished.err;
      if (finished && `sha256:${hash.digest('hex')}` !== digest)
        throw new Error(`${file} changed under its reader: its writer started over`);
      if (finished) return;
      await sleep(POLL_MS);
    }
  }
  const stream = Readable.from(chunks());
  stream.once('close', () => void fh.close());
  return stream;
}
