import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run, sleep } from '../lib/exec.js';
import { freePort } from './ports.js';

/**
 * A private OCI registry for one test file: the CNCF distribution registry (Debian's
 * `docker-registry`) on a loopback port, optionally behind htpasswd Basic auth. Stopped (by its
 * pid) and its storage removed by `stop`, also after a failure.
 */
export interface TestRegistry {
  /** host:port, as image references name it. */
  host: string;
  dir: string;
  stop(): Promise<void>;
}

export async function startRegistry(
  opts: {
    user?: { name: string; password: string };
    /** Runs as a pull-through cache of this registry URL (the registry's proxy mode). */
    proxyOf?: string;
  } = {},
): Promise<TestRegistry> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-registry-'));
  const port = await freePort();
  const auth = opts.user
    ? `auth: { htpasswd: { realm: boxcar-test, path: ${path.join(dir, 'htpasswd')} } }\n`
    : '';
  if (opts.user)
    await run('htpasswd', ['-Bbc', path.join(dir, 'htpasswd'), opts.user.name, opts.user.password]);
  await writeFile(
    path.join(dir, 'config.yml'),
    `version: 0.1\nlog: { level: error }\nstorage: { filesystem: { rootdirectory: ${path.join(dir, 'data')} }, delete: { enabled: true } }\nhttp: { addr: 127.0.0.1:${port} }\n${auth}${opts.proxyOf ? `proxy: { remoteurl: ${opts.proxyOf} }\n` : ''}`,
  );
  const child: ChildProcess = spawn('docker-registry', ['serve', path.join(dir, 'config.yml')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    await rm(dir, { recursive: true, force: true });
  };
  for (let i = 0; ; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/v2/`);
      if (res.status === 200 || res.status === 401) break;
    } catch {
      // not listening yet
    }
    if (i > 200 || child.exitCode !== null) {
      await stop();
      throw new Error(`docker-registry did not start: ${stderr.slice(-500)}`);
    }
    await sleep(25);
  }
  return { host: `127.0.0.1:${port}`, dir, stop };
}
