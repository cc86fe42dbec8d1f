import { UserError } from '../errors.js';
import { ensureBaseImage } from './base-image.js';
import { BASE_IMAGE_REF, type ResolvedImage } from './image.js';
import { type ImageStore, normalizeRef } from './image-store.js';

/** Turns a job's image reference (none = the built-in base) into an unpacked, runnable image. */
export async function resolveImage(store: ImageStore, ref: string | undefined): Promise<ResolvedImage> {
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
