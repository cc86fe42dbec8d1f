import { nodeStatus } from '../api/server.js';
import type { Boxcar } from '../boxcar.js';
import { RUNTIME_NAMES } from '../jobs/spec.js';
import { RuntimeHealthBook } from '../policy/health.js';
import type { Scheduler } from '../scheduler/scheduler.js';

export type OperatorStatus = Awaited<ReturnType<typeof operatorStatus>>;

/**
 * What only an operator sees on the fleet page: this node (as `GET /v1/node`), each runtime's
 * fallback breaker as the router would judge it now (from the recorded starts, as the
 * `boxcar_breaker_state` metric does), and the queue per runtime across every node.
 */
export async function operatorStatus(box: Boxcar, scheduler: Scheduler) {
  const book = await new RuntimeHealthBook(box.policy, (r) => box.runtimes.fingerprint(r)).loadHistory(
    box.store,
  );
  const [node, views, queued] = await Promise.all([
    nodeStatus(box, scheduler),
    book.views(Date.now()),
    box.store.queuedByRuntime(),
  ]);
  return {
    node,
    runtimes: RUNTIME_NAMES.map((runtime) => {
      const v = views(runtime);
      return {
        runtime,
        queued: queued.get(runtime) ?? 0,
        breaker: v.breaker,
        breakerReason: v.breakerReason,
        failureRate: v.health.failureRate,
        samples: v.health.samples,
      };
    }),
  };
}
