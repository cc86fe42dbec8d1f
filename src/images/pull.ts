import path from 'node:path';
import { rm, writeFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { errorMessage } from '../lib/errors.js';
import { withLock } from '../lib/fs-util.js';
import { growingFile } from '../lib/growing-file.js';
import type { Pace } from '../lib/pace.js';
import type { Logger } from '../observability/logger.js';
import type { Store } from '../store/store.js';
import { RegistryFetcher, type BlobDescriptor, type BlobFetcher } from './blob-fetcher.js';
import type { Descriptor, ImageStore, Manifest } from './image-store.js';
import { WASM_CONFIG, type PullFigures, type ResolvedImage } from './image.js';
import { wasmLayer } from './wasm-artifact.js';
import { formatReference, parseReference, type ImageReference } from './reference.js';
import type { RegistryIdentity } from './registry-auth.js';
import { MANIFEST_TYPES, RegistryError, type RegistryClient } from './registry-client.js';

/**
 * Pulling an image from its registry into the content-addressed store: the manifest for this
 * platform, its config and its layers, each blob fetched once however many jobs or processes
 * ask for it at the same time (joined in this process, locked across processes), then unpacked
 * once. A tag becomes a digest once, when a job is accepted (`pin`); every attempt of the job
 * then pulls exactly that digest.
 */

/** Told of progress: each layer's bytes so far, for progress bars or lines. */
export type PullProgress = (e: { layer: string; size: number; done: number; cached: boolean }) => void;

const MANIFEST_MEDIA = [MANIFEST_TYPES.ociManifest, MANIFEST_TYPES.dockerManifest];

export interface CachePolicy {
  /** Pulled images beyond this are pruned, least recently used first. */
  maxBytes: number;
  /** Manifest digests that queued and running jobs need: never pruned. */
  inUse: () => Promise<Set<string>>;
}

/** Told of the file a blob is fetched into and how much of it is written, to follow it. */
type Reading = (file: string, written: () => number) => Promise<void>;

/** A reference with its digest fixed, and what it is: an image, or a WASM module. */
export interface PinnedImage {
  ref: string;
  kind: 'oci' | 'wasm';
}

export interface PullOptions {
  progress?: PullProgress;
  /** A prefetch: paced to a bandwidth cap, and holding still while jobs' pulls run. */
  background?: Pace;
  /** Whose credentials reach the registry (a tenant's); default: the node's. */
  identity?: RegistryIdentity;
}

export class ImagePuller {
  private readonly blobs = new Map<string, Promise<PullFigures['bytes']>>();
  /** Blobs a job's pull waits for: no longer paced. */
  private readonly urgent = new Set<string>();
  private foregroundPulls = 0;
  /** How blobs reach the store: the registry, or a node's peers once it joins them. */
  fetcher: BlobFetcher;

  constructor(
    private readonly store: ImageStore,
    private readonly client: RegistryClient,
    private readonly logger: Logger,
    private readonly cache?: CachePolicy,
  ) {
    this.fetcher = new RegistryFetcher(client);
  }

  /**
   * `host/repo:tag` → `host/repo:tag@sha256:…`: what the job will run, fixed now. With a
   * tenant's `identity` the registry is asked even for a reference by digest: a tenant may run
   * a cached private image only once its own credentials have fetched its manifest.
   */
  async pin(text: string, identity?: RegistryIdentity): Promise<PinnedImage> {
    const ref = parseReference(text);
    let manifest: Manifest;
    let digest: string;
    if (ref.digest && !identity && (await this.store.hasBlob(ref.digest))) {
      digest = ref.digest;
      manifest = await this.store.readJson<Manifest>(digest);
    } else {
      const fetched = await this.client.as(identity).manifest(ref);
      digest = fetched.digest;
      manifest = JSON.parse(fetched.body.toString('utf8')) as Manifest;
    }
    return {
      ref: formatReference({ ...ref, digest }),
      kind: this.wasmModule(ref, manifest) ? 'wasm' : 'oci',
    };
  }

  /** Pulls of jobs (not prefetch) under way: background pulls hold still while there are any. */
  get foreground(): number {
    return this.foregroundPulls;
  }

  async pull(text: string, opts: PullOptions = {}): Promise<ResolvedImage> {
    if (opts.background) return this.pullImage(text, opts);
    this.foregroundPulls++;
    try {
      return await this.pullImage(text, opts);
    } finally {
      this.foregroundPulls--;
    }
  }

  private async pullImage(text: string, opts: PullOptions): Promise<ResolvedImage> {
    const t0 = Date.now();
    const ref = parseReference(text);
    const bytes = { origin: 0, peers: 0, cache: 0 };
    await this.store.init();
    const manifestDigest = await this.manifest(ref, bytes, opts.identity);
    const manifest = await this.store.readJson<Manifest>(manifestDigest);
    if (!manifest.config || !Array.isArray(manifest.layers))
      throw new RegistryError(`${formatReference(ref)}: its manifest has no config or layers`);
    const module = this.wasmModule(ref, manifest);
    await this.blob(ref, manifest.config, bytes, opts);
    const image = module
      ? await this.blobOnly(ref, manifestDigest, module, bytes, opts)
      : await this.layers(ref, manifestDigest, manifest, bytes, opts);
    if (ref.tag)
      await this.store.tag(formatReference({ ...ref, digest: undefined }), {
        mediaType: manifest.mediaType ?? MANIFEST_TYPES.ociManifest,
        digest: manifestDigest,
        size: (await this.store.blobSize(manifestDigest)) ?? 0,
      });
    const pull = { pullMs: Date.now() - t0, bytes };
    if (this.cache && bytes.origin > 0) await this.keepWithinCap(this.cache, manifestDigest);
    return { ...image, pull };
  }

  /** An OCI image's layers, downloaded and unpacked. */
  private async layers(
    ref: ImageReference,
    manifestDigest: string,
    manifest: Manifest,
    bytes: PullFigures['bytes'],
    opts: PullOptions,
  ): Promise<ResolvedImage> {
    const { progress } = opts;
    // Layers download one after another in layer order, each unpacked (in that order too) as
    // its bytes arrive: the unpack never waits on a layer sharing the link with the ones above
    // it, and a pull takes about as long as the longer of its download and its unpack.
    const sources = new Map<string, Promise<string | Readable>>();
    const readers: Readable[] = [];
    let previous: Promise<unknown> = Promise.resolve();
    const fetched = manifest.layers.map((layer) => {
      let following: ((reader: Readable) => void) | undefined;
      const followed = new Promise<Readable>((resolve) => (following = resolve));
      // `done` is only read by the reader once the fetch below has started.
      const done: Promise<boolean> = previous
        .then(() =>
          this.blob(ref, layer, bytes, opts, async (file, written) => {
            const reader = await growingFile(file, done, layer.digest, written);
            readers.push(reader);
            following?.(reader);
          }),
        )
        .then((cached) => {
          progress?.({ layer: layer.digest, size: layer.size, done: layer.size, cached });
          return cached;
        });
      const source = Promise.race([done.then(() => this.store.blobPath(layer.digest)), followed]);
      // A layer the unpack never reached (it failed before) is never awaited: its download's
      // failure is reported through `fetched`, not as an unhandled rejection.
      source.catch(() => undefined);
      sources.set(layer.digest, source);
      previous = done;
      return done;
    });
    const unpacked = await this.store
      .open(
        formatReference(ref),
        manifestDigest,
        (layer) => sources.get(layer.digest) ?? Promise.resolve(this.store.blobPath(layer.digest)),
      )
      .then(
        (image) => ({ image }),
        (failed: unknown) => ({ failed }),
      );
    for (const reader of readers) reader.destroy(); // the unread ones: their files close
    await Promise.all(fetched); // a failed download fails the pull, whatever the unpack made of it
    if ('image' in unpacked) return unpacked.image;
    if (readers.length > 0)
      // Bytes read while downloading are checked only at the end: a download that started over
      // under its reader (a registry ignoring a resume) fails the unpack with whatever it read.
      // The blobs are whole and verified now; an image that is truly bad fails again here.
      return this.store.open(formatReference(ref), manifestDigest);
    throw unpacked.failed;
  }

  /** The module layer of a WASM artifact; undefined for an image. */
  private wasmModule(ref: ImageReference, manifest: Manifest): Descriptor | undefined {
    try {
      return wasmLayer(manifest);
    } catch (err) {
      throw new RegistryError(`${formatReference(ref)}: ${errorMessage(err)}`);
    }
  }

  /** A WASM artifact: its module is a blob, run as it is. */
  private async blobOnly(
    ref: ImageReference,
    manifestDigest: string,
    module: Descriptor,
    bytes: PullFigures['bytes'],
    opts: PullOptions,
  ): Promise<ResolvedImage> {
    await this.blob(ref, module, bytes, opts);
    return {
      ref: formatReference(ref),
      digest: manifestDigest,
      content: { module: this.store.blobPath(module.digest) },
      config: WASM_CONFIG,
    };
  }

  private async keepWithinCap(cache: CachePolicy, justPulled: string): Promise<void> {
    if ((await this.store.blobBytes()) <= cache.maxBytes) return;
    const inUse = await cache.inUse();
    inUse.add(justPulled);
    const { removed, freedBytes } = await this.store.prune(cache.maxBytes, inUse);
    this.logger.info({ removed, freedBytes }, 'image cache over its cap: least recently used images pruned');
  }

  /** The manifest's digest, fetched unless the store has it (by digest). */
  private async manifest(
    ref: ImageReference,
    bytes: PullFigures['bytes'],
    identity: RegistryIdentity | undefined,
  ): Promise<string> {
    if (ref.digest && (await this.store.hasBlob(ref.digest))) {
      bytes.cache += (await this.store.blobSize(ref.digest)) ?? 0;
      return ref.digest;
    }
    const m = await this.client.as(identity).manifest(ref);
    if (!MANIFEST_MEDIA.includes(m.mediaType as (typeof MANIFEST_MEDIA)[number]))
      throw new RegistryError(
        `${formatReference(ref)} is a ${m.mediaType || 'document of no media type'}, not an image manifest`,
      );
    await this.store.putBlob(m.body, m.mediaType);
    bytes.origin += m.body.length;
    return m.digest;
  }

  /** One blob into the store: from the cache, or fetched once for every caller; true if cached. */
  private async blob(
    ref: ImageReference,
    desc: BlobDescriptor,
    bytes: PullFigures['bytes'],
    opts: PullOptions,
    reading?: Reading,
  ): Promise<boolean> {
    const joined = this.blobs.get(desc.digest);
    // A job's pull joining a prefetch of the same blob lifts the prefetch's bandwidth cap.
    if (joined && !opts.background) this.urgent.add(desc.digest);
    const fetching =
      joined ??
      this.fetchBlob(ref, desc, opts, reading).finally(() => {
        this.blobs.delete(desc.digest);
        this.urgent.delete(desc.digest);
      });
    if (!joined) this.blobs.set(desc.digest, fetching);
    const got = await fetching;
    // A pull that joined another's download cost the registry nothing more: it counts as cached.
    if (joined) bytes.cache += desc.size;
    else for (const k of ['origin', 'peers', 'cache'] as const) bytes[k] += got[k];
    return joined !== undefined || got.cache > 0;
  }

  /** `reading` is told of the file the blob is fetched into, and opens it to follow it. */
  private async fetchBlob(
    ref: ImageReference,
    desc: BlobDescriptor,
    opts: PullOptions,
    reading?: Reading,
  ): Promise<PullFigures['bytes']> {
    const cached = { origin: 0, peers: 0, cache: desc.size };
    if (await this.store.hasBlob(desc.digest)) return cached;
    const { background, progress } = opts;
    // A job's pull waiting for this blob makes it urgent: a paced prefetch of it goes on unpaced,
    // also one held because that very pull runs (a job waiting on a paused prefetch would never end).
    const urgent = () => this.urgent.has(desc.digest);
    const pace = background ? (n: number) => background.take(n, urgent) : undefined;
    // Another boxcar process on this node may be fetching it: one download, then a cache hit.
    return withLock(
      this.store.lockPath(`blob-${desc.digest.slice(7, 23)}`),
      async () => {
        if (await this.store.hasBlob(desc.digest)) return cached;
        const scratch = await this.store.scratchDir();
        let stored = false;
        try {
          const file = path.join(scratch, 'blob');
          await writeFile(file, '', { mode: 0o600 });
          let written = 0;
          await reading?.(file, () => written);
          const got = await this.fetcher.fetch(ref, desc, file, {
            available: (n) => {
              written = n;
              progress?.({ layer: desc.digest, size: desc.size, done: n, cached: false });
            },
            pace,
            identity: opts.identity,
          });
          await this.store.putVerifiedBlob(file, desc.digest);
          stored = true;
          this.logger.debug({ digest: desc.digest, size: desc.size, ...got }, 'blob pulled');
          return { ...got, cache: 0 };
        } finally {
          await this.fetcher.settled?.(desc, stored);
          await rm(scratch, { recursive: true, force: true });
        }
      },
      { staleMs: 10 * 60_000, waitMs: 30 * 60_000 },
    );
  }
}

/** The manifest digests of the images queued and running jobs were pinned to. */
export async function imagesInUse(store: Pick<Store, 'listJobs'>): Promise<Set<string>> {
  const live = await store.listJobs({ states: ['queued', 'starting', 'running'], limit: 1_000_000 });
  const out = new Set<string>();
  for (const j of live) {
    const digest = /@(sha256:[0-9a-f]{64})$/.exec(j.spec.image ?? '')?.[1];
    if (digest) out.add(digest);
  }
  return out;
}
