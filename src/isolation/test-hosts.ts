import { spawn, type ChildProcess } from 'node:child_process';
import { run } from '../lib/exec.js';
import { enableForwarding } from '../runtimes/shared/firewall.js';

/**
 * Targets in network namespaces Boxcar creates itself (for `verify-isolation` and the tests),
 * reached from jobs through the host's routing: e.g. a "public" one on a documentation range
 * (198.51.100.0/24, TEST-NET-2) and an "internal" one on 10.x. No traffic leaves the machine.
 */
export interface TestHost {
  ns: string;
  ip: string;
  /** Starts a TCP server in the host's namespace (node -e SCRIPT, with PORT in its env). */
  serve(port: number, script: string): ChildProcess;
  remove(): Promise<void>;
}

/**
 * `forward: true` (the default) makes the host forward packets coming from this network, as a
 * router attached to it would: replies to jobs come in here, and IPv4 forwards by incoming
 * interface. Off, only Boxcar's own uplink handling can make replies come back.
 */
export async function createTestHost(
  name: string,
  hostSideIp: string,
  ip: string,
  prefix: number,
  opts: { forward?: boolean } = {},
): Promise<TestHost> {
  const ns = `bxt-${name}`;
  const hostIf = `bxt${name}h`;
  // A run killed before its cleanup leaves the namespace behind; the same address twice would not route.
  await removeTestHost(ns, hostIf);
  await run('ip', ['netns', 'add', ns]);
  await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
  await run('ip', ['addr', 'add', `${hostSideIp}/${prefix}`, 'dev', hostIf]);
  await run('ip', ['link', 'set', hostIf, 'up']);
  if (opts.forward ?? true) await enableForwarding(hostIf);
  await run('ip', ['-n', ns, 'addr', 'add', `${ip}/${prefix}`, 'dev', 'eth0']);
  await run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
  await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  await run('ip', ['-n', ns, 'route', 'add', 'default', 'via', hostSideIp]);
  const servers: ChildProcess[] = [];
  return {
    ns,
    ip,
    serve: (port, script) => {
      const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script], {
        env: { ...process.env, PORT: String(port) },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      servers.push(child);
      return child;
    },
    remove: async () => {
      for (const s of servers) s.kill('SIGKILL');
      await removeTestHost(ns, hostIf);
    },
  };
}

async function removeTestHost(ns: string, hostIf: string): Promise<void> {
  await run('ip', ['netns', 'del', ns]).catch((err: Error) => {
    if (!/No such file/.test(err.message)) throw err;
  });
  await run('ip', ['link', 'del', hostIf]).catch((err: Error) => {
    if (!/Cannot find device/.test(err.message)) throw err;
  });
}

/** A server answering every connection with `text`. */
export const answerScript = (text: string) =>
  `require('net').createServer((s) => s.end(${JSON.stringify(text)} + '\\n')).listen(+process.env.PORT, () => console.log('listening'));`;

/** A UDP server printing `<payload, printable bytes only> from <source address>` for each datagram. */
export const datagramScript = `require('dgram').createSocket('udp4').on('message', (m, r) => console.log(m.toString('latin1').replace(/[^ -~]/g, '.') + ' from ' + r.address)).bind(+process.env.PORT, () => console.log('listening'));`;

/**
 * Sends one UDP datagram per `label=address` to `target:port`, each from that source address
 * (bound explicitly, so the kernel uses exactly it), from inside network namespace `ns`.
 */
export async function sendDatagramsFrom(
  ns: string,
  target: string,
  port: number,
  sends: string[],
): Promise<void> {
  const script = `const d = require('dgram'); const [target, port, ...sends] = process.argv.slice(1); (async () => { for (const s of sends) { const [label, address] = s.split('='); await new Promise((res) => { const k = d.createSocket('udp4'); k.bind({ address }, () => k.send(label, +port, target, () => { k.close(); res(); })); }); } })();`;
  await run('ip', ['netns', 'exec', ns, process.execPath, '-e', script, target, String(port), ...sends]);
}

/** A sink printing `bytes ms` for each connection, from its first byte to its end. */
export const sinkScript = `require('net').createServer((s) => { let n = 0, t0 = 0; s.on('data', (d) => { if (!t0) t0 = Date.now(); n += d.length; }); s.on('end', () => { console.log(n + ' ' + (Date.now() - t0)); s.end(); }); }).listen(+process.env.PORT, () => console.log('listening'));`;

export function waitForOutput(child: ChildProcess, pattern: RegExp, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(
      () => reject(new Error(`no ${pattern} within ${timeoutMs} ms; saw ${JSON.stringify(seen)}`)),
      timeoutMs,
    );
    child.stdout?.on('data', (d: Buffer) => {
      seen += d.toString();
      const m = pattern.exec(seen);
      if (m) {
        clearTimeout(timer);
        resolve(m[0]);
      }
    });
  });
}
