/** What a runtime needs of an image: what its root filesystem is made of and how to run in it. */
export interface ImageConfig {
  env: string[];
  entrypoint: string[];
  cmd: string[];
  workingDir: string;
}

export interface ResolvedImage {
  /** The name the job asked for, e.g. `boxcar/base`. */
  ref: string;
  /** Manifest digest: the image's identity. */
  digest: string;
  /**
   * An OCI image's layers, each unpacked once into a directory shared read-only by every job
   * and image that has it, top layer first (overlayfs' lowerdir order); or a WASM module's file.
   */
  content: { layers: string[] } | { module: string };
  config: ImageConfig;
  /** How this image came to the node, when it was pulled from a registry for the job. */
  pull?: PullFigures;
}

export interface PullFigures {
  pullMs: number;
  /** Bytes from the registry, from peer nodes, and found in the local cache. */
  bytes: { origin: number; peers: number; cache: number };
}

/**
 * An image this node does not pull, for a driver whose sandboxes' host pulls it (`pullsImages`:
 * a cluster's nodes): its reference and, when pinned (`name@sha256:…`), its digest; nothing of
 * it is on this node, and its config is the registry's, read where it runs.
 */
export function unpulledImage(ref: string): ResolvedImage {
  const at = ref.lastIndexOf('@');
  return {
    ref,
    digest: at < 0 ? '' : ref.slice(at + 1),
    content: { layers: [] },
    config: { env: [], entrypoint: [], cmd: [], workingDir: '' },
  };
}

export const BASE_IMAGE_REF = 'boxcar/base:latest';

/** A WASM module's config: no environment of its own, its arguments the job's command. */
export const WASM_CONFIG: ImageConfig = { env: [], entrypoint: [], cmd: [], workingDir: '/workspace' };

/** The layer directories of an OCI image, top first; a WASM module has none. */
export function imageLayers(image: ResolvedImage): string[] {
  if ('layers' in image.content) return image.content.layers;
  throw new Error(`image ${image.ref} is a WASM module, not an OCI image: only a WASM runtime runs it`);
}

/** The module file of a WASM image. */
export function imageModule(image: ResolvedImage): string {
  if ('module' in image.content) return image.content.module;
  throw new Error(`image ${image.ref} is an OCI image, not a WASM module`);
}
