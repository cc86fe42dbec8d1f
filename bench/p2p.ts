/**
 * Five nodes pulling one ~100 MB image at once from a registry across a 200 Mbit/s link
 * (docker-registry in a network namespace behind `tc tbf`): the bytes that leave the registry
 * and the time, for Boxcar's peer-to-peer pulls (five `boxcar serve` sharing PostgreSQL),
 * five independent pulls, and five pulls through the registry's own pull-through cache. Then
 * the same P2P pull with one node killed a third of the way in.
 * Run: node dist/bench/p2p.js   (root)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { startPostgres } from '../src/testing/postgres.js';
import { startRegistry } from '../src/testing/registry.js';
import { BOXCAR_MAIN, boxcarSync, exited, startServe } from '../src/testing/serve-process.js';
import { pushLayout } from '../src/testing/oci-images.js';
import { benchImage } from './lib/bench-image.js';
import { startShapedRegistry, type ShapedRegistry } from './lib/shaped-registry.js';
import { row } from './lib/stats.js';
import { removeScratch } from './lib/scratch.js';

const NODES = 5;
const RATE_MBIT = 200;

interface Outcome {
  ms: number;
  egress: number;
}

async function main() {
  // Every run pulls an image of its own (other bytes, other digests): nobody holds it yet.
  const images = await Promise.all([0, 1, 2, 3].map((v) => benchImage(v)));
  const bytes = images[0]?.bytes ?? 0;
  const origin = await startShapedRegistry(RATE_MBIT);
  const pg = await startPostgres();
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-bench-p2p-'));
  const children: ChildProcess[] = [];
  let next = 0;
  /** The next image variant, pushed to the origin. */
  const freshImage = async (): Promise<string> => {
    const ref = `${origin.host}/bench/app-${next}:1`;
    const { layout } = images[next++] as { layout: string };
    await pushLayout(layout, 'app', ref);
    return ref;
  };
  try {
    const alone = path.join(root, 'alone.yaml');
    await writeFile(alone, `registries:\n  insecure: ['${origin.host}']\n`);
    const config = path.join(root, 'nodes.yaml');
    await writeFile(
      config,
      `registries:\n  insecure: ['${origin.host}']\nimages:\n  prefetch: { enabled: false }\n`,
    );
    const results: Array<[string, Outcome]> = [];

    // Five independent pulls (no peers), all at once.
    results.push(['5 independent pulls', await independent(origin, await freshImage(), root, alone)]);

    // Five pulls through the registry's own pull-through cache (docker-registry proxy mode).
    const cache = await startRegistry({ proxyOf: `http://${origin.host}` });
    try {
      const ref = await freshImage();
      results.push([
        '5 pulls via a pull-through cache',
        await independent(origin, ref.replace(origin.host, cache.host), root, alone),
      ]);
    } finally {
      await cache.stop();
    }

    // Five Boxcar nodes sharing a store: peer-to-peer.
    const token = boxcarSync([
      '--state',
      path.join(root, 'token'),
      '--store',
      pg.url,
      'token',
      'create',
      '--operator',
    ]);
    const nodes: Array<{ child: ChildProcess; url: string }> = [];
    for (let i = 0; i < NODES; i++) {
      const state = path.join(root, `node-${i}`);
      const node = await startServe(['--state', state, '--store', pg.url, '--config', config]);
      children.push(node.child);
      nodes.push(node);
    }
    const pull = async (url: string, ref: string) => {
      const res = await fetch(`${url}/v1/images/pull`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ image: ref }),
      });
      if (!res.ok) throw new Error(`pull on ${url}: ${res.status} ${await res.text()}`);
      return performance.now();
    };
    /**
     * All nodes pull a fresh image at once; with `killAfterMs`, the first is killed then.
     * `survivors` is when the last of the others finished, the figure both runs share.
     */
    const p2p = async (killAfterMs?: number): Promise<Outcome & { survivors: number }> => {
      const ref = await freshImage();
      const before = origin.egress();
      const t0 = performance.now();
      const [victim, ...others] = nodes as [(typeof nodes)[number], ...typeof nodes];
      const theirs = Promise.all(others.map((n) => pull(n.url, ref)));
      if (killAfterMs === undefined) await pull(victim.url, ref);
      else {
        void pull(victim.url, ref).catch(() => undefined); // it dies mid-pull
        await new Promise((r) => setTimeout(r, killAfterMs));
        victim.child.kill('SIGKILL');
        await exited(victim.child);
      }
      const survivors = Math.max(...(await theirs)) - t0;
      return { ms: performance.now() - t0, survivors, egress: origin.egress() - before };
    };
    const clean = await p2p();
    results.push([`${NODES} boxcar nodes, peer-to-peer`, clean]);
    // The kill lands about a third of the way into a pull like the one just measured.
    const killAfterMs = clean.ms / 3;
    const killed = await p2p(killAfterMs);
    // Its time is when the others were done: the killed node never is.
    results.push([
      `${NODES} boxcar nodes, one killed at ${(killAfterMs / 1000).toFixed(1)} s`,
      { ...killed, ms: killed.survivors },
    ]);

    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    console.log(
      `${NODES} nodes pulling one ${mib(bytes)} image (layers, compressed) at once over ${RATE_MBIT} Mbit/s, ${os.cpus().length} cores`,
    );
    console.log(row(['what', 'time (s)', 'origin egress', 'x image size']));
    for (const [what, o] of results)
      console.log(row([what, (o.ms / 1000).toFixed(1), mib(o.egress), `${(o.egress / bytes).toFixed(2)}x`]));
    console.log(
      `target: P2P origin egress ≤ 1.05 × the image size; measured ${(clean.egress / bytes).toFixed(3)}x`,
    );
    console.log(
      `peer death: the other ${NODES - 1} nodes finished in ${(killed.survivors / 1000).toFixed(1)} s, against ${(clean.survivors / 1000).toFixed(1)} s without it: ${((killed.survivors - clean.survivors) / 1000).toFixed(2)} s later (target ≤ 2 s; with one node fewer there is also less work on ${os.cpus().length} cores)`,
    );
  } catch (err) {
    console.error('benchmark failed:', err);
    process.exitCode = 1;
  } finally {
    for (const c of children)
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGTERM');
        await exited(c);
      }
    await pg.stop();
    await origin.stop();
    await removeScratch(root);
  }
}

/** `NODES` separate `boxcar images pull` processes at once, each with its own state and no peers. */
async function independent(
  origin: ShapedRegistry,
  ref: string,
  root: string,
  config: string,
): Promise<Outcome> {
  const before = origin.egress();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: NODES }, (_, i) => {
      const child = spawn(
        process.execPath,
        [
          BOXCAR_MAIN,
          '--state',
          path.join(root, `alone-${i}-${Date.now()}`),
          '--config',
          config,
          'images',
          'pull',
          '--json',
          ref,
        ],
        { stdio: ['ignore', 'ignore', 'inherit'] },
      );
      return new Promise<void>((resolve, reject) =>
        child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`pull exited ${code}`)))),
      );
    }),
  );
  return { ms: performance.now() - t0, egress: origin.egress() - before };
}

await main();
