/**
 * Follows one Pod until a condition holds: read it, then watch from its resourceVersion. A watch
 * that ends (a timeout, a dropped connection) resumes from the last resourceVersion seen, which
 * bookmarks keep recent while nothing changes; one answered 410 Gone (that version is compacted
 * away) reads the Pod again and watches from there. No change is missed either way: a resumed
 * watch replays what happened since, and a fresh read shows where the Pod stands.
 */

import { Watch, type V1Pod } from '@kubernetes/client-node';
import { sleep } from '../../lib/exec.js';
import type { Logger } from '../../observability/logger.js';
import { isStatus, type KubeCluster } from './cluster.js';

/** Between watches that failed to connect: the API server may be restarting. */
const REWATCH_AFTER_FAILURE_MS = 500;

/** What the condition is given: the Pod as it stands, or `undefined` once it is gone (with its last state). */
export type PodCondition<T> = (pod: V1Pod | undefined, last: V1Pod | undefined) => T | undefined;

type WatchEnd<T> = { result: T } | { expired: true } | { closed: true; rv: string };

export async function watchPod<T>(
  cluster: KubeCluster,
  where: { namespace: string; name: string },
  until: PodCondition<T>,
  log: Logger,
  signal?: AbortSignal,
): Promise<T | undefined> {
  const { namespace, name } = where;
  let last: V1Pod | undefined;
  while (!signal?.aborted) {
    let pod: V1Pod | undefined;
    try {
      pod = await cluster.call(`reading pod ${namespace}/${name}`, () =>
        cluster.core.readNamespacedPod({ name, namespace }),
      );
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
    const now = until(pod, pod ?? last);
    if (now !== undefined || !pod) return now;
    last = pod;
    let rv = pod.metadata?.resourceVersion ?? '';
    for (;;) {
      if (signal?.aborted) return undefined;
      const end = await watchOnce(
        cluster,
        where,
        rv,
        (p, deleted) => {
          if (!deleted) last = p;
          return until(deleted ? undefined : p, deleted ? p : last);
        },
        signal,
        log,
      );
      if ('result' in end) return end.result;
      if ('expired' in end) {
        log.info({ pod: name, resourceVersion: rv }, 'watch expired (410 Gone); reading the pod again');
        break;
      }
      if (end.rv === rv) await sleep(REWATCH_AFTER_FAILURE_MS);
      rv = end.rv;
    }
  }
  return undefined;
}

function watchOnce<T>(
  cluster: KubeCluster,
  { namespace, name }: { namespace: string; name: string },
  from: string,
  onPod: (pod: V1Pod, deleted: boolean) => T | undefined,
  signal: AbortSignal | undefined,
  log: Logger,
): Promise<WatchEnd<T>> {
  return new Promise((resolve) => {
    let rv = from;
    let settled = false;
    let controller: AbortController | undefined;
    const finish = (end: WatchEnd<T>) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      controller?.abort();
      resolve(end);
    };
    const onAbort = () => finish({ closed: true, rv });
    signal?.addEventListener('abort', onAbort, { once: true });
    new Watch(cluster.config)
      .watch(
        `/api/v1/namespaces/${namespace}/pods`,
        { fieldSelector: `metadata.name=${name}`, resourceVersion: from, allowWatchBookmarks: true },
        (type: string, obj: { code?: number; metadata?: { resourceVersion?: string } }) => {
          if (type === 'ERROR') return finish(obj.code === 410 ? { expired: true } : { closed: true, rv });
          rv = obj.metadata?.resourceVersion ?? rv;
          if (type === 'BOOKMARK') return;
          const result = onPod(obj as V1Pod, type === 'DELETED');
          if (result !== undefined) finish({ result });
        },
        // Ended by the server, the network or us: resume from the last version seen.
        () => finish({ closed: true, rv }),
      )
      .then((c) => {
        controller = c;
        if (settled) c.abort();
      })
      .catch((err: unknown) => {
        log.warn({ pod: name, err: (err as Error).message }, 'the watch could not start; watching again');
        finish({ closed: true, rv });
      });
  });
}
