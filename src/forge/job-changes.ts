import type { Logger } from '../observability/logger.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { Store } from '../store/store.js';
import type { ForgeReporter } from './reporter.js';

/**
 * Feeds the reporter every job change this node announces (queued by a webhook, ended,
 * cancelled), read back from the store so the status says what was written. Returns how to stop.
 */
export function reportJobChanges(
  scheduler: Pick<Scheduler, 'onJobChange'>,
  store: Store,
  reporter: ForgeReporter,
  logger: Logger,
): () => void {
  return scheduler.onJobChange((id) => {
    store
      .getJob(id)
      .then((job) => job && reporter.jobChanged(job))
      .catch((err: unknown) =>
        logger.error({ err, job_id: id }, 'reading a changed job for its forge status failed'),
      );
  });
}
