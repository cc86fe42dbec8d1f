import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { tempState } from '../testing/harness.js';
import { tarOf, type TestEntry } from '../testing/oci-images.js';
import { imageLayers } from './image.js';
import { ImageStore, MEDIA, type Descriptor, type Manifest } from './image-store.js';

/**
 * The layer store: each layer unpacked once for every image that has it over the same layers,
 * nothing half-unpacked ever in place, and layers no image holds collected.
 */
describe('unpacked layers in the image store', () => {
  let state: Awaited<ReturnType<typeof tempState>>;
  let store: ImageStore;
  before(async () => {
    state = await tempState();
    store = new ImageStore(state);
    await store.init();
  });
  after(() => state.cleanup());

  const base: TestEntry[] = [
    { name: 'etc/', type: 'directory' },
    { name: 'etc/os-release', content: 'base\n' },
  ];

  /** An image of `layers` in the store, tagged `ref`; returns its manifest's digest. */
  const image = async (ref: string, layers: TestEntry[][]) => {
    const descs: Descriptor[] = [];
    for (const l of layers) descs.push(await store.putBlob(await tarOf(l), MEDIA.layerTar));
    const config = await store.putBlob(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        rootfs: { type: 'layers', diff_ids: descs.map((d) => d.digest) },
      }),
      MEDIA.config,
    );
    const manifest: Manifest = { schemaVersion: 2, mediaType: MEDIA.manifest, config, layers: descs };
    const desc = await store.putBlob(JSON.stringify(manifest), MEDIA.manifest);
    await store.tag(ref, desc);
    return desc.digest;
  };
  /** Opens an image, counting the layers it had to read. */
  const open = async (ref: string, digest: string) => {
    const read: string[] = [];
    const img = await store.open(ref, digest, async (layer) => {
      read.push(layer.digest);
      return store.blobPath(layer.digest);
    });
    return { layers: imageLayers(img), read };
  };

  test('a layer two images have over the same layers is unpacked once, and shared', async () => {
    const a = await open('a', await image('a', [base, [{ name: 'etc/a', content: 'a\n' }]]));
    const b = await open('b', await image('b', [base, [{ name: 'etc/b', content: 'b\n' }]]));
    assert.equal(a.read.length, 2);
    assert.equal(b.read.length, 1, 'only its own top layer');
    assert.equal(a.layers[1], b.layers[1], 'one directory for the base layer');
    assert.notEqual(a.layers[0], b.layers[0]);
    assert.equal(readFileSync(path.join(b.layers[0] as string, 'etc/b'), 'utf8'), 'b\n');
    assert.equal(readdirSync(state.layers).length, 3);
    const again = await open('a', (await store.lookup('a'))?.digest as string);
    assert.deepEqual(again, { layers: a.layers, read: [] });
  });

  test('the same layer over other layers is a layer of its own', async () => {
    const top: TestEntry[] = [{ name: 'etc/same', content: 'same\n' }];
    const x = await open('x', await image('x', [[{ name: 'x', content: 'x\n' }], top]));
    const y = await open('y', await image('y', [[{ name: 'y', content: 'y\n' }], top]));
    assert.notEqual(x.layers[0], y.layers[0], 'what a layer holds may depend on the layers under it');
  });

  test('jobs opening one image at once unpack each layer once', async () => {
    const digest = await image('c', [base, [{ name: 'c', content: 'c\n' }], [{ name: 'd', content: 'd\n' }]]);
    const opened = await Promise.all(Array.from({ length: 4 }, () => open('c', digest)));
    assert.equal(
      opened.flatMap((o) => o.read).length,
      2,
      'the base was unpacked already; 2 new layers, once',
    );
    assert.equal(new Set(opened.map((o) => o.layers.join(':'))).size, 1);
  });

  test('a refused layer leaves nothing half-unpacked; the whole ones under it stay', async () => {
    const before = readdirSync(state.layers).length;
    const digest = await image('bad', [
      [{ name: 'esc', type: 'symlink', linkname: '/' }],
      [{ name: 'esc/x', content: 'x' }],
    ]);
    await assert.rejects(open('bad', digest), /entry "esc\/x" goes through the symlink "esc"/);
    assert.equal(readdirSync(state.layers).length, before + 1, 'the symlink’s layer, whole');
    assert.deepEqual(readdirSync(path.join(state.images, 'tmp')), [], 'no scratch directory left');
  });

  test('collecting removes the layers of images no tag and no job holds, not the shared ones', async () => {
    const a = (await store.lookup('a'))?.digest as string;
    const { layers } = await open('a', a);
    for (const ref of ['a', 'b', 'c', 'x', 'y', 'bad']) await store.untag(ref);
    await store.collect(new Set([a]));
    assert.deepEqual(
      readdirSync(state.layers).sort(),
      layers.map((l) => path.basename(path.dirname(l))).sort(),
      'only the layers of the image a job holds',
    );
    await store.collect(new Set());
    assert.deepEqual(readdirSync(state.layers), []);
    assert.ok(!existsSync(layers[0] as string));
  });
});
