import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { silentLogger } from '../observability/logger.js';
import { leftovers, tempState } from '../testing/harness.js';
import { pushLayout, writeLayout, type TestEntry } from '../testing/oci-images.js';
import { startRegistry, type TestRegistry } from '../testing/registry.js';
import { BOXCAR_MAIN } from '../testing/serve-process.js';
import { ImageStore } from './image-store.js';
import { ImagePuller } from './pull.js';
import { RegistryClient } from './registry-client.js';

/**
 * Pulls from the CNCF registry (Debian's docker-registry) on loopback, with and without
 * htpasswd, through a proxy of ours in front of it that counts requests and injects faults: a
 * connection cut mid-blob, bad bytes, a redirect or a token service on another host.
 */
const BUSYBOX = readFileSync('/bin/busybox');
const base: TestEntry[] = [
  { name: 'bin/', type: 'directory' },
  { name: 'bin/busybox', content: BUSYBOX, mode: 0o755 },
  { name: 'bin/sh', type: 'symlink', linkname: 'busybox' },
  { name: 'bin/cat', type: 'symlink', linkname: 'busybox' },
  { name: 'bin/ls', type: 'symlink', linkname: 'busybox' },
  { name: 'etc/', type: 'directory' },
  { name: 'etc/old', content: 'old\n' },
  { name: 'etc/kept', content: 'kept\n' },
];

type Fault =
  | 'cut'
  | 'cut-then-ignore-range'
  | 'ignore-range'
  | 'corrupt'
  | 'long'
  | 'redirect'
  | 'huge-manifest'
  | 'token-elsewhere';

/** A proxy in front of a registry, on 127.0.0.1, and an "elsewhere" server on 127.0.0.2. */
class Proxy {
  readonly blobGets = new Map<string, number>();
  readonly ranges: string[] = [];
  readonly faults = new Map<string, Fault>();
  /** What reached the other host: the Authorization header of each request, or "none". */
  readonly elsewhere: string[] = [];
  fault: Fault | undefined;
  host = '';
  private server = http.createServer((req, res) => void this.handle(req, res));
  private other = http.createServer((req, res) => void this.serveElsewhere(req, res));
  private otherPort = 0;

  constructor(private readonly upstream: string) {}

  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => this.other.listen(0, '127.0.0.2', r));
    this.host = `127.0.0.1:${(this.server.address() as { port: number }).port}`;
    this.otherPort = (this.other.address() as { port: number }).port;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    this.other.closeAllConnections();
    await Promise.all([new Promise((r) => this.server.close(r)), new Promise((r) => this.other.close(r))]);
  }

  private async forward(req: http.IncomingMessage, pathname: string): Promise<Response> {
    const headers: Record<string, string> = {};
    for (const k of ['accept', 'range', 'authorization'])
      if (req.headers[k]) headers[k] = String(req.headers[k]);
    if (this.faults.get(/\/blobs\/(sha256:[0-9a-f]{64})$/.exec(pathname)?.[1] ?? '') === 'ignore-range')
      delete headers.range;
    return fetch(`http://${this.upstream}${pathname}`, { headers });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    if (this.fault === 'token-elsewhere' && req.headers.authorization !== 'Bearer good-token') {
      res.writeHead(401, {
        'www-authenticate': `Bearer realm="http://127.0.0.2:${this.otherPort}/token",service="test",scope="repository:x:pull"`,
      });
      return void res.end();
    }
    const blob = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url)?.[1];
    if (blob) {
      this.blobGets.set(blob, (this.blobGets.get(blob) ?? 0) + 1);
      if (req.headers.range) this.ranges.push(String(req.headers.range));
    }
    const fault = blob
      ? this.faults.get(blob)
      : url.includes('/manifests/')
        ? this.faults.get('manifest')
        : undefined;
    if (fault === 'huge-manifest') {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' });
      return void res.end(JSON.stringify({ schemaVersion: 2, padding: 'x'.repeat(5 * 2 ** 20) }));
    }
    if (fault === 'redirect' && blob) {
      res.writeHead(307, { location: `http://127.0.0.2:${this.otherPort}/blob${url}` });
      return void res.end();
    }
    const up = await this.forward(req, url);
    const body = Buffer.from(await up.arrayBuffer());
    const headers: Record<string, string> = {};
    up.headers.forEach((v, k) => {
      if (!['content-length', 'transfer-encoding', 'connection'].includes(k)) headers[k] = v;
    });
    if ((fault === 'cut' || fault === 'cut-then-ignore-range') && blob) {
      // Once: the retry gets the rest, or the whole blob again from a registry ignoring ranges.
      if (fault === 'cut') this.faults.delete(blob);
      else this.faults.set(blob, 'ignore-range');
      res.writeHead(200, { ...headers, 'content-length': String(body.length) });
      // The cut-off first try of a registry ignoring ranges may differ from its whole retry.
      const half = body.subarray(0, body.length >> 1);
      res.write(fault === 'cut' ? half : Buffer.from(half.map((b, i) => (i % 4096 === 1000 ? b ^ 0xff : b))));
      setTimeout(() => res.socket?.destroy(), 50);
      return;
    }
    let out = body;
    if (fault === 'corrupt') out = Buffer.from(body.map((b, i) => (i === 100 ? b ^ 0xff : b)));
    if (fault === 'long') out = Buffer.concat([body, Buffer.alloc(4096, 1)]);
    res.writeHead(up.status, { ...headers, 'content-length': String(out.length) });
    res.end(out);
  }

  private async serveElsewhere(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.elsewhere.push(req.headers.authorization ?? 'none');
    const url = req.url ?? '/';
    if (url.startsWith('/token')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      return void res.end(JSON.stringify({ token: 'good-token', expires_in: 300 }));
    }
    const up = await this.forward({ headers: {} } as http.IncomingMessage, url.replace(/^\/blob/, ''));
    res.writeHead(up.status);
    res.end(Buffer.from(await up.arrayBuffer()));
  }
}

