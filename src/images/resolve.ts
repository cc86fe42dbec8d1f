import { readFile } from 'node:fs/promises';
import { UserError, errnoCode, errorMessage } from '../lib/errors.js';
import { ensureBaseImage } from './base-image.js';
import { isWasmModule } from '../jobs/spec.js';
import { BASE_IMAGE_REF, type ResolvedImage } from './image.js';
import { type ImageStore, MEDIA, normalizeRef } from './image-store.js';

/**
 * A `.wasm` file given as the image: copied into the store under its digest (media type
 * application/wasm), so the module a job ran is the one recorded, whatever happens to the file.
 */
async function wasmModule(store: ImageStore, file: string): Promise<ResolvedImage> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new UserError(
      `cannot read the WASM module ${file} (${errnoCode(err) ?? errorMessage(err)}); check the --image path`,
    );
  }
  await store.init();
  const blob = await store.putBlob(bytes, MEDIA.wasm);
  return {
    ref: file,
    digest: blob.digest,
    rootfsPath: store.blobPath(blob.digest),
    config: { env: [], entrypoint: [], cmd: [], workingDir: '/workspace' },
  };
}

/** Turns a job's image reference (none = the built-in base) into an unpacked, runnable image. */
export async function resolveImage(store: ImageStore, ref: string | undefined): Promise<ResolvedImage> {
  if (ref && isWasmModule(ref)) return wasmModule(store, ref);
  const name = normalizeRef(ref ?? BASE_IMAGE_REF);
  if (name === BASE_IMAGE_REF || name === 'boxcar/base:latest') {
    const { manifestDigest } = await ensureBaseImage(store);
    return store.open(name, manifestDigest);
  }
  const entry = await store.lookup(name);
  if (!entry) {
    throw new UserError(
      `image "${ref}" is not in the local image store and registry pulls are not available yet; omit --image to use the built-in ${BASE_IMAGE_REF}`,
    );
  }
  return store.open(name, entry.digest);
}
