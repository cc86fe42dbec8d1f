/**
 * The executor's connection to a cluster: the client library's API objects from a kubeconfig
 * (a file, or the Pod's in-cluster credentials when none is given), and `call`, through which
 * every request goes: a 429 is retried after the server's Retry-After, and a failure carries
 * what was being done and the API server's own message.
 */

import { ApiException, CoreV1Api, KubeConfig, NodeV1Api } from '@kubernetes/client-node';
import { sleep } from '../../lib/exec.js';
import type { Logger } from '../../observability/logger.js';

/** Attempts of one request while the API server answers 429. */
const THROTTLED_ATTEMPTS = 6;
/** When a 429 names no Retry-After (the API server's own default is 1 s). */
const DEFAULT_RETRY_AFTER_S = 1;
const MAX_RETRY_AFTER_S = 60;

export class ClusterError extends Error {
  constructor(
    message: string,
    /** The HTTP status the API server answered; 0 when it could not be reached. */
    readonly code: number,
    /** The API server's own message (a Status's `message`), as it wrote it. */
    readonly serverMessage: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'ClusterError';
  }
}

export class KubeCluster {
  readonly core: CoreV1Api;
  readonly node: NodeV1Api;

  constructor(
    readonly config: KubeConfig,
    private readonly logger: Logger,
  ) {
    this.core = config.makeApiClient(CoreV1Api);
    this.node = config.makeApiClient(NodeV1Api);
  }

  /** From a kubeconfig file, or the Pod's service account when `kubeconfig` is absent. */
  static load(kubeconfig: string | undefined, logger: Logger): KubeCluster {
    const kc = new KubeConfig();
    if (kubeconfig) kc.loadFromFile(kubeconfig);
    else kc.loadFromCluster();
    return new KubeCluster(kc, logger);
  }

  /** The API server's address, for messages. */
  get server(): string {
    return this.config.getCurrentCluster()?.server ?? 'no cluster';
  }

  /** One request: retried while throttled (429, after its Retry-After); a failure says `what`. */
  async call<T>(what: string, request: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await request();
      } catch (err) {
        const failure = clusterError(what, err);
        if (failure.code !== 429 || attempt === THROTTLED_ATTEMPTS) throw failure;
        const waitS = retryAfterSeconds(err);
        this.logger.warn(
          { what, retryInS: waitS, attempt },
          'the API server is throttling; retrying after its Retry-After',
        );
        await sleep(waitS * 1000);
      }
    }
  }
}

/** Retry-After in whole seconds, as the API server sends it (clamped: a wrong header never stalls a job for long). */
function retryAfterSeconds(err: unknown): number {
  const raw =
    err instanceof ApiException ? (err.headers as Record<string, string>)['retry-after'] : undefined;
  const n = Number(raw);
  return Number.isFinite(n) && n >= 0 ? Math.min(n, MAX_RETRY_AFTER_S) : DEFAULT_RETRY_AFTER_S;
}

/** The API server's Status message from a client library failure, or the failure's own. */
function clusterError(what: string, err: unknown): ClusterError {
  if (err instanceof ClusterError)
    return new ClusterError(`${what}: ${err.serverMessage}`, err.code, err.serverMessage, { cause: err });
  if (err instanceof ApiException) {
    let message = `HTTP ${err.code}`;
    try {
      const body: unknown = typeof err.body === 'string' ? JSON.parse(err.body) : err.body;
      const m = (body as { message?: unknown } | undefined)?.message;
      if (typeof m === 'string') message = m;
    } catch {
      // Not a Status (a proxy's HTML page): the HTTP code says what there is to say.
    }
    return new ClusterError(`${what}: ${message}`, err.code, message, { cause: err });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ClusterError(`${what}: ${message}`, 0, message, { cause: err });
}

/** Whether a failure is the API server's answer `code` (404 on delete, 409 on create). */
export const isStatus = (err: unknown, code: number): boolean =>
  err instanceof ClusterError && err.code === code;