describe('pulling from a registry', () => {
  let registry: TestRegistry;
  let secured: TestRegistry;
  let proxy: Proxy;
  let work: string;
  const USER = { name: 'ci', password: 'registry-pass-1' };

  before(async () => {
    [registry, secured] = await Promise.all([startRegistry(), startRegistry({ user: USER })]);
    proxy = new Proxy(registry.host);
    await proxy.start();
    work = await mkdtemp(path.join(os.tmpdir(), 'bx-images-'));
  });
  after(async () => {
    await proxy?.stop();
    await Promise.all([registry?.stop(), secured?.stop()]);
    await rm(work, { recursive: true, force: true });
  });

  let n = 0;
  /** Pushes an image (layers of entries) to `host/repo:tag`, returns its layer digests. */
  const push = async (
    host: string,
    repoTag: string,
    layers: TestEntry[][],
    opts: { compression?: 'gzip' | 'zstd' | 'none'; creds?: string } = {},
  ) => {
    const dir = path.join(work, `layout-${n++}`);
    const out = await writeLayout(dir, 'v', layers, { compression: opts.compression });
    await pushLayout(dir, 'v', `${host}/${repoTag}`, opts.creds);
    return out;
  };
  const newPuller = async (
    opts: {
      credentials?: (r: string) => { username: string; password: string } | undefined;
      attempts?: number;
    } = {},
  ) => {
    const state = await tempState();
    const store = new ImageStore(state);
    const client = new RegistryClient({
      insecure: [],
      credentials: opts.credentials ?? (() => undefined),
      attempts: opts.attempts ?? 3,
      backoffMs: 20,
    });
    return { state, store, puller: new ImagePuller(store, client, silentLogger()), client };
  };

  test('boxcar run in a multi-layer image (gzip, zstd and plain layers) with its whiteouts applied', async () => {
    await push(registry.host, 'team/app:1', [base], { compression: 'gzip' });
    const layout = path.join(work, 'multi');
    await writeLayout(layout, 'v', [base, [{ name: 'etc/.wh.old' }, { name: 'etc/new', content: 'new\n' }]], {
      compression: 'zstd',
    });
    await pushLayout(layout, 'v', `${registry.host}/team/app:1`);
    const state = await tempState();
    try {
      const run = () => {
        const r = spawnSync(
          process.execPath,
          [
            BOXCAR_MAIN,
            '--state',
            state.root,
            'run',
            '--json',
            '--image',
            `${registry.host}/team/app:1`,
            '--',
            'sh',
            '-c',
            'ls /etc; cat /etc/new',
          ],
          { encoding: 'utf8' },
        );
        assert.equal(r.status, 0, r.stderr);
        return JSON.parse(r.stdout) as {
          output: string;
          image: { ref: string; digest: string; bytes: { origin: number; cache: number } };
        };
      };
      const first = run();
      assert.equal(first.output, 'kept\nnew\nnew\n', 'etc/old whited out by the upper layer');
      assert.match(first.image.ref, new RegExp(`^${registry.host}/team/app:1@sha256:[0-9a-f]{64}$`));
      assert.ok(first.image.bytes.origin > 100_000, `${first.image.bytes.origin} bytes from the registry`);
      const second = run();
      assert.equal(second.image.bytes.origin, 0, 'the second job finds every blob in the cache');
      assert.ok(second.image.bytes.cache > 0);
      assert.deepEqual(await leftovers(state), []);
    } finally {
      await state.cleanup();
    }
  });

  test('a tag is pinned to a digest once: pushing the tag again does not change what the job runs', async () => {
    await push(registry.host, 'team/pinned:1', [[...base, { name: 'version', content: 'one\n' }]]);
    const { state, puller } = await newPuller();
    try {
      const pinned = await puller.pin(`${registry.host}/team/pinned:1`);
      await push(registry.host, 'team/pinned:1', [[...base, { name: 'version', content: 'two\n' }]]);
      const image = await puller.pull(pinned);
      assert.equal(readFileSync(path.join(image.rootfsPath, 'version'), 'utf8'), 'one\n');
      const latest = await puller.pull(`${registry.host}/team/pinned:1`);
      assert.equal(readFileSync(path.join(latest.rootfsPath, 'version'), 'utf8'), 'two\n');
    } finally {
      await state.cleanup();
    }
  });

  test('pulls of one image at the same time download each blob once', async () => {
    const { layerDigests } = await push(registry.host, 'team/shared:1', [
      base,
      [{ name: 'x', content: 'x\n' }],
    ]);
    const { state, puller } = await newPuller();
    try {
      const images = await Promise.all(
        Array.from({ length: 5 }, () => puller.pull(`${proxy.host}/team/shared:1`)),
      );
      assert.equal(new Set(images.map((i) => i.rootfsPath)).size, 1);
      for (const d of layerDigests) assert.equal(proxy.blobGets.get(d), 1, `blob ${d} fetched once`);
      const origin = images.reduce((a, i) => a + (i.pull?.bytes.origin ?? 0), 0);
      assert.ok(origin < BUSYBOX.length * 1.5, `${origin} bytes from the registry for 5 pulls`);
    } finally {
      await state.cleanup();
    }
  });

  test('a blob cut off mid-transfer resumes with a range request', async () => {
    const { layerDigests } = await push(registry.host, 'team/resume:1', [base]);
    proxy.faults.set(layerDigests[0] as string, 'cut');
    const { state, puller } = await newPuller();
    try {
      const image = await puller.pull(`${proxy.host}/team/resume:1`);
      assert.ok(existsSync(path.join(image.rootfsPath, 'bin/busybox')));
      assert.ok(
        proxy.ranges.some((r) => /^bytes=\d+-$/.test(r) && r !== 'bytes=0-'),
        proxy.ranges.join(','),
      );
    } finally {
      await state.cleanup();
    }
  });

  test('a registry that ignores the range and sent different bytes first: the unpack uses only the verified blob', async () => {
    const { layerDigests } = await push(registry.host, 'team/norange:1', [
      base,
      [{ name: 'etc/new', content: 'new\n' }],
    ]);
    const before = layerDigests.map((d) => proxy.blobGets.get(d) ?? 0);
    for (const d of layerDigests) proxy.faults.set(d, 'cut-then-ignore-range');
    const { state, puller } = await newPuller();
    try {
      const image = await puller.pull(`${proxy.host}/team/norange:1`);
      assert.ok(existsSync(path.join(image.rootfsPath, 'bin/busybox')));
      assert.equal(readFileSync(path.join(image.rootfsPath, 'etc/kept'), 'utf8'), 'kept\n');
      layerDigests.forEach((d, i) =>
        assert.equal((proxy.blobGets.get(d) ?? 0) - (before[i] ?? 0), 2, `${d}: cut, then whole`),
      );
    } finally {
      for (const d of layerDigests) proxy.faults.delete(d);
      await state.cleanup();
    }
  });

  test('bad data is refused: a digest mismatch, a blob longer than it says, a manifest over the limit', async () => {
    for (const [fault, why] of [
      ['corrupt', /arrived as \d+ bytes hashing to sha256:[0-9a-f]+ \(expected \d+ bytes\): refused/],
      ['long', /is longer than its \d+ bytes: refused/],
    ] as const) {
      const { layerDigests } = await push(registry.host, `team/${fault}:1`, [
        [...base, { name: fault, content: fault }],
      ]);
      proxy.faults.set(layerDigests[0] as string, fault);
      const { state, puller, store } = await newPuller({ attempts: 1 });
      try {
        await assert.rejects(puller.pull(`${proxy.host}/team/${fault}:1`), why);
        assert.equal(await store.hasBlob(layerDigests[0] as string), false, 'nothing unverified is kept');
      } finally {
        await state.cleanup();
        proxy.faults.delete(layerDigests[0] as string);
      }
    }
    proxy.faults.set('manifest', 'huge-manifest');
    const { state, puller } = await newPuller({ attempts: 1 });
    try {
      await assert.rejects(
        puller.pull(`${proxy.host}/team/corrupt:1`),
        /the manifest of .* is over the 4194304-byte limit: refused/,
      );
    } finally {
      proxy.faults.delete('manifest');
      await state.cleanup();
    }
  });

  test('htpasswd: refused without credentials, pulled with the config’s or a Docker config.json’s', async () => {
    await push(secured.host, 'team/private:1', [base], { creds: `${USER.name}:${USER.password}` });
    const ref = `${secured.host}/team/private:1`;
    const anon = await newPuller();
    try {
      await assert.rejects(
        anon.puller.pull(ref),
        /refused access to image .* \(401\); give credentials under registries\.auth/,
      );
    } finally {
      await anon.state.cleanup();
    }
    const withConfig = await newPuller({
      credentials: (r) => (r === secured.host ? { username: USER.name, password: USER.password } : undefined),
    });
    try {
      assert.ok(existsSync(path.join((await withConfig.puller.pull(ref)).rootfsPath, 'etc/kept')));
    } finally {
      await withConfig.state.cleanup();
    }
    // The same through the CLI, with the credentials in a Docker config.json.
    const state = await tempState();
    try {
      const docker = path.join(state.root, 'docker.json');
      const auth = Buffer.from(`${USER.name}:${USER.password}`).toString('base64');
      writeFileSync(docker, JSON.stringify({ auths: { [secured.host]: { auth } } }));
      const config = path.join(state.root, 'config.yaml');
      writeFileSync(config, `registries: { docker_config: ${docker} }\n`);
      const r = spawnSync(
        process.execPath,
        [BOXCAR_MAIN, '--state', state.root, '--config', config, 'images', 'pull', ref],
        {
          encoding: 'utf8',
        },
      );
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /pulled .*team\/private:1@sha256:[0-9a-f]{64}/);
    } finally {
      await state.cleanup();
    }
  });

  test('credentials never leave the registry’s host: not on a redirect, not to a token service elsewhere', async () => {
    const { layerDigests } = await push(registry.host, 'team/hops:1', [base]);
    const creds = () => ({ username: 'ci', password: 'do-not-leak' });
    proxy.faults.set(layerDigests[0] as string, 'redirect');
    proxy.fault = 'token-elsewhere';
    proxy.elsewhere.length = 0;
    const { state, puller } = await newPuller({ credentials: creds });
    try {
      const image = await puller.pull(`${proxy.host}/team/hops:1`);
      assert.ok(existsSync(path.join(image.rootfsPath, 'bin/busybox')));
      assert.ok(
        proxy.elsewhere.length >= 2,
        'the token service and the redirected blob were both on the other host',
      );
      assert.deepEqual(
        [...new Set(proxy.elsewhere)],
        ['none'],
        'nothing was sent there with an Authorization header',
      );
    } finally {
      proxy.fault = undefined;
      proxy.faults.delete(layerDigests[0] as string);
      await state.cleanup();
    }
  });

  test('a hostile image from a registry is refused naming its entry, and nothing lands outside the store', async () => {
    const sentinel = path.join(work, 'sentinel');
    await push(registry.host, 'team/hostile:1', [
      base,
      [{ name: 'escape', type: 'symlink', linkname: work }],
      [{ name: 'escape/sentinel', content: 'pwned\n' }],
    ]);
    const state = await tempState();
    try {
      const r = spawnSync(
        process.execPath,
        [
          BOXCAR_MAIN,
          '--state',
          state.root,
          'run',
          '--image',
          `${registry.host}/team/hostile:1`,
          '--',
          'true',
        ],
        { encoding: 'utf8' },
      );
      assert.equal(r.status, 125);
      assert.match(r.stderr, /entry "escape\/sentinel" goes through the symlink "escape"/);
      assert.equal(existsSync(sentinel), false);
      assert.deepEqual(
        readdirSync(state.rootfs).filter((f) => !f.includes('.tmp')),
        [],
        'no half-unpacked root filesystem is kept',
      );
      assert.deepEqual(await leftovers(state), []);
    } finally {
      await state.cleanup();
    }
  });
});
