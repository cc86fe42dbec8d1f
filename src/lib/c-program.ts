import { existsSync } from 'node:fs';
import { mkdir, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { digestHex, sha256 } from './digest.js';
import { withLock } from './fs-util.js';
import { run } from './exec.js';

/**
 * A small C program of Boxcar's own (a launcher that confines a process before it execs it),
 * built with gcc into `dir` the first time, once per source digest, so an upgraded source is
 * rebuilt and two Boxcars never race on one file. `user` names what needs it in the error;
 * `flags` go to gcc (e.g. `-static`) and are part of the digest.
 */
export async function builtCProgram(
  source: string,
  dir: string,
  user: string,
  flags: readonly string[] = [],
): Promise<string> {
  // Asked for at every job's start: known binaries are not hashed again while they exist.
  const key = [source, dir, ...flags].join('\0');
  const known = built.get(key);
  if (known !== undefined && existsSync(known)) return known;
  const binary = await build(source, dir, user, flags);
  built.set(key, binary);
  return binary;
}

const built = new Map<string, string>();

async function build(source: string, dir: string, user: string, flags: readonly string[]): Promise<string> {
  const text = await readFile(source);
  const name = path.basename(source, '.c');
  const input = flags.length ? Buffer.concat([text, Buffer.from(`\0${flags.join(' ')}`)]) : text;
  const binary = path.join(dir, `${name}-${digestHex(sha256(input)).slice(0, 12)}`);
  if (existsSync(binary)) return binary;
  await mkdir(dir, { recursive: true });
  await withLock(`${binary}.lock`, async () => {
    if (existsSync(binary)) return;
    const tmp = `${binary}.tmp`;
    try {
      await run('gcc', ['-O2', ...flags, '-o', tmp, source], { timeoutMs: 120_000 });
    } catch (err) {
      throw new Error(`${user} builds its ${name} with gcc: install gcc and libc6-dev`, { cause: err });
    }
    await rename(tmp, binary);
  });
  return binary;
}
