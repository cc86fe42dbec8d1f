import { chownSync, existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../lib/exec.js';
import { freePort } from './ports.js';

export interface TestPostgres {
  url: string;
  stop(): Promise<void>;
}

function pgBin(tool: string): string {
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) {
    const p = path.join(base, v, 'bin', tool);
    if (existsSync(p)) return p;
  }
  throw new Error(`PostgreSQL's ${tool} is not installed; scripts/setup.sh installs the postgresql package`);
}

/**
 * A private PostgreSQL server for one test file: its own cluster in a temporary directory,
 * listening on loopback only, run as the `postgres` user (initdb refuses root), fsync off.
 * Stopped and removed by `stop`, also after a failure.
 */
export async function startPostgres(): Promise<TestPostgres> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-pg-'));
  const data = path.join(dir, 'data');
  const { stdout } = await run('id', ['-u', 'postgres']);
  const uid = Number(stdout.trim());
  const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim());
  chownSync(dir, uid, gid);
  const asPostgres = (tool: string, args: string[]) =>
    run('runuser', ['-u', 'postgres', '--', pgBin(tool), ...args], { timeoutMs: 60_000 });
  const port = await freePort();
  const stop = async () => {
    if (existsSync(path.join(data, 'postmaster.pid')))
      await asPostgres('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await asPostgres('initdb', ['-D', data, '-U', 'boxcar', '-A', 'trust', '--no-sync', '-E', 'UTF8']);
    const options = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off -c max_connections=100`;
    await asPostgres('pg_ctl', ['-D', data, '-o', options, '-l', path.join(dir, 'log'), '-w', 'start']);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url: `postgres://boxcar@127.0.0.1:${port}/postgres`, stop };
}
