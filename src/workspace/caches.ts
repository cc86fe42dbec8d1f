import { createHash } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { open, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode, ifExists } from '../lib/errors.js';
import { writeFileAtomic } from '../lib/fs-util.js';
import type { UnpackLimits } from '../lib/tar-read.js';
import type { JobCache } from '../jobs/spec.js';
import type { Trust } from '../jobs/decision.js';
import type { Logger } from '../observability/logger.js';
import { BlobStore } from './blob-store.js';
import { packWorkspace } from './collect.js';
import { extractInto } from './extract.js';

/**
 * Trusted and untrusted jobs never share a cache: an untrusted job (a fork's pull request)
 * reads and writes only the untrusted namespace, so nothing it writes is ever restored into a
 * trusted job (the cache poisoning of GitHub Actions' shared caches).
 */
export type CacheNamespace = 'trusted' | 'untrusted';
export const cacheNamespace = (trust: Trust): CacheNamespace =>
  trust === 'trusted' ? 'trusted' : 'untrusted';

export interface CacheScope {
  tenant: string;
  repository: string;
  namespace: CacheNamespace;
}

interface CacheEntry {
  tenant: string;
  repository: string;
  key: string;
  digest: string;
  bytes: number;
  savedAt: number;
  usedAt: number;
}

/**
 * Dependency caches per tenant, repository and key, in two namespaces (see CacheNamespace),
 * content-addressed, evicted least recently used first past `maxBytes` in all.
 */
export class Caches {
  private readonly blobs: Record<CacheNamespace, BlobStore>;

  constructor(
    private readonly dir: string,
    private readonly maxBytes: number,
    private readonly logger: Logger,
  ) {
    this.blobs = {
      trusted: new BlobStore(path.join(dir, 'trusted', 'blobs')),
      untrusted: new BlobStore(path.join(dir, 'untrusted', 'blobs')),
    };
  }

  /**
   * The cache's key: its name, or (`key.files`) a digest of those files as the checkout has
   * them (read without following a symlink; files that are not there count as missing, and if
   * none is there the key is `default`, as in GitLab CI).
   */
  async key(workspace: string, cache: JobCache): Promise<string> {
    if (typeof cache.key === 'string') return cache.key;
    const hash = createHash('sha256');
    let found = 0;
    for (const rel of cache.key.files) {
      hash.update(`${rel}\0`);
      const fh = await ifExists(
        open(path.join(workspace, rel), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK),
      ).catch((err: unknown) => {
        if (errnoCode(err) === 'ELOOP') return undefined; // a symlink: not a file of the checkout
        throw err;
      });
      if (!fh) continue;
      try {
        if (!(await fh.stat()).isFile()) continue;
        for await (const chunk of createReadStream('', { fd: fh.fd, autoClose: false }))
          hash.update(chunk as Buffer);
        found++;
      } finally {
        await fh.close();
      }
    }
    const name = found ? hash.digest('hex').slice(0, 20) : 'default';
    return cache.key.prefix ? `${cache.key.prefix}-${name}` : name;
  }

  private indexFile(scope: CacheScope, key: string): string {
    const id = createHash('sha256')
      .update(`${scope.tenant}\0${scope.repository}\0${key}`)
      .digest('hex')
      .slice(0, 32);
    return path.join(this.dir, scope.namespace, 'index', `${id}.json`);
  }

  private async entry(file: string): Promise<CacheEntry | undefined> {
    const text = await ifExists(readFile(file, 'utf8'));
    return text === undefined ? undefined : (JSON.parse(text) as CacheEntry);
  }

  /** Restores the cache into the workspace; a miss leaves it as it was. */
  async restore(
    scope: CacheScope,
    key: string,
    workspace: string,
    limits: UnpackLimits,
  ): Promise<{ hit: boolean; bytes: number }> {
    const file = this.indexFile(scope, key);
    const e = await this.entry(file);
    if (!e) return { hit: false, bytes: 0 };
    const blob = this.blobs[scope.namespace].path(e.digest);
    try {
      const { bytes } = await extractInto(workspace, blob, `cache ${key}`, limits);
      await writeFileAtomic(file, JSON.stringify({ ...e, usedAt: Date.now() }));
      return { hit: true, bytes };
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
      return { hit: false, bytes: 0 }; // evicted between the index and the read
    }
  }

  /** Saves the workspace's `paths` as the cache under `key`, then evicts past the size cap. */
  async save(
    scope: CacheScope,
    key: string,
    workspace: string,
    paths: readonly string[],
    maxBytes: number,
  ): Promise<{ bytes: number }> {
    const { stream, done } = packWorkspace(
      workspace,
      paths,
      Math.min(maxBytes, this.maxBytes),
      `cache ${key}`,
    );
    const [{ digest }, collected] = await Promise.all([this.blobs[scope.namespace].put(stream), done]);
    const now = Date.now();
    const e: CacheEntry = {
      tenant: scope.tenant,
      repository: scope.repository,
      key,
      digest,
      bytes: collected.bytes,
      savedAt: now,
      usedAt: now,
    };
    await writeFileAtomic(this.indexFile(scope, key), JSON.stringify(e));
    await this.evict();
    return { bytes: collected.bytes };
  }

  /** Least recently used caches go until all of them fit in `maxBytes`; blobs nobody names go with them. */
  async evict(): Promise<void> {
    const all: Array<{ ns: CacheNamespace; file: string; e: CacheEntry }> = [];
    for (const ns of ['trusted', 'untrusted'] as const) {
      const dir = path.join(this.dir, ns, 'index');
      for (const name of (await ifExists(readdir(dir))) ?? []) {
        if (!name.endsWith('.json')) continue;
        const e = await this.entry(path.join(dir, name));
        if (e) all.push({ ns, file: path.join(dir, name), e });
      }
    }
    let total = all.reduce((n, c) => n + c.e.bytes, 0);
    all.sort((a, b) => a.e.usedAt - b.e.usedAt);
    const evicted: typeof all = [];
    for (const c of all) {
      if (total <= this.maxBytes) break;
      await rm(c.file, { force: true });
      total -= c.e.bytes;
      evicted.push(c);
      this.logger.info(
        { tenant: c.e.tenant, repository: c.e.repository, key: c.e.key, bytes: c.e.bytes },
        'cache evicted',
      );
    }
    const named = new Set(all.filter((c) => !evicted.includes(c)).map((c) => `${c.ns}:${c.e.digest}`));
    for (const c of evicted)
      if (!named.has(`${c.ns}:${c.e.digest}`)) await this.blobs[c.ns].remove(c.e.digest);
  }
}
