/** What a runtime needs of an image: where its read-only root filesystem is and how to run in it. */
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
  /** Unpacked root filesystem: shared by every job of this image, never written. */
  rootfsPath: string;
  config: ImageConfig;
  /** How this image came to the node, when it was pulled from a registry for the job. */
  pull?: PullFigures;
}

export interface PullFigures {
  pullMs: number;
  /** Bytes from the registry, from peer nodes, and found in the local cache. */
  bytes: { origin: number; peers: number; cache: number };
}

export const BASE_IMAGE_REF = 'boxcar/base:latest';
