import { randomUUID } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { lchown, open, readdir, readFile, rename, rm, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode, ifExists } from './errors.js';

/**
 * Writes a file so readers see the old or the new content, never half of it; `durable: false`
 * skips the fsync (the content survives the process, not a power loss) for a file that costs
 * nothing much to lose.
 */
export async function writeFileAtomic(
  file: string,
  data: string | Buffer,
  { durable = true }: { durable?: boolean } = {},
): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${randomUUID()}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    if (durable) await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
}

/**
 * Writes `data` to `file` in a directory a less trusted process can also write to (a jailed
 * VMM's): never through a symlink or into a fifo it planted there (ELOOP, ENXIO: an error, not
 * a write elsewhere), only into a regular file. Hardlinks to others' files are the kernel's to
 * refuse (fs.protected_hardlinks).
 */
export async function writeFileNoFollow(file: string, data: string | Buffer): Promise<void> {
  const fh = await open(
    file,
    fsConstants.O_WRONLY |
      fsConstants.O_CREAT |
      fsConstants.O_TRUNC |
      fsConstants.O_NOFOLLOW |
      fsConstants.O_NONBLOCK,
    0o644,
  );
  try {
    if (!(await fh.stat()).isFile()) throw new Error(`${file} is not a regular file: refusing to write it`);
    await fh.writeFile(data);
  } finally {
    await fh.close();
  }
}

/** Reads `file` from such a directory, never through a symlink (ELOOP) and only a regular file. */
export async function readFileNoFollow(file: string): Promise<string | undefined> {
  const fh = await ifExists(
    open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK),
  );
  if (!fh) return undefined;
  try {
    if (!(await fh.stat()).isFile()) throw new Error(`${file} is not a regular file: refusing to read it`);
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
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
