import { createReadStream } from 'node:fs';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import tar from 'tar-stream';
import { errnoCode, errorMessage, UserError, withContext } from './errors.js';
import { ExecError } from './exec.js';

/** Reading untrusted tar archives (image layers, artifacts, caches) with limits. */

export interface UnpackLimits {
  /** Bytes the archives may expand to, all together. */
  maxBytes: number;
  maxEntries: number;
  maxPathLength: number;
}

/** What the archives applied so far hold against the limits. */
export interface UnpackTotals {
  bytes: number;
  entries: number;
}

/** An archive refused for one of its entries (or as a whole: entry "(archive)"). */
export class TarRefused extends UserError {
  constructor(what: string, entry: string, why: string) {
    super(`${what} refused: entry "${entry}" ${why}`);
    this.name = 'TarRefused';
  }
}

/** Failures of this host (a full disk, a missing tool), whatever the layer holds. */
const HOST_ERRNOS = new Set([
  'ENOSPC',
  'EDQUOT',
  'EIO',
  'EROFS',
  'EMFILE',
  'ENFILE',
  'ENOMEM',
  'EACCES',
  'EPERM',
]);
const isHostFailure = (err: unknown) => err instanceof ExecError || HOST_ERRNOS.has(errnoCode(err) ?? '');

/** Each entry of a tar (an image layer, artifacts, a cache) to `apply`, through decompression and the bomb guard. */
export async function readTarEntries(
  source: string | Readable,
  what: string,
  limits: UnpackLimits,
  totals: UnpackTotals,
  apply: (h: tar.Headers, body: Readable) => Promise<void>,
): Promise<void> {
  const extract = tar.extract();
  let hostFailure: unknown;
  const done = (async () => {
    for await (const entry of extract) {
      try {
        await apply(entry.header, entry);
      } catch (err) {
        if (isHostFailure(err)) hostFailure = err;
        throw err;
      } finally {
        entry.resume(); // drain what an entry left unread (a dropped device, a refused entry)
      }
    }
  })();
  const piping = pipeline(
    typeof source === 'string' ? createReadStream(source) : source,
    decompressor(what),
    bombGuard(limits, totals, what),
    extract,
  );
  const settled = await Promise.allSettled([done, piping]);
  const reasons = settled.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  // A refusal says why; a stream torn down by it only echoes it.
  const refusal = reasons.find((r) => r instanceof UserError);
  if (refusal) throw refusal;
  // Writing failed on this host (a full disk, a missing tool): not the layer's fault.
  if (hostFailure) throw withContext(`unpacking ${what}`, hostFailure);
  if (reasons.length)
    throw new UserError(`${what} is not a readable tar archive: ${errorMessage(reasons[0])}`);
}

/** gzip, zstd or plain, told apart by their first bytes rather than the media type a registry sent. */
function decompressor(what: string): Transform {
  let kind: 'gzip' | 'zstd' | 'plain' | undefined;
  let inner: Transform | undefined;
  let zstd: Decompress | undefined;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (!kind) {
        kind =
          chunk[0] === 0x1f && chunk[1] === 0x8b
            ? 'gzip'
            : chunk.readUInt32LE(0) === 0xfd2fb528
              ? 'zstd'
              : 'plain';
        if (kind === 'gzip') {
          inner = createGunzip();
          inner.on('data', (d: Buffer) => this.push(d));
          inner.on('error', (e) => this.destroy(e));
        } else if (kind === 'zstd') zstd = new Decompress((d) => this.push(Buffer.from(d)));
      }
      try {
        if (kind === 'gzip') (inner as Transform).write(chunk, cb);
        else if (kind === 'zstd') {
          (zstd as Decompress).push(chunk);
          cb();
        } else cb(null, chunk);
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb) {
      try {
        if (kind === 'gzip') {
          (inner as Transform).end();
          (inner as Transform).once('end', () => cb());
          (inner as Transform).once('error', cb);
        } else {
          if (kind === 'zstd') (zstd as Decompress).push(new Uint8Array(0), true);
          cb();
        }
      } catch (err) {
        cb(new Error(`${what}: ${errorMessage(err)}`));
      }
    },
  });
}

/** Stops an archive that expands past what it (with the layers under it) may take. */
function bombGuard(limits: UnpackLimits, totals: UnpackTotals, what: string): Transform {
  let seen = 0;
  // Tar headers and padding ride on top of file contents: allow them, not a second image.
  const cap = limits.maxBytes + 512 * limits.maxEntries;
  // The layers under this one; this one's own bytes are `seen` (its files are counted again in
  // `totals` as they are written).
  const before = totals.bytes;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (before + seen > cap)
        return cb(
          new TarRefused(what, '(archive)', `expands past ${limits.maxBytes} bytes: a decompression bomb?`),
        );
      cb(null, chunk);
    },
  });
}
