import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { StatePaths } from '../lib/state-paths.js';
import { run } from '../lib/exec.js';
import { digestHex, sha256, sha256File } from '../lib/digest.js';
import { withLock, writeFileAtomic } from '../lib/fs-util.js';
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
 * Unpacked root filesystems are kept beside it, one per manifest digest, written once, then
 * shared read-only by every job of that image. Registry pulls add blobs through `putBlob*`.
 */
export class ImageStore {
  private initialized = false;

  constructor(private readonly paths: StatePaths) {}

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
    await mkdir(this.paths.rootfs, { recursive: true });
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
    const dest = this.blobPath(digest);
    if (existsSync(dest)) await rm(file);
    else await rename(file, dest);
    return { mediaType, digest, size };
  }

  async hasBlob(digest: string): Promise<boolean> {
    return existsSync(this.blobPath(digest));
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

  /** The image's config and its unpacked root filesystem (unpacked on first use). */
  async open(ref: string, manifestDigest: string): Promise<ResolvedImage> {
    const manifest = await this.readJson<Manifest>(manifestDigest);
    const cfg = await this.readJson<OciConfigFile>(manifest.config.digest);
    const rootfsPath = await this.unpacked(manifestDigest, manifest);
    const c = cfg.config ?? {};
    const config: ImageConfig = {
      env: c.Env ?? [],
      entrypoint: c.Entrypoint ?? [],
      cmd: c.Cmd ?? [],
      workingDir: c.WorkingDir ?? '/',
    };
    return { ref: normalizeRef(ref), digest: manifestDigest, rootfsPath, config };
  }

  private async unpacked(manifestDigest: string, manifest: Manifest): Promise<string> {
    const dest = path.join(this.paths.rootfs, digestHex(manifestDigest));
    if (existsSync(dest)) return dest;
    if (manifest.layers.length !== 1) {
      // Whiteout handling across layers arrives with registry pulls; our own images have one layer.
      throw new Error(
        `image ${manifestDigest} has ${manifest.layers.length} layers; only single-layer images can be unpacked so far`,
      );
    }
    const tmp = `${dest}.${randomUUID()}.tmp`;
    await mkdir(tmp, { recursive: true });
    try {
      for (const layer of manifest.layers) {
        await run(
          'tar',
          [
            '--extract',
            '--file',
            this.blobPath(layer.digest),
            '--directory',
            tmp,
            '--numeric-owner',
            '--preserve-permissions',
          ],
          { timeoutMs: 300_000 },
        );
      }
      await rename(tmp, dest);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      if (existsSync(dest)) return dest; // another process unpacked it first
      throw err;
    }
    return dest;
  }
}
