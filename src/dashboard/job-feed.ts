import type { Boxcar } from '../boxcar.js';
import { isTerminal, type JobState } from '../jobs/states.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { JobRecord } from '../store/store.js';

/** How often the feed looks at the store: state changes of starts are not announced. */
const POLL_MS = 1000;
/** The newest jobs watched for arrivals (jobs queued by any node or API call). */
const NEWEST = 100;
const LIVE_STATES: JobState[] = ['queued', 'starting', 'running'];
const LIVE_MAX = 2000;

const signature = (j: JobRecord) => `${j.state}|${j.runtime}|${j.startedAt}|${j.finishedAt}|${j.waitReason}`;

/**
 * Job changes for the dashboards' live lists: one poll of the store for every open page (not
 * one per page), woken early by the scheduler's announcements, and running only while someone
 * listens. A listener gets every job that appeared or changed since the last look.
 */
export class JobFeed {
  private readonly listeners = new Set<(jobs: JobRecord[]) => void>();
  private seen = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private unwatch: (() => void) | undefined;
  private announced = new Set<string>();
  private primed = false;
  private polling: Promise<void> | undefined;

  constructor(
    private readonly box: Boxcar,
    private readonly scheduler: Scheduler,
  ) {}

  subscribe(listener: (jobs: JobRecord[]) => void): () => void {
    this.listeners.add(listener);
    if (this.listeners.size === 1) this.start();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.stop();
    };
  }

  private start(): void {
    this.seen = new Map();
    this.primed = false;
    this.unwatch = this.scheduler.onJobChange((id) => {
      this.announced.add(id);
      this.schedule(20);
    });
    this.schedule(0);
  }

  private stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.unwatch?.();
    this.unwatch = undefined;
  }

  private schedule(ms: number): void {
    if (!this.unwatch) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.polling ??= this.poll()
        .catch((err: unknown) => this.box.logger.error({ err }, 'dashboard job feed: reading jobs failed'))
        .finally(() => {
          this.polling = undefined;
          this.schedule(POLL_MS);
        });
    }, ms);
  }

  private async poll(): Promise<void> {
    const first = !this.primed;
    this.primed = true;
    const [live, newest] = await Promise.all([
      this.box.store.listJobs({ states: LIVE_STATES, limit: LIVE_MAX }),
      this.box.store.listJobs({ limit: NEWEST }),
    ]);
    const now = new Map<string, JobRecord>();
    for (const j of [...live, ...newest]) now.set(j.id, j);
    // Jobs that were live and left the live list, and jobs announced: read them as they are now.
    const gone = [...this.seen].filter(
      ([id, sig]) => !now.has(id) && !isTerminal(sig.split('|')[0] as JobState),
    );
    const ids = new Set([...gone.map(([id]) => id), ...this.announced].filter((id) => !now.has(id)));
    this.announced.clear();
    for (const id of ids) {
      const j = await this.box.store.getJob(id);
      if (j) now.set(id, j);
    }
    const changed: JobRecord[] = [];
    const seen = new Map<string, string>();
    for (const [id, j] of now) {
      const sig = signature(j);
      seen.set(id, sig);
      if (!first && this.seen.get(id) !== sig) changed.push(j);
    }
    this.seen = seen;
    if (changed.length) for (const l of this.listeners) l(changed);
  }
}
