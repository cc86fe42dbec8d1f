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
}

export const BASE_IMAGE_REF = 'boxcar/base:latest';
