import { randomUUID } from 'node:crypto';
import { lchown, open, readdir, readFile, rename, rm, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode, ifExists } from './errors.js';

/** Writes a file so readers see the old or the new content, never half of it. */
export async function writeFileAtomic(file: string, data: string | Buffer): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${randomUUID()}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
}

/**
 * Runs `fn` holding an exclusive lock file (O_EXCL), for read-modify-write of shared files by
 * several boxcar processes. A lock older than `staleMs` belongs to a crashed holder and is
 * broken; a caller waits at most `waitMs` for it.
 */
export async function withLock<T>(
  lockFile: string,
  fn: () => Promise<T>,
  { staleMs = 30_000, waitMs = 60_000 }: { staleMs?: number; waitMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const fh = await open(lockFile, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
      const held = await ifExists(stat(lockFile));
      if (held && Date.now() - held.mtimeMs > staleMs) await rm(lockFile, { force: true });
      if (Date.now() > deadline) throw new Error(`timed out waiting for lock ${lockFile}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockFile, { force: true });
  }
}

/** A JSON file this process may have written earlier; undefined when it is missing or damaged. */
export async function readJsonCache<T>(file: string): Promise<T | undefined> {
  const text = await ifExists(readFile(file, 'utf8'));
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined; // damaged (a write cut short): recomputed by the caller
  }
}

/** Gives `dir` and everything in it to `uid:gid`; symlinks themselves, never what they point to. */
export async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await lchown(dir, uid, gid);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await chownTree(p, uid, gid);
    else await lchown(p, uid, gid);
  }
}
