import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { errnoCode, ifExists } from '../../lib/errors.js';
import type { ImageStore } from '../image-store.js';
import type { Transfer, Transfers } from './transfers.js';

/** A piece under way that makes no progress for this long is not waited for any more. */
const FOLLOW_TIMEOUT_MS = 10_000;
/** A piece not started yet may be about to be: the node claimed it and its fetch is starting. */
const START_WAIT_MS = 1000;

export interface ServedRange {
  body: Readable;
  /** The whole blob's size, for Content-Range. */
  size: number;
}

/**
 * What this node can serve of bytes [start, end) of a blob: from the store when it has the
 * whole blob, or from a transfer under way when the range is one of its pieces, followed as it
 * is written. Undefined when it has neither.
 */
export async function servePiece(
  images: ImageStore,
  transfers: Transfers,
  digest: string,
  start: number,
  end: number,
): Promise<ServedRange | undefined> {
  const whole = await ifExists(stat(images.blobPath(digest)));
  if (whole) {
    if (end > whole.size) return undefined;
    return { body: createReadStream(images.blobPath(digest), { start, end: end - 1 }), size: whole.size };
  }
  const t = transfers.get(digest);
  if (!t) return undefined;
  const i = Math.floor(start / t.pieces.pieceSize);
  const piece = t.pieces.range(i);
  if (piece.start !== start || piece.end !== end) return undefined;
  if (!t.pieces.has(i) && !t.writing.has(i)) {
    await Promise.race([once(t.events, 'change'), new Promise((r) => setTimeout(r, START_WAIT_MS).unref())]);
    if (!t.pieces.has(i) && !t.writing.has(i)) return undefined;
  }
  return { body: Readable.from(followPiece(images, t, i)), size: t.pieces.size };
}

/** A piece's bytes as they are written; fails if its transfer gives it up or stalls. */
async function* followPiece(images: ImageStore, t: Transfer, i: number): AsyncGenerator<Buffer> {
  const { start, end } = t.pieces.range(i);
  // The file moves into the store once the blob is whole: an open handle follows it there.
  const fh = await open(t.file, 'r').catch(async (err: unknown) => {
    if (errnoCode(err) !== 'ENOENT') throw err;
    return open(images.blobPath(t.digest), 'r');
  });
  try {
    let pos = start;
    while (pos < end) {
      const upTo = t.pieces.has(i) ? end : start + (t.writing.get(i) ?? 0);
      if (upTo > pos) {
        const buf = Buffer.allocUnsafe(Math.min(256 * 1024, upTo - pos));
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) throw new Error(`piece ${i} of ${t.digest} is shorter on disk than written`);
        pos += bytesRead;
        yield buf.subarray(0, bytesRead);
        continue;
      }
      if (!t.writing.has(i)) throw new Error(`piece ${i} of ${t.digest} was given up by this node`);
      const timer = new AbortController();
      const timeout = setTimeout(() => timer.abort(), FOLLOW_TIMEOUT_MS);
      try {
        await once(t.events, 'change', { signal: timer.signal });
      } catch {
        throw new Error(`piece ${i} of ${t.digest} made no progress for ${FOLLOW_TIMEOUT_MS} ms`);
      } finally {
        clearTimeout(timeout);
      }
    }
  } finally {
    await fh.close();
  }
}
