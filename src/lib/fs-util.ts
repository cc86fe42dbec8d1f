import { randomUUID } from 'node:crypto';
import { open, rename, rm, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';

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
 * several boxcar processes. A lock older than `staleMs` belongs to a crashed holder and is broken.
 */
export async function withLock<T>(lockFile: string, fn: () => Promise<T>, staleMs = 30_000): Promise<T> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const fh = await open(lockFile, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      try {
        if (Date.now() - (await stat(lockFile)).mtimeMs > staleMs) await rm(lockFile, { force: true });
      } catch (statErr) {
        if ((statErr as NodeJS.ErrnoException).code !== 'ENOENT') throw statErr;
      }
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
