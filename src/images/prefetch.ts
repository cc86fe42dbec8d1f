import { Pace } from '../lib/pace.js';
import { errorMessage } from '../lib/errors.js';
import type { Logger } from '../observability/logger.js';
import type { Store } from '../store/store.js';
import type { ImageStore } from './image-store.js';
import type { ImagePuller } from './pull.js';
import { parseReference } from './reference.js';

export interface PrefetchOptions {
  /** How many images a node keeps warm (the seed's `prefetch_limit`). */
  limit: number;
  /** Bytes a second prefetching may take from the network. */
  bandwidth: number;
  /** How often the ranking is read again. */
  intervalMs: number;
  /** How far back jobs count towards an image's rank. */
  windowMs: number;
}

/**
 * Keeps the images jobs are about to need on this node before they ask: those of queued jobs,
 * then the most used of the recent past, ranked from the job store (every node ranks alike, and
 * with peers the registry sends each image about once). Pulls run one at a time, under a
 * bandwidth cap, and hold still while a job's own pull runs.
 */
export class Prefetcher {
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private stopped = false;
  private readonly pace: Pace;

  constructor(
    private readonly store: Pick<Store, 'popularImages'>,
    private readonly images: ImageStore,
    private readonly puller: ImagePuller,
    private readonly logger: Logger,
    private readonly opts: PrefetchOptions,
  ) {
    this.pace = new Pace(opts.bandwidth, () => puller.foreground > 0);
  }

  start(): void {
    const tick = () => {
      this.round ??= this.prefetch()
        .then(() => undefined)
        .catch((err: unknown) => this.logger.warn({ err }, 'prefetching images failed; trying again later'))
        .finally(() => (this.round = undefined));
    };
    tick();
    this.timer = setInterval(tick, this.opts.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.pace.cancel(); // the pull under way ends at its next piece
    clearInterval(this.timer);
    await this.round;
  }

  /** One round: every ranked image not on this node yet is pulled; returns those pulled. */
  async prefetch(): Promise<string[]> {
    const ranked = await this.store.popularImages(Date.now() - this.opts.windowMs, this.opts.limit);
    const pulled: string[] = [];
    for (const ref of ranked) {
      if (this.stopped) break;
      const digest = parseReference(ref).digest as string;
      if (await this.images.hasImage(digest)) continue;
      try {
        const image = await this.puller.pull(ref, { background: this.pace });
        pulled.push(ref);
        this.logger.info({ image: ref, ...image.pull }, 'image prefetched');
      } catch (err) {
        if (this.stopped) break;
        // One image gone from its registry does not stop the others.
        this.logger.warn({ image: ref, error: errorMessage(err) }, 'prefetching an image failed');
      }
    }
    return pulled;
  }
}
