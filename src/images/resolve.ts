import { UserError } from '../lib/errors.js';
import { ensureBaseImage } from './base-image.js';
import { COMMAND_MISSING, isWasmModule, type JobSpec } from '../jobs/spec.js';
import { BASE_IMAGE_REF, type ResolvedImage } from './image.js';
import { type ImageStore, normalizeRef } from './image-store.js';
import { importWasmModule, storedWasmModule } from './wasm-artifact.js';
import type { ImagePuller } from './pull.js';
import type { RegistryIdentity } from './registry-auth.js';
import { RegistryError } from './registry-client.js';
import { isLocalReference } from './reference.js';

/**
 * The job of a local run (the operator's own command line) with its `.wasm` file, if it names
 * one, imported into the store: the job names the stored module from then on.
 */
export async function importLocalModule(store: ImageStore, spec: JobSpec): Promise<JobSpec> {
  if (!spec.image || !isWasmModule(spec.image) || isLocalReference(spec.image)) return spec;
  return { ...spec, image: await importWasmModule(store, spec.image) };
}

/**
 * Turns a job's image reference into an unpacked, runnable image: none is the built-in base,
 * `boxcar/…` an image Boxcar built here, `boxcar/wasm/….wasm` a module imported here (never a
 * path on the node), anything else a registry's
 * image, pulled (`puller`) into the store.
 */
export async function resolveImage(
  store: ImageStore,
  ref: string | undefined,
  puller?: ImagePuller,
  /** Whose credentials pull it (a tenant's); default: the node's. */
  identity?: RegistryIdentity,
): Promise<ResolvedImage> {
  if (ref && isWasmModule(ref)) return storedWasmModule(store, ref);
  const name = normalizeRef(ref ?? BASE_IMAGE_REF);
  if (name === BASE_IMAGE_REF) {
    const { manifestDigest } = await ensureBaseImage(store);
    return store.open(name, manifestDigest);
  }
  if (isLocalReference(name)) {
    const entry = await store.lookup(name);
    if (!entry)
      throw new UserError(
        `image "${ref}" is not one Boxcar has built here; omit --image to use ${BASE_IMAGE_REF}`,
      );
    return store.open(name, entry.digest);
  }
  if (!puller) throw new UserError(`image "${ref}" is in a registry, and this command cannot pull`);
  return puller.pull(name, { identity });
}

/**
 * The job with its registry image's digest fixed (a tag resolved now) and its kind known (an
 * image, or a WASM module published as an artifact); other images as they are.
 */
export async function pinSpec(
  spec: JobSpec,
  puller: ImagePuller,
  identity?: RegistryIdentity,
): Promise<JobSpec> {
  const ref = spec.image;
  if (!ref || isWasmModule(ref) || isLocalReference(ref)) return spec;
  try {
    const pinned = await puller.pin(ref, identity);
    if (pinned.kind === 'oci' && spec.command.length === 0)
      throw new UserError(`command ${COMMAND_MISSING} (${ref} is an image, not a WASM module)`);
    return { ...spec, image: pinned.ref, imageKind: pinned.kind };
  } catch (err) {
    if (err instanceof RegistryError) throw new RegistryError(`image ${ref}: ${err.message}`, err.status);
    throw err;
  }
}
