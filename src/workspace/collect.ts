import { closeSync, constants, createReadStream, fstatSync, openSync, readSync } from 'node:fs';
import { readdir, readlink, lstat } from 'node:fs/promises';
import path from 'node:path';
import tar from 'tar-stream';
import { UserError } from '../lib/errors.js';

/**
 * A GitLab-style path pattern as a test on workspace-relative paths: `*` and `?` within one
 * name, `**` across names; a pattern naming a directory (`dist`, `dist/`) takes everything
 * under it.
 */
export function pathMatcher(patterns: readonly string[]): (rel: string) => boolean {
  const res = patterns.map((p) => {
    const clean = p.replace(/^\.\//, '').replace(/\/+$/, '');
    let re = '';
    for (let i = 0; i < clean.length; i++) {
      const c = clean[i] as string;
      if (c === '*' && clean[i + 1] === '*') {
        re += '.*';
        i++;
        if (clean[i + 1] === '/') i++;
      } else if (c === '*') re += '[^/]*';
      else if (c === '?') re += '[^/]';
      else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
    return new RegExp(`^${re}(/.*)?$`);
  });
  return (rel) => res.some((r) => r.test(rel));
}

export interface Collected {
  files: number;
  bytes: number;
}

/**
 * Packs the workspace entries that `patterns` name into a tar, read after the job's processes
 * have ended. Nothing is followed: directories are walked by their own entries (a symlink is
 * stored as a symlink, whatever it points to), files are opened O_NOFOLLOW and must still be
 * regular files once open, and anything else (devices, sockets, fifos) is left out. Files
 * past `maxBytes` in all refuse the whole collection, naming the setting.
 */
export function packWorkspace(
  dir: string,
  patterns: readonly string[],
  maxBytes: number,
  what: string,
): { stream: tar.Pack; done: Promise<Collected> } {
  const pack = tar.pack();
  // A failed walk destroys the stream with its error, which `done` reports: a consumer that has
  // not started reading yet (it awaits something first) must not see it as an uncaught one.
  pack.on('error', () => undefined);
  const matches = pathMatcher(patterns);
  const totals: Collected = { files: 0, bytes: 0 };
  // A directory is walked only when something under it can match: its path and a pattern's
  // literal leading names agree as far as both go.
  const literal = patterns.map((p) => {
    const names = p.replace(/^\.\//, '').split('/').filter(Boolean);
    const wild = names.findIndex((n) => /[*?]/.test(n));
    return wild < 0 ? names : names.slice(0, wild);
  });
  const worthWalking = (rel: string) => {
    const names = rel.split('/');
    return literal.some((l) => l.slice(0, names.length).every((n, i) => n === names[i]));
  };

  const entry = (header: tar.Headers, body?: Buffer) =>
    new Promise<void>((resolve, reject) =>
      pack.entry(header, body ?? '', (err) => (err ? reject(err) : resolve())),
    );

  /** Files up to this size are read whole (synchronously: most are small, and a call costs more than its read). */
  const SMALL = 1024 * 1024;
  const file = async (full: string, rel: string) => {
    const fd = openSync(full, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) return; // swapped for something else: left out
      totals.bytes += st.size;
      if (totals.bytes > maxBytes)
        throw new UserError(
          `${what}: the files take more than ${maxBytes} bytes; collect fewer paths or raise the limit`,
        );
      const header: tar.Headers = { name: rel, size: st.size, mode: st.mode & 0o777, type: 'file' };
      if (st.size <= SMALL) {
        const body = Buffer.allocUnsafe(st.size);
        let read = 0;
        while (read < st.size) {
          const n = readSync(fd, body, read, st.size - read, read);
          if (n === 0) throw new Error(`${full} shrank while it was read`);
          read += n;
        }
        await entry(header, body);
      } else
        await new Promise<void>((resolve, reject) => {
          const sink = pack.entry(header, (err) => (err ? reject(err) : resolve()));
          const src = createReadStream('', { fd, autoClose: false, start: 0, end: st.size - 1 });
          src.on('error', reject);
          src.pipe(sink);
        });
      totals.files++;
    } finally {
      closeSync(fd);
    }
  };

  const walk = async (rel: string): Promise<void> => {
    const full = path.join(dir, rel);
    const entries = await readdir(full, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const childRel = rel ? `${rel}/${e.name}` : e.name;
      const childFull = path.join(full, e.name);
      const matched = matches(childRel);
      if (e.isDirectory()) {
        if (matched) {
          const st = await lstat(childFull);
          await entry({ name: `${childRel}/`, type: 'directory', mode: st.mode & 0o777 });
        }
        if (matched || worthWalking(childRel)) await walk(childRel);
      } else if (!matched) continue;
      else if (e.isSymbolicLink()) {
        await entry({ name: childRel, type: 'symlink', linkname: await readlink(childFull) });
        totals.files++;
      } else if (e.isFile()) await file(childFull, childRel);
    }
  };

  const done = walk('')
    .then(() => {
      pack.finalize();
      return totals;
    })
    .catch((err: unknown) => {
      pack.destroy(err as Error);
      throw err;
    });
  return { stream: pack, done };
}
