import type { ImageReference } from './reference.js';
import type { RegistryIdentity } from './registry-auth.js';
import type { RegistryClient } from './registry-client.js';

export interface BlobDescriptor {
  digest: string;
  size: number;
}

/** Where a blob's bytes came from. */
export interface FetchedBytes {
  origin: number;
  peers: number;
}

/** What a fetch is told and told to do besides the blob itself. */
export interface FetchOptions {
  /**
   * Told, as bytes land, how many from the start of the file are written, for a reader that
   * unpacks while it downloads (fewer than before means the transfer started over: what was
   * read is void).
   */
  available: (bytes: number) => void;
  /** Awaited as bytes arrive: a background pull's bandwidth cap. */
  pace?: (bytes: number) => Promise<void>;
  /** Whose credentials reach the registry (a tenant's); default: the node's. */
  identity?: RegistryIdentity;
}

/**
 * How a blob that is not in the store reaches it: into `file` (created empty by the caller),
 * whole and verified against its digest when this settles.
 */
export interface BlobFetcher {
  fetch(ref: ImageReference, blob: BlobDescriptor, file: string, opts: FetchOptions): Promise<FetchedBytes>;
  /** The blob is in the store now (or its pull failed): for a fetcher that shares what it holds. */
  settled?(blob: BlobDescriptor, stored: boolean): Promise<void>;
}

/** Every byte from the registry, front to back (resumed by range after a cut). */
export class RegistryFetcher implements BlobFetcher {
  constructor(private readonly client: RegistryClient) {}

  async fetch(
    ref: ImageReference,
    blob: BlobDescriptor,
    file: string,
    opts: FetchOptions,
  ): Promise<FetchedBytes> {
    await this.client.as(opts.identity).blobToFile(ref, blob, file, opts.available, opts.pace);
    return { origin: blob.size, peers: 0 };
  }
}
