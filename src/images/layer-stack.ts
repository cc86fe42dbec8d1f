import type { Stats } from 'node:fs';
import { lstat } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../lib/errors.js';

/**
 * A stack of unpacked layers read as overlayfs merges them, without mounting it: a path's
 * first occurrence from the top wins, a whiteout hides what is under it, and a directory merges
 * with the directories under it down to the first opaque one or the first non-directory.
 */

/** One unpacked layer: its directory and the directories in it marked opaque (relative paths). */
export interface StackedLayer {
  dir: string;
  opaque: ReadonlySet<string>;
}

/** What a path is in the merged view; `layers[0]` holds it, and a directory merges all of `layers`. */
export type Found =
  { kind: 'absent' } | { kind: 'dir' | 'file' | 'symlink' | 'other'; stat: Stats; layers: StackedLayer[] };

/** overlayfs' whiteout: a character device 0:0 (device nodes from a layer's tar are never kept). */
export const isWhiteout = (st: Stats) => st.isCharacterDevice() && st.rdev === 0;

async function lstatIn(layer: StackedLayer, rel: string): Promise<Stats | undefined> {
  try {
    return await lstat(path.join(layer.dir, rel));
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** What `rel` is, given the layers whose directories merge at its parent (top first). */
export async function lookup(parent: readonly StackedLayer[], rel: string): Promise<Found> {
  let first: Stats | undefined;
  const layers: StackedLayer[] = [];
  for (const layer of parent) {
    const st = await lstatIn(layer, rel);
    if (!st) continue;
    if (!first) {
      if (isWhiteout(st)) return { kind: 'absent' };
      first = st;
      if (!st.isDirectory()) {
        const kind = st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
        return { kind, stat: st, layers: [layer] };
      }
    } else if (!st.isDirectory()) break; // a whiteout or a non-directory under a directory ends the merge
    layers.push(layer);
    if (layer.opaque.has(rel)) break;
  }
  return first ? { kind: 'dir', stat: first, layers } : { kind: 'absent' };
}
