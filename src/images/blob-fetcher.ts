import type { ImageReference } from './reference.js';
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

/**
 * How a blob that is not in the store reaches it: into `file` (created empty by the caller),
 * whole and verified against its digest when this settles. `available` is told, as bytes land,
 * how many from the start of the file are written, for a reader that unpacks while it
 * downloads (fewer than before means the transfer started over: what was read is void).
 * `pace`, when given, is awaited as bytes arrive: a background pull's bandwidth cap.
 */
export interface BlobFetcher {
  fetch(
    ref: ImageReference,
    blob: BlobDescriptor,
    file: string,
    available: (bytes: number) => void,
    pace?: (bytes: number) => Promise<void>,
  ): Promise<FetchedBytes>;
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
    available: (bytes: number) => void,
    pace?: (bytes: number) => Promise<void>,
  ): Promise<FetchedBytes> {
    await this.client.blobToFile(ref, blob, file, available, pace);
    return { origin: blob.size, peers: 0 };
  }
}
