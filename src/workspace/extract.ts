import { constants } from 'node:fs';
import { chmod, lstat, mkdir, open, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type tar from 'tar-stream';
import { ifExists } from '../lib/errors.js';
import { readTarEntries, TarRefused, type UnpackLimits } from '../lib/tar-read.js';

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

  const realDir = async (name: string, parts: string[]) => {
    for (let i = 1; i <= parts.length; i++) {
      const rel = parts.slice(0, i).join('/');
      if (real.has(rel)) continue;
      const full = path.join(dir, rel);
      const st = await ifExists(lstat(full));
      if (!st) await mkdir(full, 0o755);
      else if (st.isSymbolicLink()) refuse(name, `goes through the symlink "${rel}" in the workspace`);
      else if (!st.isDirectory()) refuse(name, `needs "${rel}" to be a directory, and it is not one`);
      real.add(rel);
    }
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
    await realDir(h.name, parts.slice(0, -1));
    const rel = parts.join('/');
    const full = path.join(dir, rel);
    const existing = await ifExists(lstat(full));
    const mode = (h.mode ?? 0o644) & 0o777;
    if (type === 'directory') {
      if (existing && !existing.isDirectory()) await rm(full, { force: true });
      if (!existing?.isDirectory()) await mkdir(full, mode);
      await chmod(full, mode); // a real directory, checked above: chmod does not follow here
      real.add(rel);
      return;
    }
    if (existing) await rm(full, { recursive: true, force: true }); // rm never follows a symlink
    real.delete(rel);
    if (type === 'symlink') {
      await symlink(h.linkname ?? '', full);
      return;
    }
    const fh = await open(
      full,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      for await (const chunk of body as AsyncIterable<Buffer>) {
        totals.bytes += chunk.length;
        if (totals.bytes > limits.maxBytes) refuse(h.name, `takes it past ${limits.maxBytes} bytes`);
        await fh.write(chunk);
      }
      await fh.chmod(mode);
    } finally {
      await fh.close();
    }
  };

  await readTarEntries(source, what, limits, totals, apply);
  return { files: totals.entries, bytes: totals.bytes };
}
