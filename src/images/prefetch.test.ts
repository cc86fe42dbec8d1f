import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { JobSpec } from '../jobs/spec.js';
import { silentLogger } from '../observability/logger.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import { tempState } from '../testing/harness.js';
import { pushLayout, writeLayout } from '../testing/oci-images.js';
import { startRegistry, type TestRegistry } from '../testing/registry.js';
import { ImageStore } from './image-store.js';
import { Prefetcher, type PrefetchOptions } from './prefetch.js';
import { ImagePuller } from './pull.js';
import { RegistryClient } from './registry-client.js';

/**
 * Prefetch against a real registry (docker-registry on loopback): the images of queued jobs
 * and the most used ones are pulled before any job asks, within the bandwidth cap, and a job's
 * own pull of an image being prefetched is not held to that cap.
 */
describe('prefetching images', () => {
  let registry: TestRegistry;
  let work: string;
  let n = 0;

  before(async () => {
    registry = await startRegistry();
    work = await mkdtemp(path.join(os.tmpdir(), 'bx-prefetch-'));
  });
  after(async () => {
    await registry?.stop();
    await rm(work, { recursive: true, force: true });
  });

  /** Pushes an image of one layer of `bytes` random bytes; returns its pinned reference. */
  const push = async (bytes: number): Promise<string> => {
    const dir = path.join(work, `image-${n}`);
    const { manifestDigest } = await writeLayout(
      dir,
      'v',
      [[{ name: 'data.bin', content: randomBytes(bytes) }]],
      {
        compression: 'none',
      },
    );
    const repo = `${registry.host}/team/pre-${n++}`;
    await pushLayout(dir, 'v', `${repo}:1`);
    return `${repo}:1@${manifestDigest}`;
  };

  const node = async (opts: Partial<PrefetchOptions> = {}) => {
    const state = await tempState();
    const store = new SqliteStore(state.db);
    const images = new ImageStore(state);
    const client = new RegistryClient({ insecure: [], credentials: () => undefined });
    const puller = new ImagePuller(images, client, silentLogger());
    const prefetcher = new Prefetcher(store, images, puller, silentLogger(), {
      limit: 100,
      bandwidth: 1e9,
      intervalMs: 60_000,
      windowMs: 3_600_000,
      ...opts,
    });
    let jobs = 0;
    const job = async (image: string, queued: boolean) => {
      const j = await store.createJob({
        id: `job-${jobs++}`,
        tenant: 't',
        spec: JobSpec.parse({ command: ['true'], image }),
        decision: { trust: 'trusted', runtime: 'runc', fallback: null, reasons: ['test'] },
        origin: { via: 'api', actor: 'token:test' },
        owner: null,
      });
      if (!queued) await store.requestCancel(j.id, 'test');
    };
    const cleanup = async () => {
      await prefetcher.stop();
      await store.close();
      await state.cleanup();
    };
    return { images, puller, prefetcher, job, cleanup };
  };

  test('the images of queued jobs, then the most used, are pulled once, up to the limit', async () => {
    const [used, queued, rare] = [await push(4096), await push(4096), await push(4096)];
    const x = await node({ limit: 2 });
    try {
      for (let i = 0; i < 3; i++) await x.job(used, false);
      await x.job(queued, true);
      await x.job(rare, false);
      await x.job('boxcar/base:latest', true); // not a registry image: nothing to prefetch
      assert.deepEqual(await x.prefetcher.prefetch(), [queued, used]);
      assert.deepEqual(await x.prefetcher.prefetch(), []);
      for (const ref of [queued, used]) assert.ok(await x.images.hasImage(ref.split('@')[1] as string));
      assert.equal(await x.images.hasImage(rare.split('@')[1] as string), false);
    } finally {
      await x.cleanup();
    }
  });

  test('prefetch keeps to its bandwidth cap; a job’s pull of the same image does not', async () => {
    const big = await push(3 * 2 ** 20);
    const capped = await node({ bandwidth: 2 ** 20 });
    try {
      await capped.job(big, true);
      const t0 = Date.now();
      await capped.prefetcher.prefetch();
      const ms = Date.now() - t0;
      // A second's worth goes at once, the other 2 MiB at 1 MiB a second.
      assert.ok(ms >= 1800, `3 MiB at 1 MiB/s took ${ms} ms`);
    } finally {
      await capped.cleanup();
    }

    const other = await push(3 * 2 ** 20);
    const slow = await node({ bandwidth: 256 * 1024 });
    try {
      await slow.job(other, true);
      const prefetching = slow.prefetcher.prefetch();
      await new Promise((r) => setTimeout(r, 300));
      const t0 = Date.now();
      const image = await slow.puller.pull(other);
      const ms = Date.now() - t0;
      assert.ok(ms < 3000, `the job's pull waited ${ms} ms for a prefetch capped at 256 KiB/s`);
      assert.equal(image.digest, other.split('@')[1]);
      await prefetching;
    } finally {
      await slow.cleanup();
    }
  });
});
