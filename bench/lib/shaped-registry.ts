import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run, sleep } from '../../src/lib/exec.js';

/**
 * The CNCF registry (docker-registry) in a network namespace of its own behind a veth pair
 * whose registry side is shaped by `tc tbf` to `rateMbit`: a registry across a real, slow link,
 * reached from the host at `host` (plain HTTP: list it under registries.insecure). Its JSON log
 * records every response's size, so `egress()` is what left the registry, byte for byte.
 */
export interface ShapedRegistry {
  /** host:port as image references name it. */
  host: string;
  /** Bytes of blob responses the registry has written so far. */
  egress(): number;
  stop(): Promise<void>;
}

/** Apart from jobs' own network (10.213.0.0/16, host interfaces bxh*), which the host firewalls. */
const SUBNET = '10.199.77';

export async function startShapedRegistry(rateMbit: number): Promise<ShapedRegistry> {
  const tag = String(process.pid % 100000);
  const ns = `bqbench${tag}`;
  const hostIf = `bqh${tag}`;
  const regIf = `bqr${tag}`;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-shaped-'));
  const inNs = (cmd: string, args: string[]) => run('ip', ['netns', 'exec', ns, cmd, ...args]);
  let child: ChildProcess | undefined;
  const stop = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child?.once('exit', r));
    }
    // Either may not exist when the setup failed half-way; the namespace takes its veth along.
    await run('ip', ['netns', 'del', ns]).catch(() => undefined);
    await run('ip', ['link', 'del', hostIf]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', regIf]);
    await run('ip', ['link', 'set', regIf, 'netns', ns]);
    await run('ip', ['addr', 'add', `${SUBNET}.1/30`, 'dev', hostIf]);
    await run('ip', ['link', 'set', hostIf, 'up']);
    await inNs('ip', ['addr', 'add', `${SUBNET}.2/30`, 'dev', regIf]);
    await inNs('ip', ['link', 'set', regIf, 'up']);
    await inNs('ip', ['link', 'set', 'lo', 'up']);
    // The registry's way out (its egress) is the slow direction, as for a pull from afar.
    await inNs('tc', [
      'qdisc',
      'add',
      'dev',
      regIf,
      'root',
      'tbf',
      'rate',
      `${rateMbit}mbit`,
      'burst',
      '256kb',
      'latency',
      '200ms',
    ]);
    const log = path.join(dir, 'log');
    await writeFile(
      path.join(dir, 'config.yml'),
      `version: 0.1\nlog: { level: info, formatter: json, accesslog: { disabled: true } }\n` +
        `storage: { filesystem: { rootdirectory: ${path.join(dir, 'data')} }, delete: { enabled: true } }\n` +
        `http: { addr: ${SUBNET}.2:5000 }\n`,
    );
    child = spawn('ip', ['netns', 'exec', ns, 'docker-registry', 'serve', path.join(dir, 'config.yml')], {
      stdio: ['ignore', 'ignore', openSync(log, 'a')],
    });
    for (let i = 0; ; i++) {
      const up = await fetch(`http://${SUBNET}.2:5000/v2/`, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.ok,
        () => false,
      );
      if (up) break;
      if (i > 100)
        throw new Error(`the shaped registry did not start: ${readFileSync(log, 'utf8').slice(-500)}`);
      await sleep(100);
    }
    return {
      host: `${SUBNET}.2:5000`,
      egress: () => {
        let n = 0;
        for (const line of readFileSync(log, 'utf8').split('\n')) {
          if (!line.includes('/blobs/sha256:')) continue;
          const e = JSON.parse(line) as Record<string, unknown>;
          if (e['http.request.method'] === 'GET') n += Number(e['http.response.written'] ?? 0);
        }
        return n;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
