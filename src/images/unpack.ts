import { constants, createReadStream } from 'node:fs';
import { chmod, lchown, link, lstat, mkdir, open, readdir, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import tar from 'tar-stream';
import { errnoCode, errorMessage, UserError } from '../lib/errors.js';

/**
 * Applies untrusted image layers to a root filesystem, following the OCI image-spec's layer
 * rules (whiteouts, opaque directories) and refusing anything that reaches outside the root:
 * absolute paths, `..`, an entry written, chmod-ed or chown-ed through a symlink (also one a
 * lower layer planted), hardlinks out of the root or onto anything but a regular file, and
 * entries named for the root itself. Device nodes are dropped. Limits on uncompressed bytes,
 * entries and path length stop decompression and tar bombs. Nothing is ever followed: files are
 * opened with O_NOFOLLOW | O_EXCL, and every parent directory is checked to be a real one.
 */
export interface UnpackLimits {
  /** Bytes the layers may expand to, all together. */
  maxBytes: number;
  maxEntries: number;
  maxPathLength: number;
}

export const DEFAULT_UNPACK_LIMITS: UnpackLimits = {
  maxBytes: 16 * 2 ** 30,
  maxEntries: 1_000_000,
  maxPathLength: 4096,
};

export class UnsafeLayer extends UserError {
  constructor(layer: string, entry: string, why: string) {
    super(`layer ${layer} refused: entry "${entry}" ${why}`);
    this.name = 'UnsafeLayer';
  }
}

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/** What the layers applied so far hold against the limits. */
export interface UnpackTotals {
  bytes: number;
  entries: number;
}

/**
 * One layer onto `root`, read from its blob file or from a stream of its bytes (a download in
 * progress): `totals` carries the limits across an image's layers.
 */
export async function applyLayer(
  root: string,
  layer: string | Readable,
  layerName: string,
  limits: UnpackLimits = DEFAULT_UNPACK_LIMITS,
  totals: UnpackTotals = { bytes: 0, entries: 0 },
): Promise<UnpackTotals> {
  const writer = new LayerWriter(root, layerName, limits, totals);
  const extract = tar.extract();
  const done = (async () => {
    for await (const entry of extract) {
      try {
        await writer.apply(entry.header, entry);
      } finally {
        entry.resume(); // drain what an entry left unread (a dropped device, a refused entry)
      }
    }
  })();
  const piping = pipeline(
    typeof layer === 'string' ? createReadStream(layer) : layer,
    decompressor(layerName),
    bombGuard(limits, totals, layerName),
    extract,
  );
  const settled = await Promise.allSettled([done, piping]);
  const reasons = settled.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
  // A refusal says why; a stream torn down by it only echoes it.
  const refusal = reasons.find((r) => r instanceof UserError);
  if (refusal) throw refusal;
  if (reasons.length)
    throw new UserError(`layer ${layerName} is not a readable tar archive: ${errorMessage(reasons[0])}`);
  return totals;
}

/** gzip, zstd or plain, told apart by their first bytes rather than the media type a registry sent. */
function decompressor(layerName: string): Transform {
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
        cb(new Error(`${layerName}: ${errorMessage(err)}`));
      }
    },
  });
}

/** Stops a layer that expands past what all the layers may take together. */
function bombGuard(limits: UnpackLimits, totals: UnpackTotals, layerName: string): Transform {
  let seen = 0;
  // Tar headers and padding ride on top of file contents: allow them, not a second image.
  const cap = limits.maxBytes + 512 * limits.maxEntries;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (totals.bytes + seen > cap)
        return cb(
          new UnsafeLayer(
            layerName,
            '(archive)',
            `expands past ${limits.maxBytes} bytes: a decompression bomb?`,
          ),
        );
      cb(null, chunk);
    },
  });
}

class LayerWriter {
  /** Paths (relative) this layer created: an opaque whiteout clears only what lower layers left. */
  private readonly created = new Set<string>();
  /** Directories checked to be real (not symlinks) under the root, for this layer. */
  private readonly realDirs = new Set<string>(['']);

  constructor(
    private readonly root: string,
    private readonly name: string,
    private readonly limits: UnpackLimits,
    private readonly totals: UnpackTotals,
  ) {}

  private refuse(entry: string, why: string): never {
    throw new UnsafeLayer(this.name, entry, why);
  }

  /**
   * A path as components inside the root (the entry's own, or its link target's); refuses
   * anything that leaves it, naming the entry.
   */
  private components(entry: string, p: string = entry): string[] {
    const what = p === entry ? '' : ` (its link target "${p}")`;
    if (p.length > this.limits.maxPathLength)
      this.refuse(entry.slice(0, 80), `has a path over ${this.limits.maxPathLength} characters${what}`);
    if (p.startsWith('/')) this.refuse(entry, `is absolute${what}`);
    const parts = p.split('/').filter((c) => c !== '' && c !== '.');
    if (parts.includes('..')) this.refuse(entry, `climbs out of the root with ".."${what}`);
    return parts;
  }

