import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  lstatSync,
  mkdirSync,
  openSync,
  rmSync,
  symlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type tar from 'tar-stream';
import { errnoCode, ifExistsSync } from '../lib/errors.js';
import { processUmask } from '../lib/proc.js';
import { readTarEntries, TarRefused, type UnpackLimits } from '../lib/tar-read.js';

const UMASK = processUmask();
/** Whether creating an entry with `mode` gives it exactly that mode. */
const unmasked = (mode: number) => (mode & UMASK) === 0;
const lstatIfExists = (p: string): Stats | undefined => ifExistsSync(() => lstatSync(p));

/**
 * Writes a tar of workspace files (artifacts, a cache) into a job's workspace, over what is
 * there (its checkout, other artifacts). What is there came from untrusted code, so nothing is
 * ever followed: each directory on the way to an entry must be a real one (a symlink there is
 * refused, naming it), an entry replaces whatever was at its own path (a symlink is removed,
 * not written through), files are created O_EXCL | O_NOFOLLOW, and anything but directories,
 * regular files and symlinks is dropped. `..` and absolute names are refused.
 */
export async function extractInto(
  dir: string,
  source: string | Readable,
  what: string,
  limits: UnpackLimits,
): Promise<{ files: number; bytes: number }> {
  const totals = { bytes: 0, entries: 0 };
  const real = new Set<string>(['']);
  const refuse = (entry: string, why: string): never => {
    throw new TarRefused(what, entry, why);
  };

  // Synchronous calls, one entry at a time: a cache is thousands of small files, and each
  // call through the thread pool costs more than the call; the loop still runs between entries.
  const realDir = (name: string, parts: string[]) => {
    for (let i = 1; i <= parts.length; i++) {
      const rel = parts.slice(0, i).join('/');
      if (real.has(rel)) continue;
      const full = path.join(dir, rel);
      const st = lstatIfExists(full);
      if (!st) mkdirSync(full, 0o755);
      else if (st.isSymbolicLink()) refuse(name, `goes through the symlink "${rel}" in the workspace`);
      else if (!st.isDirectory()) refuse(name, `needs "${rel}" to be a directory, and it is not one`);
      real.add(rel);
    }
  };

  /** Creates `full` with `make`; whatever is there already (a file, a link, a tree) goes first. */
  const replacing = <T>(full: string, rel: string, make: () => T): T => {
    try {
      return make();
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    rmSync(full, { recursive: true, force: true }); // never follows a symlink
    real.delete(rel);
    return make();
  };

  const apply = async (h: tar.Headers, body: Readable) => {
    if (++totals.entries > limits.maxEntries) refuse(h.name, `is past ${limits.maxEntries} entries`);
    if (h.name.length > limits.maxPathLength) refuse(h.name.slice(0, 80), 'has too long a path');
    if (h.name.startsWith('/')) refuse(h.name, 'is absolute');
    const parts = h.name.split('/').filter((c) => c !== '' && c !== '.');
    if (parts.includes('..')) refuse(h.name, 'climbs out of the workspace with ".."');
    if (parts.length === 0) return;
    const type = h.type ?? 'file';
    if (type !== 'directory' && type !== 'file' && type !== 'contiguous-file' && type !== 'symlink') return;
    realDir(h.name, parts.slice(0, -1));
    const rel = parts.join('/');
    const full = path.join(dir, rel);
    const mode = (h.mode ?? 0o644) & 0o777;
    if (type === 'directory') {
      const st = lstatIfExists(full);
      if (!st?.isDirectory()) replacing(full, rel, () => mkdirSync(full, mode));
      if (st?.isDirectory() || !unmasked(mode)) chmodSync(full, mode); // a real directory: nothing followed
      real.add(rel);
      return;
    }
    if (type === 'symlink') {
      replacing(full, rel, () => symlinkSync(h.linkname ?? '', full));
      return;
    }
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
    const fd = replacing(full, rel, () => openSync(full, flags, mode));
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        totals.bytes += chunk.length;
        if (totals.bytes > limits.maxBytes) refuse(h.name, `takes it past ${limits.maxBytes} bytes`);
        writeSync(fd, chunk);
      }
      if (!unmasked(mode)) fchmodSync(fd, mode); // on the descriptor: no path to follow
    } finally {
      closeSync(fd);
    }
  };

  await readTarEntries(source, what, limits, totals, apply);
  return { files: totals.entries, bytes: totals.bytes };
}
