import { rm } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../lib/exec.js';
import { withLock } from '../lib/fs-util.js';
import { type ImageStore, type Manifest, MEDIA } from './image-store.js';

export interface LocalImageRecipe {
  ref: string;
  /** Names every input (binaries' digests, builder version): same key, same image, no rebuild. */
  inputKey: string;
  /** Called only when the image is built (it may run tools). */
  description: () => Promise<string>;
  /** Fills the empty root filesystem directory. */
  populate(rootfs: string): Promise<void>;
}

export interface LocalImageResult {
  manifestDigest: string;
  built: boolean;
}

const INPUT_ANNOTATION = 'org.boxcar.local.input';

/**
 * Images Boxcar builds itself (the busybox base, the isolation probes): a directory becomes one
 * deterministic layer (sorted tar, fixed times and owners), so the same inputs give the same
 * digest on every node, and an image whose inputs have not changed is never built again.
 */
export async function ensureLocalImage(
  store: ImageStore,
  recipe: LocalImageRecipe,
): Promise<LocalImageResult> {
  await store.init();
  const current = async () => {
    const entry = await store.lookup(recipe.ref);
    return entry &&
      entry.annotations?.[INPUT_ANNOTATION] === recipe.inputKey &&
      (await store.hasBlob(entry.digest))
      ? entry.digest
      : undefined;
  };
  const existing = await current();
  if (existing) return { manifestDigest: existing, built: false };
  return withLock(store.lockPath(`build-${recipe.ref.replace(/[^a-z0-9]+/gi, '_')}`), async () => {
    const raced = await current();
    if (raced) return { manifestDigest: raced, built: false };
    return { manifestDigest: await build(store, recipe), built: true };
  });
}

async function build(store: ImageStore, recipe: LocalImageRecipe): Promise<string> {
  const work = await store.scratchDir();
  try {
    const rootfs = path.join(work, 'rootfs');
    await recipe.populate(rootfs);
    const layerFile = path.join(work, 'layer.tar');
    await run('tar', [
      '--create', '--file', layerFile, '--directory', rootfs,
      '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner',
      '--format=posix', '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime', '.',
    ], { timeoutMs: 120_000 }); // prettier-ignore
    const layer = await store.putBlobFile(layerFile, MEDIA.layerTar);
    const config = await store.putBlob(
      JSON.stringify({
        architecture: process.arch === 'x64' ? 'amd64' : process.arch,
        os: 'linux',
        config: {
          Env: ['PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
          Cmd: ['sh'],
          WorkingDir: '/workspace',
        },
        rootfs: { type: 'layers', diff_ids: [layer.digest] },
      }),
      MEDIA.config,
    );
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MEDIA.manifest,
      config,
      layers: [layer],
      annotations: { 'org.opencontainers.image.description': await recipe.description() },
    };
    const desc = await store.putBlob(JSON.stringify(manifest), MEDIA.manifest);
    await store.tag(recipe.ref, desc, { [INPUT_ANNOTATION]: recipe.inputKey });
    return desc.digest;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