  async apply(h: tar.Headers, body: Readable): Promise<void> {
    if (++this.totals.entries > this.limits.maxEntries)
      this.refuse(h.name, `is past ${this.limits.maxEntries} entries: a tar bomb?`);
    const parts = this.components(h.name);
    const type = h.type ?? 'file';
    if (parts.length === 0) {
      if (type === 'directory') return; // the root itself ("./"): nothing to do
      this.refuse(h.name, `is a ${type} in place of the root`);
    }
    const base = parts[parts.length - 1] as string;
    const parent = parts.slice(0, -1);
    if (base === OPAQUE) return this.opaque(h.name, parent);
    if (base.startsWith(WHITEOUT)) return this.whiteout(h.name, parent, base.slice(WHITEOUT.length));
    if (type === 'character-device' || type === 'block-device' || type === 'fifo') return; // dropped
    await this.realDir(h.name, parent);
    const rel = parts.join('/');
    const full = path.join(this.root, rel);
    const existing = await lstat(full).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    if (existing && !(type === 'directory' && existing.isDirectory()))
      await rm(full, { recursive: true, force: true });
    this.forget(rel);
    const mode = (h.mode ?? 0o644) & 0o7777;
    switch (type) {
      case 'directory':
        if (!existing?.isDirectory()) await mkdir(full);
        await chmod(full, mode);
        this.realDirs.add(rel);
        break;
      case 'file':
      case 'contiguous-file':
        await this.file(h.name, full, mode, body);
        break;
      case 'symlink':
        // A symlink may point anywhere: it is never followed here, and jobs see it in their own root.
        await symlink(h.linkname ?? '', full);
        break;
      case 'link':
        await this.hardlink(h.name, h.linkname ?? '', full);
        break;
      default:
        return; // pax and GNU headers are read by the parser; anything else carries nothing to keep
    }
    await lchown(full, h.uid ?? 0, h.gid ?? 0);
    this.created.add(rel);
  }

  private async file(name: string, full: string, mode: number, body: Readable): Promise<void> {
    const fh = await open(
      full,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        this.totals.bytes += chunk.length;
        if (this.totals.bytes > this.limits.maxBytes)
          this.refuse(name, `takes the image past ${this.limits.maxBytes} bytes: a tar bomb?`);
        await fh.write(chunk);
      }
      await fh.chmod(mode); // on the descriptor: no path, no symlink to follow
    } finally {
      await fh.close();
    }
  }

  private async hardlink(name: string, linkname: string, full: string): Promise<void> {
    const target = this.components(name, linkname);
    if (target.length === 0) this.refuse(name, 'is a hardlink to the root');
    await this.realDir(name, target.slice(0, -1));
    const t = await lstat(path.join(this.root, ...target)).catch(() => undefined);
    if (!t?.isFile())
      this.refuse(name, `is a hardlink to "${linkname}", which is not a regular file in the image`);
    await link(path.join(this.root, ...target), full);
  }

  /** Every directory on the way to an entry is a real one (made here when missing), never a symlink. */
  private async realDir(name: string, parts: string[]): Promise<void> {
    for (let i = 1; i <= parts.length; i++) {
      const rel = parts.slice(0, i).join('/');
      if (this.realDirs.has(rel)) continue;
      const full = path.join(this.root, rel);
      const st = await lstat(full).catch((err: unknown) => {
        if (errnoCode(err) === 'ENOENT') return undefined;
        throw err;
      });
      if (!st) await mkdir(full, 0o755);
      else if (st.isSymbolicLink()) this.refuse(name, `goes through the symlink "${rel}"`);
      else if (!st.isDirectory()) this.refuse(name, `needs "${rel}" to be a directory, and it is not one`);
      this.realDirs.add(rel);
    }
  }

  /** `.wh.NAME`: NAME from lower layers is gone (the entry itself is never written). */
  private async whiteout(name: string, parent: string[], hidden: string): Promise<void> {
    if (!hidden || hidden === '.' || hidden === '..' || hidden.includes('/'))
      this.refuse(name, `whites out "${hidden}", which is not a name in its directory`);
    await this.realDir(name, parent);
    const rel = [...parent, hidden].join('/');
    await rm(path.join(this.root, rel), { recursive: true, force: true }); // rm never follows a symlink
    this.forget(rel);
  }

  /** `.wh..wh..opq`: the directory keeps only what this layer puts in it. */
  private async opaque(name: string, parent: string[]): Promise<void> {
    await this.realDir(name, parent);
    const dir = parent.join('/');
    for (const child of await readdir(path.join(this.root, dir))) {
      const rel = dir ? `${dir}/${child}` : child;
      if (this.created.has(rel)) continue;
      await rm(path.join(this.root, rel), { recursive: true, force: true });
      this.forget(rel);
    }
  }

  /** A path was removed or replaced: what was checked under it no longer holds. */
  private forget(rel: string): void {
    for (const d of this.realDirs) if (d === rel || d.startsWith(`${rel}/`)) this.realDirs.delete(d);
  }
}
