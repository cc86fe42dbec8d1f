import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { tempState } from '../testing/harness.js';
import { ensureBaseImage } from './base-image.js';
import { sha256 } from '../lib/digest.js';
import { BASE_IMAGE_REF, imageLayers } from './image.js';
import { ImageStore } from './image-store.js';
import { resolveImage } from './resolve.js';

test('the base image is deterministic: two stores build the same digest, and a rebuild is a no-op', async (t) => {
  const a = await tempState();
  const b = await tempState();
  t.after(async () => {
    await a.cleanup();
    await b.cleanup();
  });
  const storeA = new ImageStore(a);
  const first = await ensureBaseImage(storeA);
  assert.equal(first.built, true);
  const again = await ensureBaseImage(storeA);
  assert.deepEqual(again, { manifestDigest: first.manifestDigest, built: false });
  const other = await ensureBaseImage(new ImageStore(b));
  assert.equal(other.manifestDigest, first.manifestDigest, 'same busybox, same digest on another node');

  // A valid OCI image layout: index names the ref, every blob hashes to its name.
  const index = JSON.parse(readFileSync(path.join(a.images, 'index.json'), 'utf8')) as {
    manifests: Array<{ digest: string; annotations: Record<string, string> }>;
  };
  assert.equal(index.manifests[0]?.annotations['org.opencontainers.image.ref.name'], BASE_IMAGE_REF);
  const manifest = await storeA.readJson<{ layers: Array<{ digest: string }>; config: { digest: string } }>(
    first.manifestDigest,
  );
  for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    assert.equal(sha256(readFileSync(storeA.blobPath(d))), d);
  }
});

test('resolving the default image unpacks its one layer, a usable root filesystem, once', async (t) => {
  const s = await tempState();
  t.after(() => s.cleanup());
  const store = new ImageStore(s);
  const img = await resolveImage(store, undefined);
  assert.equal(img.ref, BASE_IMAGE_REF);
  const layers = imageLayers(img);
  assert.equal(layers.length, 1);
  const layer = layers[0] as string;
  assert.ok(layer.startsWith(`${s.layers}/`), layer);
  for (const p of ['bin/busybox', 'bin/sh', 'usr/bin/env', 'tmp', 'workspace', 'proc', 'etc/passwd']) {
    assert.ok(existsSync(path.join(layer, p)), p);
  }
  assert.ok(img.config.env.some((e) => e.startsWith('PATH=')));
  const again = await resolveImage(store, 'boxcar/base');
  assert.deepEqual(imageLayers(again), [layer]);
  await assert.rejects(
    resolveImage(store, 'docker.io/library/alpine:3'),
    /is in a registry, and this command cannot pull/,
  );
});
