import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { StatePaths } from '../lib/state-paths.js';
import { digestHex, sha256, sha256File } from '../lib/digest.js';
import { ifExists } from '../lib/errors.js';
import { withLock, writeFileAtomic } from '../lib/fs-util.js';
import { DEFAULT_UNPACK_LIMITS, type UnpackLimits } from './unpack.js';
import { chainKeys, LayerStore } from './layer-store.js';
import type { ImageConfig, ResolvedImage } from './image.js';

export const MEDIA = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerTar: 'application/vnd.oci.image.layer.v1.tar',
  layerTarGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  wasm: 'application/wasm',
} as const;

const REF_ANNOTATION = 'org.opencontainers.image.ref.name';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface Manifest {
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

interface OciConfigFile {
  architecture: string;
  os: string;
  config?: { Env?: string[]; Entrypoint?: string[]; Cmd?: string[]; WorkingDir?: string };
  rootfs: { type: 'layers'; diff_ids: string[] };
}

interface Index {
  schemaVersion: 2;
  manifests: Descriptor[];
}

/** `busybox` → `busybox:latest`; a ref with a tag or digest is kept as it is. */
export function normalizeRef(ref: string): string {
  const lastSlash = ref.lastIndexOf('/');
  return ref.includes('@') || ref.slice(lastSlash + 1).includes(':') ? ref : `${ref}:latest`;
}

/**
 * Content-addressed image storage laid out as an OCI image layout (so skopeo and umoci can read
 * it): blobs by digest, `index.json` naming manifests by `org.opencontainers.image.ref.name`.
 * Unpacked layers are kept beside it (see layer-store.ts), each written once, then shared
 * read-only by every job and image that has it. Registry pulls add blobs through `putBlob*`.
 */
export class ImageStore {
  private initialized = false;
  private readonly layers: LayerStore;

  constructor(
    private readonly paths: StatePaths,
    unpackLimits: UnpackLimits = DEFAULT_UNPACK_LIMITS,
  ) {
    this.layers = new LayerStore({
      dir: paths.layers,
      scratchDir: () => this.scratchDir(),
      lockPath: (name) => this.lockPath(name),
      limits: unpackLimits,
    });
  }

  private get indexFile() {
    return path.join(this.paths.images, 'index.json');
  }

  blobPath(digest: string): string {
    return path.join(this.paths.images, 'blobs', 'sha256', digestHex(digest));
  }

  /** A file of Boxcar's own beside the layout (locks, build stamps); not part of the OCI layout. */
  metaPath(name: string): string {
    return path.join(this.paths.images, name);
  }

  lockPath(name: string): string {
    return this.metaPath(`${name}.lock`);
  }

  /** Creates the layout once per store object (every resolve calls this). */
  async init(): Promise<void> {
    if (this.initialized) return;
    await mkdir(path.join(this.paths.images, 'blobs', 'sha256'), { recursive: true });
    const layout = path.join(this.paths.images, 'oci-layout');
    if (!existsSync(layout)) await writeFileAtomic(layout, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    if (!existsSync(this.indexFile))
      await writeFileAtomic(this.indexFile, JSON.stringify({ schemaVersion: 2, manifests: [] }));
    this.initialized = true;
  }

  /** A scratch directory on the same filesystem as the blobs, so finished files move in by rename. */
  async scratchDir(): Promise<string> {
    const dir = path.join(this.paths.images, 'tmp', randomUUID());
    await mkdir(dir, { recursive: true });
    return dir;
  }

  async putBlob(data: string | Buffer, mediaType: string): Promise<Descriptor> {
    const digest = sha256(data);
    const file = this.blobPath(digest);
    if (!existsSync(file)) await writeFileAtomic(file, data);
    return { mediaType, digest, size: Buffer.byteLength(data) };
  }

  /** Moves a finished file into the store under its digest. */
  async putBlobFile(file: string, mediaType: string): Promise<Descriptor> {
    const digest = await sha256File(file);
    const size = (await stat(file)).size;
    await this.putVerifiedBlob(file, digest);
    return { mediaType, digest, size };
  }

  /**
   * Moves a file whose digest the caller checked into the store: flushed to disk first, so a
   * blob under its digest is whole even after a power loss; then in by rename, all or nothing.
   */
  async putVerifiedBlob(file: string, digest: string): Promise<void> {
    const dest = this.blobPath(digest);
    if (existsSync(dest)) return rm(file);
    const fh = await open(file, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(file, dest);
  }

  async hasBlob(digest: string): Promise<boolean> {
    return existsSync(this.blobPath(digest));
  }

  async blobSize(digest: string): Promise<number | undefined> {
    return (await ifExists(stat(this.blobPath(digest))))?.size;
  }

  async readJson<T>(digest: string): Promise<T> {
    const data = await readFile(this.blobPath(digest));
    if (sha256(data) !== digest)
      throw new Error(`blob ${digest} is corrupt (its content hashes differently); remove it and pull again`);
    return JSON.parse(data.toString('utf8')) as T;
  }

  private async readIndex(): Promise<Index> {
    return JSON.parse(await readFile(this.indexFile, 'utf8')) as Index;
  }

  async list(): Promise<Array<{ ref: string; manifest: Descriptor }>> {
    await this.init();
    return (await this.readIndex()).manifests.map((m) => ({
      ref: m.annotations?.[REF_ANNOTATION] ?? '',
      manifest: m,
    }));
  }

  async lookup(ref: string): Promise<Descriptor | undefined> {
    const name = normalizeRef(ref);
    return (await this.list()).find((e) => e.ref === name)?.manifest;
  }

  /** Points `ref` at a manifest (replacing what it named before). */
  async tag(ref: string, manifest: Descriptor, annotations: Record<string, string> = {}): Promise<void> {
    await this.init();
    const name = normalizeRef(ref);
    await withLock(this.lockPath('index'), async () => {
      const index = await this.readIndex();
      index.manifests = index.manifests.filter((m) => m.annotations?.[REF_ANNOTATION] !== name);
      index.manifests.push({ ...manifest, annotations: { ...annotations, [REF_ANNOTATION]: name } });
      await writeFileAtomic(this.indexFile, JSON.stringify(index, null, 2));
    });
  }

  /**
   * The image's config and its unpacked layers (unpacked on first use, each layer read from
   * `layerSource` when given: a download still in progress).
   */
  async open(
    ref: string,
    manifestDigest: string,
    layerSource?: (layer: Descriptor) => Promise<string | Readable>,
  ): Promise<ResolvedImage> {
    const manifest = await this.readJson<Manifest>(manifestDigest);
    const cfg = await this.readJson<OciConfigFile>(manifest.config.digest);
    await this.markUsed(manifestDigest);
    const layers = await this.layers.unpacked(
      manifest.layers,
      async (layer) => (await layerSource?.(layer)) ?? this.blobPath(layer.digest),
    );
    const c = cfg.config ?? {};
    const config: ImageConfig = {
      env: c.Env ?? [],
      entrypoint: c.Entrypoint ?? [],
      cmd: c.Cmd ?? [],
      workingDir: c.WorkingDir ?? '/',
    };
    return { ref: normalizeRef(ref), digest: manifestDigest, content: { layers }, config };
  }

  /** Notes that an image was used now: the least recently used go first when the cache is full. */
  private async markUsed(manifestDigest: string): Promise<void> {
    const mark = path.join(this.paths.images, 'used', digestHex(manifestDigest));
    const now = new Date();
    await utimes(mark, now, now).catch(async () => {
      await mkdir(path.dirname(mark), { recursive: true });
      await writeFile(mark, '');
    });
  }

  /** Every tagged image with its size (its blobs) and when a job last used it. */
  async entries(): Promise<ImageEntry[]> {
    const out: ImageEntry[] = [];
    for (const { ref, manifest } of await this.list()) {
      const blobs = await this.blobsOf(manifest.digest);
      let bytes = 0;
      for (const d of blobs) bytes += (await this.blobSize(d)) ?? 0;
      const used = await ifExists(stat(path.join(this.paths.images, 'used', digestHex(manifest.digest))));
      out.push({ ref, digest: manifest.digest, bytes, lastUsed: used?.mtimeMs ?? 0 });
    }
    return out;
  }

  /** A manifest's own blob and those it names (config, layers); just itself if it is gone. */
  /** Whether every blob of an image (its manifest, config and layers) is here. */
  async hasImage(manifestDigest: string): Promise<boolean> {
    const blobs = await this.blobsOf(manifestDigest);
    for (const d of blobs) if (!(await this.hasBlob(d))) return false;
    return blobs.length > 0;
  }

  private async blobsOf(manifestDigest: string): Promise<string[]> {
    if (!(await this.hasBlob(manifestDigest))) return [];
    const m = await this.storedManifest(manifestDigest);
    return [
      manifestDigest,
      ...(m?.config ? [m.config.digest] : []),
      ...(m?.layers ?? []).map((l) => l.digest),
    ];
  }

  /** A stored manifest; undefined when it is gone or damaged (what it names is then no one's). */
  private async storedManifest(digest: string): Promise<Partial<Manifest> | undefined> {
    if (!(await this.hasBlob(digest))) return undefined;
    return this.readJson<Partial<Manifest>>(digest).catch(() => undefined);
  }

  /** Forgets a tag; its blobs go at the next `collect` unless another image or a job holds them. */
  async untag(ref: string): Promise<boolean> {
    await this.init();
    const name = normalizeRef(ref);
    return withLock(this.lockPath('index'), async () => {
      const index = await this.readIndex();
      const kept = index.manifests.filter((m) => m.annotations?.[REF_ANNOTATION] !== name);
      if (kept.length === index.manifests.length) return false;
      await writeFileAtomic(this.indexFile, JSON.stringify({ ...index, manifests: kept }, null, 2));
      return true;
    });
  }

  /**
   * Removes blobs and unpacked layers that no tagged image and no image in `inUse` (manifest
   * digests of queued and running jobs) holds; returns the bytes freed.
   */
  async collect(inUse: ReadonlySet<string>): Promise<number> {
    await this.init();
    const live = new Set<string>();
    const liveLayers = new Set<string>();
    const manifests = new Set([...(await this.list()).map((e) => e.manifest.digest), ...inUse]);
    for (const m of manifests) {
      for (const d of await this.blobsOf(m)) live.add(d);
      for (const key of chainKeys((await this.storedManifest(m))?.layers ?? [])) liveLayers.add(key);
    }
    let freed = 0;
    const dir = path.join(this.paths.images, 'blobs', 'sha256');
    for (const hex of await readdir(dir)) {
      if (live.has(`sha256:${hex}`)) continue;
      freed += (await ifExists(stat(path.join(dir, hex))))?.size ?? 0;
      await rm(path.join(dir, hex), { force: true });
    }
    await this.layers.collect(liveLayers);
    const used = path.join(this.paths.images, 'used');
    for (const hex of (await ifExists(readdir(used))) ?? [])
      if (!manifests.has(`sha256:${hex}`)) await rm(path.join(used, hex), { force: true });
    return freed;
  }

  /**
   * Keeps the pulled images within `maxBytes`: the least recently used that no job holds are
   * forgotten first (Boxcar's own images are never), then their content is collected.
   */
  async prune(
    maxBytes: number,
    inUse: ReadonlySet<string>,
  ): Promise<{ removed: string[]; freedBytes: number }> {
    const entries = (await this.entries()).sort((a, b) => a.lastUsed - b.lastUsed);
    let total = await this.blobBytes();
    const removed: string[] = [];
    for (const e of entries) {
      if (total <= maxBytes) break;
      if (inUse.has(e.digest) || e.ref.startsWith('boxcar/')) continue;
      await this.untag(e.ref);
      removed.push(e.ref);
      total -= e.bytes;
    }
    return { removed, freedBytes: removed.length ? await this.collect(inUse) : 0 };
  }

  /** Bytes all blobs take. */
  async blobBytes(): Promise<number> {
    return (await this.blobs()).reduce((n, b) => n + b.size, 0);
  }

  /** Every blob in the store, with its size. */
  async blobs(): Promise<Array<{ digest: string; size: number }>> {
    await this.init();
    const dir = path.join(this.paths.images, 'blobs', 'sha256');
    const out: Array<{ digest: string; size: number }> = [];
    for (const hex of await readdir(dir)) {
      const st = await ifExists(stat(path.join(dir, hex)));
      if (st) out.push({ digest: `sha256:${hex}`, size: st.size });
    }
    return out;
  }
}

export interface ImageEntry {
  ref: string;
  digest: string;
  /** Its blobs (manifest, config, layers), shared ones counted in each image. */
  bytes: number;
  /** When a job last used it (ms since the epoch; 0: never). */
  lastUsed: number;
}
