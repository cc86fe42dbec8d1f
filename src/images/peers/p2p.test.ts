import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { tempState } from '../../testing/harness.js';
import { pushLayout, writeLayout } from '../../testing/oci-images.js';
import { startPostgres, type TestPostgres } from '../../testing/postgres.js';
import { RegistryProxy } from '../../testing/registry-proxy.js';
import { startRegistry, type TestRegistry } from '../../testing/registry.js';
import { boxcarSync, exited, startServe } from '../../testing/serve-process.js';

/**
 * Peer-to-peer pulls between real `boxcar serve` processes sharing a PostgreSQL store, from
 * the CNCF registry behind our proxy (which counts the registry's egress and slows it down, so
 * that pulls overlap): nodes pulling at once take the image from the registry about once; a
 * node killed mid-transfer, or one that sends bad bytes, costs the others nothing but time.
 */
const PIECE = 256 * 1024;

interface Node {
  child: ChildProcess;
  url: string;
  state: Awaited<ReturnType<typeof tempState>>;
}

interface Pulled {
  ref: string;
  digest: string;
  pullMs: number;
  bytes: { origin: number; peers: number; cache: number };
}

describe('peer-to-peer image pulls between nodes', () => {
  let pg: TestPostgres;
  let registry: TestRegistry;
  let proxy: RegistryProxy;
  let work: string;
  let token: string;
  const nodes: Node[] = [];
  const servers: http.Server[] = [];

  before(async () => {
    [pg, registry] = await Promise.all([startPostgres(), startRegistry()]);
    proxy = new RegistryProxy(registry.host);
    await proxy.start();
    work = await mkdtemp(path.join(os.tmpdir(), 'bx-p2p-'));
    const state = await tempState();
    try {
      token = boxcarSync(['--state', state.root, '--store', pg.url, 'token', 'create', '--operator']);
    } finally {
      await state.cleanup();
    }
  });
  after(async () => {
    for (const n of nodes) {
      if (n.child.exitCode === null && n.child.signalCode === null) n.child.kill('SIGTERM');
      await exited(n.child);
      await n.state.cleanup();
    }
    for (const s of servers) s.close();
    await proxy?.stop();
    await Promise.all([registry?.stop(), pg?.stop()]);
    await rm(work, { recursive: true, force: true });
  });

  const startNode = async (extra: Record<string, string> = {}): Promise<Node> => {
    const state = await tempState();
    const config = path.join(state.root, 'config.yaml');
    const p2p = Object.entries({ enabled: 'true', piece_size: `${PIECE / 1024}Ki`, ...extra })
      .map(([k, v]) => `    ${k}: ${v}`)
      .join('\n');
    writeFileSync(config, `images:\n  p2p:\n${p2p}\n`);
    const started = await startServe(['--state', state.root, '--store', pg.url, '--config', config]);
    const node = { ...started, state };
    nodes.push(node);
    return node;
  };

  let images = 0;
  /** Pushes an image of three layers of random bytes; returns its reference and size. */
  const pushImage = async (mib: number): Promise<{ ref: string; bytes: number }> => {
    const dir = path.join(work, `image-${images}`);
    const layers = [0, 1, 2].map((i) => [
      { name: `data-${i}.bin`, content: randomBytes(Math.round((mib / 3) * 2 ** 20)) },
    ]);
    await writeLayout(dir, 'v', layers, { compression: 'none' });
    const repo = `team/p2p-${images++}`;
    await pushLayout(dir, 'v', `${registry.host}/${repo}:1`); // pushed to the registry, pulled through the proxy
    const ref = `${proxy.host}/${repo}:1`;
    // The image's manifest and every blob it names, as the registry stores them.
    const index = await fetch(`http://${registry.host}/v2/${repo}/manifests/1`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    });
    const body = Buffer.from(await index.arrayBuffer());
    const manifest = JSON.parse(body.toString()) as {
      config: { size: number };
      layers: Array<{ size: number }>;
    };
    return {
      ref,
      bytes: body.length + manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0),
    };
  };

  const pull = async (node: Node, ref: string): Promise<Pulled> => {
    const res = await fetch(`${node.url}/v1/images/pull`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ image: ref }),
    });
    const body = await res.text();
    assert.equal(res.status, 200, body);
    return JSON.parse(body) as Pulled;
  };

  test('three nodes pulling one image at once take it from the registry once, and the rest from each other', async () => {
    const [a, b, c] = await Promise.all([startNode(), startNode(), startNode()]);
    const image = await pushImage(6);
    proxy.rate = 6 * 2 ** 20; // per connection: pulls overlap
    const before = proxy.egress;
    try {
      const pulled = await Promise.all([a, b, c].map((n) => pull(n as Node, image.ref)));
      const egress = proxy.egress - before;
      assert.equal(new Set(pulled.map((p) => p.digest)).size, 1);
      assert.ok(
        egress <= 1.05 * image.bytes,
        `registry egress ${egress} for an image of ${image.bytes} bytes`,
      );
      for (const p of pulled) assert.equal(p.bytes.origin + p.bytes.peers, image.bytes, JSON.stringify(p));
      assert.ok(pulled.filter((p) => p.bytes.peers > 0).length >= 2, JSON.stringify(pulled));
      // The image is in each node's own store.
      for (const n of [a, b, c] as Node[]) {
        const listed = JSON.parse(boxcarSync(['--state', n.state.root, 'images', 'ls', '--json'])) as Array<{
          digest: string;
        }>;
        assert.ok(listed.some((e) => e.digest === pulled[0]?.digest));
      }
    } finally {
      proxy.rate = undefined;
    }
  });

  test('a node killed mid-transfer: the others finish, its pieces from the registry or each other', async () => {
    const [a, b, c] = await Promise.all([startNode(), startNode(), startNode()]);
    const image = await pushImage(6);
    proxy.rate = 3 * 2 ** 20;
    try {
      const pulls = [b, c].map((n) => pull(n as Node, image.ref));
      const doomed = pull(a as Node, image.ref).then(
        () => 'finished',
        () => 'killed',
      );
      await new Promise((r) => setTimeout(r, 700));
      a?.child.kill('SIGKILL');
      const t0 = Date.now();
      const pulled = await Promise.all(pulls);
      assert.equal(await doomed, 'killed');
      assert.equal(pulled[0]?.digest, pulled[1]?.digest);
      for (const p of pulled) assert.equal(p.bytes.origin + p.bytes.peers, image.bytes, JSON.stringify(p));
      assert.ok(Date.now() - t0 < 20_000);
    } finally {
      proxy.rate = undefined;
    }
  });

  test('a peer that sends bad bytes is dropped: the piece comes from the registry, the image is whole', async () => {
    // A node whose pieces pass through a forwarder that flips a byte in each: its peers must
    // notice (against the hashes the directory holds) and go to the registry instead.
    let target = '';
    const liar = http.createServer((req, res) => {
      void (async () => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers))
          if (typeof v === 'string' && k !== 'host') headers[k] = v;
        const up = await fetch(`${target}${req.url}`, { headers });
        const body = Buffer.from(await up.arrayBuffer());
        if (body.length > 10) body[10] = (body[10] as number) ^ 0xff;
        res.writeHead(up.status, { 'content-length': String(body.length) });
        res.end(body);
      })().catch((err: unknown) => res.destroy(err as Error));
    });
    servers.push(liar);
    await new Promise<void>((r) => liar.listen(0, '127.0.0.1', r));
    const liarUrl = `http://127.0.0.1:${(liar.address() as { port: number }).port}`;
    const bad = await startNode({ advertise: liarUrl });
    target = bad.url;
    const image = await pushImage(3);
    const first = await pull(bad, image.ref);
    assert.equal(first.bytes.origin, image.bytes);
    const honest = await startNode();
    const t0 = Date.now();
    const second = await pull(honest, image.ref);
    assert.equal(second.digest, first.digest);
    assert.deepEqual(second.bytes, { origin: image.bytes, peers: 0, cache: 0 });
    assert.ok(Date.now() - t0 < 10_000);
  });

  test('a peer that stalls is dropped within its stall time: the pull goes on from the registry', async () => {
    // A node whose advertised address accepts connections and then says nothing, ever.
    const silent = http.createServer(() => undefined);
    servers.push(silent);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const stalled = await startNode({
      advertise: `http://127.0.0.1:${(silent.address() as { port: number }).port}`,
    });
    const image = await pushImage(2);
    assert.equal((await pull(stalled, image.ref)).bytes.origin, image.bytes);
    const other = await startNode();
    const t0 = Date.now();
    const pulled = await pull(other, image.ref);
    assert.deepEqual(pulled.bytes, { origin: image.bytes, peers: 0, cache: 0 });
    // One stall (1 s) per blob at most, not a hang.
    assert.ok(Date.now() - t0 < 8000, `${Date.now() - t0} ms`);
    silent.closeAllConnections();
  });

  test('only nodes may ask a node for pieces: no credential, or a tenant’s token, is refused', async () => {
    const node = nodes.find((n) => n.child.exitCode === null && n.child.signalCode === null) as Node;
    const url = `${node.url}/peer/v1/blobs/sha256:${'0'.repeat(64)}`;
    assert.equal((await fetch(url, { headers: { range: 'bytes=0-9' } })).status, 401);
    const tenant = boxcarSync([
      '--state',
      node.state.root,
      '--store',
      pg.url,
      'token',
      'create',
      '--tenant',
      't',
    ]);
    const asTenant = await fetch(url, { headers: { range: 'bytes=0-9', authorization: `Bearer ${tenant}` } });
    assert.equal(asTenant.status, 401);
  });
});
