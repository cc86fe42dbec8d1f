import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '../observability/logger.js';
import { leftovers, tempState } from '../testing/harness.js';
import { pushArtifact, pushLayout, writeLayout, type TestEntry } from '../testing/oci-images.js';
import { startRegistry, type TestRegistry } from '../testing/registry.js';
import { RegistryProxy } from '../testing/registry-proxy.js';
import { BOXCAR_MAIN } from '../testing/serve-process.js';
import { imageLayers, type ResolvedImage } from './image.js';
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

/** A file of an image, in the topmost of its layers that has it (no test image whites out what it reads). */
const inImage = (image: ResolvedImage, p: string) => {
  const paths = imageLayers(image).map((l) => path.join(l, p));
  return paths.find((f) => existsSync(f)) ?? (paths[0] as string);
};

/** `boxcar run --json --image IMAGE -- sh -c SCRIPT` in a state directory; its result. */
function boxcarRun<T>(state: string, image: string, script: string): T {
  const r = spawnSync(
    process.execPath,
    [BOXCAR_MAIN, '--state', state, 'run', '--json', '--image', image, '--', 'sh', '-c', script],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr + r.stdout);
  return JSON.parse(r.stdout) as T;
}

describe('pulling from a registry', () => {
  let registry: TestRegistry;
  let secured: TestRegistry;
  let proxy: RegistryProxy;
  let work: string;
  const USER = { name: 'ci', password: 'registry-pass-1' };

  before(async () => {
    [registry, secured] = await Promise.all([startRegistry(), startRegistry({ user: USER })]);
    proxy = new RegistryProxy(registry.host);
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
      const run = () =>
        boxcarRun<{
          output: string;
          image: { ref: string; digest: string; bytes: { origin: number; cache: number } };
        }>(state.root, `${registry.host}/team/app:1`, 'ls /etc; cat /etc/new');
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

  test('a job writes over its image: the writes are its own, not the next job’s, never in the store', async () => {
    await push(registry.host, 'team/writable:1', [
      [...base, { name: 'bin/rm', type: 'symlink', linkname: 'busybox' }],
      [{ name: 'etc/.wh.old' }, { name: 'etc/new', content: 'new\n' }],
    ]);
    const state = await tempState();
    try {
      const run = (script: string) =>
        boxcarRun<{ output: string }>(state.root, `${registry.host}/team/writable:1`, script).output;
      assert.equal(
        run('echo x > /etc/x && cat /etc/x && echo more >> /etc/kept && rm /etc/new && ls /etc'),
        'x\nkept\nx\n',
      );
      assert.equal(run('ls /etc; cat /etc/kept'), 'kept\nnew\nkept\n', 'the next job has the image as it is');
      const layers = readdirSync(state.layers).map((key) => path.join(state.layers, key, 'fs'));
      assert.equal(layers.length, 2);
      for (const fs of layers) {
        assert.ok(!existsSync(path.join(fs, 'etc/x')), fs);
        const kept = path.join(fs, 'etc/kept');
        if (existsSync(kept)) assert.equal(readFileSync(kept, 'utf8'), 'kept\n');
      }
      assert.deepEqual(await leftovers(state), []);
    } finally {
      await state.cleanup();
    }
  });

  test('a WASM module published as an OCI artifact runs on the wasm runtime, as its file does', async () => {
    const file = fileURLToPath(new URL('../../wasm/hello.wasm', import.meta.url));
    const digest = await pushArtifact(registry.host, 'tools/hello:1', {
      config: { mediaType: 'application/vnd.wasm.config.v0+json', data: Buffer.from('{}') },
      layers: [{ mediaType: 'application/wasm', data: readFileSync(file) }],
    });
    const state = await tempState();
    try {
      const run = (image: string) => {
        const r = spawnSync(
          process.execPath,
          [BOXCAR_MAIN, '--state', state.root, 'run', '--json', '--image', image, '--'],
          {
            encoding: 'utf8',
          },
        );
        return {
          code: r.status,
          result: JSON.parse(r.stdout) as { runtime: string; output: string; image?: { digest: string } },
        };
      };
      const fromRegistry = run(`${registry.host}/tools/hello:1`);
      const fromFile = run(file);
      assert.equal(fromRegistry.result.runtime, 'wasm');
      assert.equal(fromRegistry.code, fromFile.code);
      assert.equal(fromRegistry.result.output, fromFile.result.output);
      assert.equal(fromRegistry.result.image?.digest, digest);
      // An image (not a module) still needs its command.
      const noCommand = spawnSync(
        process.execPath,
        [BOXCAR_MAIN, '--state', state.root, 'run', '--image', `${registry.host}/team/app:1`],
        { encoding: 'utf8' },
      );
      assert.equal(noCommand.status, 125);
      assert.match(
        noCommand.stderr,
        /^boxcar: command is required: .* \(\S+\/team\/app:1 is an image, not a WASM module\)\n$/,
      );
      assert.deepEqual(await leftovers(state), []);
    } finally {
      await state.cleanup();
    }
  });

  test('a tag is pinned to a digest once: pushing the tag again does not change what the job runs', async () => {
    await push(registry.host, 'team/pinned:1', [[...base, { name: 'version', content: 'one\n' }]]);
    const { state, puller } = await newPuller();
    try {
      const { ref: pinned } = await puller.pin(`${registry.host}/team/pinned:1`);
      await push(registry.host, 'team/pinned:1', [[...base, { name: 'version', content: 'two\n' }]]);
      const image = await puller.pull(pinned);
      assert.equal(readFileSync(inImage(image, 'version'), 'utf8'), 'one\n');
      const latest = await puller.pull(`${registry.host}/team/pinned:1`);
      assert.equal(readFileSync(inImage(latest, 'version'), 'utf8'), 'two\n');
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
      assert.equal(new Set(images.map((i) => imageLayers(i).join(':'))).size, 1);
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
      assert.ok(existsSync(inImage(image, 'bin/busybox')));
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
      assert.ok(existsSync(inImage(image, 'bin/busybox')));
      assert.equal(readFileSync(inImage(image, 'etc/kept'), 'utf8'), 'kept\n');
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
        /refused access to image .* \(401\); give credentials for \S+ under registries\.auth/,
      );
    } finally {
      await anon.state.cleanup();
    }
    const withConfig = await newPuller({
      credentials: (r) => (r === secured.host ? { username: USER.name, password: USER.password } : undefined),
    });
    try {
      assert.ok(existsSync(inImage(await withConfig.puller.pull(ref), 'etc/kept')));
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
      assert.ok(existsSync(inImage(image, 'bin/busybox')));
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
      assert.equal(readdirSync(state.layers).length, 2, 'the layers under the refused one, whole');
      const scratch = path.join(state.images, 'tmp');
      assert.deepEqual(existsSync(scratch) ? readdirSync(scratch) : [], [], 'no half-unpacked layer is kept');
      assert.deepEqual(await leftovers(state), []);
    } finally {
      await state.cleanup();
    }
  });
});
