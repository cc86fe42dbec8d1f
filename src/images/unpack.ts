import { constants } from 'node:fs';
import { chmod, copyFile, lchown, link, lstat, mkdir, open, readdir, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { ifExists } from '../lib/errors.js';
import { readTarEntries, TarRefused, type UnpackLimits, type UnpackTotals } from '../lib/tar-read.js';
import { processUmask } from '../lib/proc.js';
import { isWhiteout, lookup, type StackedLayer } from './layer-stack.js';
import { markOpaque, Whiteouts } from './overlay-marks.js';

export type { UnpackLimits, UnpackTotals };

export const DEFAULT_UNPACK_LIMITS: UnpackLimits = {
  maxBytes: 16 * 2 ** 30,
  maxEntries: 1_000_000,
  maxPathLength: 4096,
};

export class UnsafeLayer extends TarRefused {
  constructor(layer: string, entry: string, why: string) {
    super(`layer ${layer}`, entry, why);
    this.name = 'UnsafeLayer';
  }
}

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

export interface LayerTarget {
  /** The empty directory the layer's own files go to. */
  dir: string;
  /** The layers under it, unpacked, top first. */
  lowers: readonly StackedLayer[];
  /** A directory on the same filesystem, outside `dir`, for the layer's whiteout device. */
  scratch: string;
}

/**
 * Unpacks an untrusted image layer into a directory of its own, over the layers under it
 * (already unpacked, never changed): the directory is an overlayfs lower layer, following the
 * OCI image-spec's layer rules (whiteouts, opaque directories) with overlayfs' own marks for
 * them. Anything that reaches outside the root is refused, naming the entry, also across
 * layers: absolute paths, `..`, an entry written, chmod-ed or chown-ed through a symlink (also
 * one a lower layer planted: each parent directory is looked up in the layers under it),
 * hardlinks out of the image or onto anything but a regular file, and entries named for the
 * root itself. Device nodes are dropped. Limits on uncompressed bytes, entries and path length,
 * counted across the image's layers, stop decompression and tar bombs. Nothing is ever
 * followed: files are opened with O_NOFOLLOW | O_EXCL, and every parent directory is checked
 * to be a real one.
 *
 * The layer is read from its blob file or from a stream of its bytes (a download in
 * progress); `totals` carries the limits across an image's layers. Returns the directories
 * it marked opaque (relative), which lookups from the layers above it need.
 */
export async function applyLayer(
  target: LayerTarget,
  layer: string | Readable,
  layerName: string,
  limits: UnpackLimits = DEFAULT_UNPACK_LIMITS,
  totals: UnpackTotals = { bytes: 0, entries: 0 },
): Promise<{ opaque: string[] }> {
  const writer = new LayerWriter(target, layerName, limits, totals);
  try {
    await readTarEntries(layer, `layer ${layerName}`, limits, totals, (h, body) => writer.apply(h, body));
    const opaque = writer.opaqueDirs();
    await markOpaque(opaque.map((rel) => path.join(target.dir, rel)));
    return { opaque };
  } finally {
    await writer.whiteouts.dispose();
  }
}

const UMASK = processUmask();
/** Whether creating an entry with `mode` gives it exactly that mode (no special bits, none masked). */
const unmasked = (mode: number) => (mode & ~0o777) === 0 && (mode & UMASK) === 0;
const ROOT = process.getuid?.() === 0;

/** Sets an entry's owner, unless it is root's and root made it: the commonest case, for free. */
async function ownedBy(full: string, uid: number, gid: number): Promise<void> {
  if (ROOT && uid === 0 && gid === 0) return;
  await lchown(full, uid, gid);
}

/** The parent of a relative path ('' for the root). */
const parentOf = (rel: string) => rel.slice(0, Math.max(0, rel.lastIndexOf('/')));
const within = (p: string, rel: string) => p === rel || p.startsWith(`${rel}/`);

class LayerWriter {
  /** This layer: its directory and the directories in it marked opaque so far. */
  private readonly top: { dir: string; opaque: Set<string> };
  private readonly lowers: readonly StackedLayer[];
  /**
   * Directories (relative) checked to be real ones in the merged view and made in this layer,
   * with the layers whose directories merge there, top first.
   */
  private readonly dirs = new Map<string, StackedLayer[]>();
  readonly whiteouts: Whiteouts;

  constructor(
    target: LayerTarget,
    private readonly name: string,
    private readonly limits: UnpackLimits,
    private readonly totals: UnpackTotals,
  ) {
    this.top = { dir: target.dir, opaque: new Set() };
    this.lowers = target.lowers;
    this.dirs.set('', [this.top, ...target.lowers]);
    this.whiteouts = new Whiteouts(target.scratch);
  }

  opaqueDirs(): string[] {
    return [...this.top.opaque];
  }

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
    const full = path.join(this.top.dir, rel);
    const existing = await ifExists(lstat(full));
    if (existing && !(type === 'directory' && existing.isDirectory())) await this.remove(rel);
    const mode = (h.mode ?? 0o644) & 0o7777;
    switch (type) {
      case 'directory':
        if (!existing?.isDirectory()) {
          await mkdir(full, mode & 0o777);
          // In place of what this layer had there (a whiteout, a file): an empty directory, as
          // when the layers are applied one onto the other; nothing under it shows through.
          if (existing) await this.hideLower(rel);
        }
        // Made with its mode when the umask left it whole and it has no special bits; else set.
        if (existing?.isDirectory() || !unmasked(mode)) await chmod(full, mode);
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
        await this.hardlink(h.name, rel, h.linkname ?? '', full);
        break;
      default:
        return; // pax and GNU headers are read by the parser; anything else carries nothing to keep
    }
    await ownedBy(full, h.uid ?? 0, h.gid ?? 0);
  }

  private countBytes(name: string, n: number): void {
    this.totals.bytes += n;
    if (this.totals.bytes > this.limits.maxBytes)
      this.refuse(name, `takes the image past ${this.limits.maxBytes} bytes: a tar bomb?`);
  }

  private async file(name: string, full: string, mode: number, body: Readable): Promise<void> {
    // Created with its mode when the umask leaves it whole (most files): one call fewer each.
    const direct = unmasked(mode);
    const fh = await open(
      full,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      direct ? mode : 0o600,
    );
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        this.countBytes(name, chunk.length);
        await fh.write(chunk);
      }
      if (!direct) await fh.chmod(mode); // on the descriptor: no path, no symlink to follow
    } finally {
      await fh.close();
    }
  }

  private async hardlink(name: string, rel: string, linkname: string, full: string): Promise<void> {
    const target = this.components(name, linkname);
    if (target.length === 0) this.refuse(name, 'is a hardlink to the root');
    const targetRel = target.join('/');
    if (within(targetRel, rel)) this.refuse(name, `is a hardlink to itself or to something under it`);
    const dir = target.slice(0, -1);
    await this.realDir(name, dir);
    const found = await lookup(this.layersAt(dir.join('/')), targetRel);
    if (found.kind !== 'file')
      this.refuse(name, `is a hardlink to "${linkname}", which is not a regular file in the image`);
    const own = path.join(this.top.dir, targetRel);
    // A lower layer's file is copied up into this one, as overlayfs does before changing one:
    // a link never joins two layers' directories.
    if (found.layers[0] !== this.top) {
      this.countBytes(name, found.stat.size);
      await copyFile(
        path.join((found.layers[0] as StackedLayer).dir, targetRel),
        own,
        constants.COPYFILE_EXCL,
      );
      await lchown(own, found.stat.uid, found.stat.gid);
      await chmod(own, found.stat.mode & 0o7777); // after the chown, which clears set-id bits
    }
    await link(own, full);
  }

  /** The layers merging at a directory checked by `realDir`. */
  private layersAt(rel: string): StackedLayer[] {
    const layers = this.dirs.get(rel);
    if (!layers) throw new Error(`internal: directory "${rel}" of layer ${this.name} was not checked`);
    return layers;
  }

  /**
   * Every directory on the way to an entry is a real one in the merged view (this layer over
   * the ones under it), never a symlink, and is made in this layer (with the mode and owner of
   * the one it merges with, if any).
   */
  private async realDir(name: string, parts: string[]): Promise<void> {
    for (let i = 1; i <= parts.length; i++) {
      const rel = parts.slice(0, i).join('/');
      if (this.dirs.has(rel)) continue;
      const parent = this.layersAt(parts.slice(0, i - 1).join('/'));
      const full = path.join(this.top.dir, rel);
      const own = await ifExists(lstat(full));
      if (own?.isSymbolicLink()) this.refuse(name, `goes through the symlink "${rel}"`);
      if (own && isWhiteout(own)) {
        // Whited out by this layer, then written into: a new directory, empty but for what follows.
        await this.remove(rel);
        await mkdir(full, 0o755);
        await this.hideLower(rel);
        this.dirs.set(rel, [this.top]);
      } else if (own && !own.isDirectory())
        this.refuse(name, `needs "${rel}" to be a directory, and it is not one`);
      else if (own) {
        const merged = await lookup(parent, rel);
        this.dirs.set(rel, merged.kind === 'dir' ? merged.layers : [this.top]);
      } else {
        const below = await lookup(parent, rel); // this layer has nothing there: the ones under it
        if (below.kind === 'symlink') this.refuse(name, `goes through the symlink "${rel}"`);
        if (below.kind !== 'dir' && below.kind !== 'absent')
          this.refuse(name, `needs "${rel}" to be a directory, and it is not one`);
        await mkdir(full);
        const like = below.kind === 'dir' ? below.stat : undefined;
        await lchown(full, like?.uid ?? 0, like?.gid ?? 0);
        await chmod(full, like ? like.mode & 0o7777 : 0o755);
        this.dirs.set(rel, below.kind === 'dir' ? [this.top, ...below.layers] : [this.top]);
      }
    }
  }

  /** `.wh.NAME`: NAME is gone, from the layers under this one (a whiteout) and from this one. */
  private async whiteout(name: string, parent: string[], hidden: string): Promise<void> {
    if (!hidden || hidden === '.' || hidden === '..' || hidden.includes('/'))
      this.refuse(name, `whites out "${hidden}", which is not a name in its directory`);
    await this.realDir(name, parent);
    const rel = [...parent, hidden].join('/');
    await this.remove(rel);
    if ((await lookup(this.layersAt(parent.join('/')), rel)).kind !== 'absent')
      await this.whiteouts.make(path.join(this.top.dir, rel));
  }

  /** `.wh..wh..opq`: the directory keeps only what this layer puts in it. */
  private async opaque(name: string, parent: string[]): Promise<void> {
    await this.realDir(name, parent);
    const rel = parent.join('/');
    if (rel) return this.hideLower(rel);
    // overlayfs reads no opaque mark on a lower layer's root: each name the layers under it
    // have there is hidden instead.
    const names = new Set<string>();
    for (const lower of this.lowers) for (const n of await readdir(lower.dir)) names.add(n);
    for (const n of names) {
      const own = await ifExists(lstat(path.join(this.top.dir, n)));
      if (own?.isDirectory()) await this.hideLower(n);
      else if (!own && (await lookup(this.layersAt(''), n)).kind !== 'absent')
        await this.whiteouts.make(path.join(this.top.dir, n));
    }
  }

  /** Marks this layer's directory `rel` opaque when a lower layer has a directory there to hide. */
  private async hideLower(rel: string): Promise<void> {
    const lower = this.layersAt(parentOf(rel)).filter((l) => l !== this.top);
    if ((await lookup(lower, rel)).kind !== 'dir') return;
    this.top.opaque.add(rel);
    this.forget(rel);
  }

  /** Removes what this layer has at `rel` (rm never follows a symlink). */
  private async remove(rel: string): Promise<void> {
    await rm(path.join(this.top.dir, rel), { recursive: true, force: true });
    this.forget(rel);
    for (const d of this.top.opaque) if (within(d, rel)) this.top.opaque.delete(d);
  }

  /** A path was removed, replaced or made opaque: what was checked under it no longer holds. */
  private forget(rel: string): void {
    for (const d of this.dirs.keys()) if (within(d, rel)) this.dirs.delete(d);
  }
}
