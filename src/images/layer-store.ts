import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { digestHex, sha256 } from '../lib/digest.js';
import { withLock, writeFileAtomic } from '../lib/fs-util.js';
import { run } from '../lib/exec.js';
import { ifExists } from '../lib/errors.js';
import type { StackedLayer } from './layer-stack.js';
import { applyLayer, type UnpackLimits, type UnpackTotals } from './unpack.js';

/** A layer as a manifest names it. */
export interface LayerRef {
  digest: string;
}

/** What `layer.json` beside a layer's files records. */
interface LayerMeta {
  /** Bytes and entries of this layer and every one under it: the image's limits count them all. */
  totals: UnpackTotals;
  /** Its opaque directories, for lookups from the layers above it. */
  opaque: string[];
}

interface UnpackedLayer extends StackedLayer {
  totals: UnpackTotals;
}

/**
 * A layer's key: its digest for a bottom layer, else the digest of its parent's key and its
 * own (the OCI image-spec's ChainID, over the verified blob digests rather than the config's
 * unverified diff_ids). What a layer's directory holds depends on the layers under it (files
 * hardlinked from them are copied up, entries through their symlinks are refused), so a
 * layer is shared by every image that has it over the same layers: images built FROM one base
 * share the base's.
 */
export function chainKeys(layers: readonly LayerRef[]): string[] {
  const keys: string[] = [];
  for (const l of layers) {
    const parent = keys.at(-1);
    keys.push(parent ? digestHex(sha256(`sha256:${parent} ${l.digest}`)) : digestHex(l.digest));
  }
  return keys;
}

/**
 * Image layers unpacked once each (see unpack.ts), as overlayfs lower layers: `<key>/fs` holds
 * the layer's files and `<key>/layer.json` what the layers above it need to know. A layer is
 * built in a scratch directory, flushed to disk and moved in by rename, under a lock shared by
 * every process of the node: one in place is always whole, and never changes.
 */
export class LayerStore {
  /** Unpacks in progress in this process, joined rather than waited for through the lock. */
  private readonly unpacking = new Map<string, Promise<UnpackedLayer>>();

  constructor(
    private readonly opts: {
      dir: string;
      scratchDir: () => Promise<string>;
      lockPath: (name: string) => string;
      limits: UnpackLimits;
    },
  ) {}

  /** The layers' directories, top first (overlayfs' lowerdir order), unpacked on first use. */
  async unpacked<L extends LayerRef>(
    layers: readonly L[],
    source: (layer: L) => Promise<string | Readable>,
  ): Promise<string[]> {
    const keys = chainKeys(layers);
    const done: UnpackedLayer[] = [];
    for (const [i, layer] of layers.entries()) {
      const key = keys[i] as string;
      const joined = this.unpacking.get(key);
      const unpacking =
        joined ??
        this.layer(key, layer, [...done].reverse(), source).finally(() => this.unpacking.delete(key));
      if (!joined) this.unpacking.set(key, unpacking);
      done.push(await unpacking);
    }
    return done.map((l) => l.dir).reverse();
  }

  private async read(key: string): Promise<UnpackedLayer | undefined> {
    const text = await ifExists(readFile(path.join(this.opts.dir, key, 'layer.json'), 'utf8'));
    if (text === undefined) return undefined;
    const meta = JSON.parse(text) as LayerMeta;
    return { dir: path.join(this.opts.dir, key, 'fs'), opaque: new Set(meta.opaque), totals: meta.totals };
  }

  private async layer<L extends LayerRef>(
    key: string,
    layer: L,
    lowers: UnpackedLayer[],
    source: (layer: L) => Promise<string | Readable>,
  ): Promise<UnpackedLayer> {
    const existing = await this.read(key);
    if (existing) return existing;
    return withLock(
      this.opts.lockPath(`layer-${key.slice(0, 16)}`),
      async () => (await this.read(key)) ?? this.unpack(key, layer, lowers, source),
      // An unpack takes as long as its layer's download when it reads one in progress.
      { staleMs: 10 * 60_000, waitMs: 30 * 60_000 },
    );
  }

  private async unpack<L extends LayerRef>(
    key: string,
    layer: L,
    lowers: UnpackedLayer[],
    source: (layer: L) => Promise<string | Readable>,
  ): Promise<UnpackedLayer> {
    const scratch = await this.opts.scratchDir();
    try {
      const fs = path.join(scratch, 'fs');
      await mkdir(fs);
      await chmod(fs, 0o755); // whatever the umask: the root of every image made of it
      const totals = { ...(lowers[0]?.totals ?? { bytes: 0, entries: 0 }) };
      const { opaque } = await applyLayer(
        { dir: fs, lowers, scratch },
        await source(layer),
        layer.digest,
        this.opts.limits,
        totals,
      );
      // Whole on disk before it is in place: after a power loss a layer is there entire or not at all.
      await run('sync', ['--file-system', fs], { timeoutMs: 600_000 });
      await writeFileAtomic(path.join(scratch, 'layer.json'), JSON.stringify({ totals, opaque }));
      await mkdir(this.opts.dir, { recursive: true });
      const dest = path.join(this.opts.dir, key);
      await rename(scratch, dest).catch((err: unknown) => {
        if (!existsSync(dest)) throw err; // else another process, past a stale lock, moved it in first
      });
    } finally {
      await rm(scratch, { recursive: true, force: true }); // gone already once moved in
    }
    return (await this.read(key)) as UnpackedLayer;
  }

  /** Removes the layers whose keys are not in `live`. */
  async collect(live: ReadonlySet<string>): Promise<void> {
    if (!existsSync(this.opts.dir)) return;
    for (const key of await readdir(this.opts.dir))
      if (!live.has(key)) await rm(path.join(this.opts.dir, key), { recursive: true, force: true });
  }
}
