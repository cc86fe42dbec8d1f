/**
 * A running Pod's usage from the resource metrics API (metrics.k8s.io, which metrics-server
 * serves): sampled while the job runs, its highest memory working set kept as the peak, its CPU
 * integrated from the sampled rate. The API's own window (metrics-server scrapes every 15 s by
 * default) makes these figures approximate; a cluster without the API gives none (zeros, said
 * once in the log), as does a job shorter than the first scrape.
 */

import { CustomObjectsApi } from '@kubernetes/client-node';
import type { Logger } from '../../observability/logger.js';
import type { TaskStats } from '../../runtimes/runtime.js';
import { bytesOf, quantityThousandths } from '../quantity.js';
import { isStatus, type ClusterError, type KubeCluster } from './cluster.js';
import { CONTAINER } from './pod.js';

interface PodMetrics {
  containers?: { name: string; usage?: { cpu?: string; memory?: string } }[];
}

export class PodUsage {
  private memoryBytes = 0;
  private peakMemoryBytes = 0;
  private cpuUsageNs = 0;
  private timer: NodeJS.Timeout | undefined;
  private sampling: Promise<void> = Promise.resolve();
  private readonly api: CustomObjectsApi;

  constructor(
    private readonly cluster: KubeCluster,
    private readonly where: { namespace: string; name: string },
    private readonly everyMs: number,
    private readonly log: Logger,
    /** The cluster serves no metrics API: the driver says so once. */
    private readonly noApi: () => void,
  ) {
    this.api = cluster.config.makeApiClient(CustomObjectsApi);
  }

  start(): void {
    this.timer ??= setInterval(() => {
      this.sampling = this.sampling.then(() => this.sample());
    }, this.everyMs);
  }

  /** Stops sampling; the figures so far. */
  async stop(): Promise<TaskStats> {
    clearInterval(this.timer);
    await this.sampling;
    return this.figures();
  }

  figures(): TaskStats {
    const { memoryBytes, peakMemoryBytes, cpuUsageNs } = this;
    return { memoryBytes, peakMemoryBytes, cpuUsageNs: Math.round(cpuUsageNs), pids: 0 };
  }

  private async sample(): Promise<void> {
    const { namespace, name } = this.where;
    try {
      const m = (await this.cluster.call(`reading the usage of pod ${namespace}/${name}`, () =>
        this.api.getNamespacedCustomObject({
          group: 'metrics.k8s.io',
          version: 'v1beta1',
          namespace,
          plural: 'pods',
          name,
        }),
      )) as PodMetrics;
      const usage = m.containers?.find((c) => c.name === CONTAINER)?.usage;
      if (!usage) return;
      if (usage.memory !== undefined) {
        this.memoryBytes = bytesOf(usage.memory);
        this.peakMemoryBytes = Math.max(this.peakMemoryBytes, this.memoryBytes);
      }
      // A rate in cores over the metrics' window, held for this sampling period.
      if (usage.cpu !== undefined)
        this.cpuUsageNs += (quantityThousandths(usage.cpu) / 1000) * this.everyMs * 1e6;
    } catch (err) {
      if (!isStatus(err, 404)) {
        this.log.warn({ err: (err as Error).message }, "reading the pod's usage failed");
        return;
      }
      // The Pod not scraped yet is `podmetrics "…" not found`; no metrics API at all is the API
      // server's own 404, and then no sample will ever come.
      if ((err as ClusterError).serverMessage.includes('could not find the requested resource')) {
        clearInterval(this.timer);
        this.noApi();
      }
    }
  }
}
