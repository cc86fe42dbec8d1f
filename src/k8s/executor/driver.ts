/**
 * The Kubernetes executor as a runtime driver: one instance per Boxcar runtime, each running its
 * jobs as Pods of its RuntimeClass (runc: none, the nodes' default runtime). Routing, trust,
 * quotas, the breaker and the store are Boxcar's as on any node; what the cluster does differently
 * is in the capabilities: it pulls images itself, its usage comes from the metrics API, it keeps
 * the workspace in the Pod, and its Pods outlive Boxcar.
 *
 * prepare predicts admission (refused in the API server's words before anything is sent); start
 * creates the Pod (and, for a trusted job with secrets, a Secret it owns) and waits until its
 * container runs, failing fast on an image the nodes cannot pull and on a sandbox that does not
 * start (FailedCreatePodSandBox); wait, output and recover find the Pod again by its name alone.
 */

import { z } from 'zod';
import type { V1Pod } from '@kubernetes/client-node';
import { newHandle, type TaskHandle } from '../../jobs/handle.js';
import type { RuntimeName } from '../../jobs/spec.js';
import { UserError } from '../../lib/errors.js';
import type { OutputChunk } from '../../lib/follow.js';
import { MANAGED_BY, NODE_LABEL, RUNTIME_LABEL, SANDBOX_LABEL } from '../labels.js';
import type { Logger } from '../../observability/logger.js';
import {
  driverState,
  type Capabilities,
  type ExitStatus,
  type Fingerprint,
  type OutputOptions,
  type Recovered,
  type Runtime,
  type SandboxRequest,
  type StopSignal,
  type TaskStats,
} from '../../runtimes/runtime.js';
import { predictAdmission, refusalOf, SandboxFailure } from './admission-check.js';
import { ClusterError, isStatus, type KubeCluster } from './cluster.js';
import { clusterFingerprint } from './fingerprint.js';
import { followLog } from './log-follow.js';
import { jobPod, jobSecret, podImage, podName, wantsSecret, type PodPlace } from './pod.js';
import { containerState, deletedExit } from './pod-state.js';
import { PodUsage } from './pod-usage.js';
import { watchPod } from './pod-watch.js';

/** Settles after `ms`, or at once when `signal` aborts. */
function sleepUnless(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** How often a Pending Pod's events are read for a sandbox that failed to start. */
const EVENTS_EVERY_MS = 500;

const State = z.object({ namespace: z.string(), pod: z.string(), secret: z.boolean() });
type State = z.output<typeof State>;

export interface KubernetesDriverOptions {
  cluster: KubeCluster;
  /** The RuntimeClass of this runtime's Pods; none for the nodes' default runtime. */
  runtimeClassName: string | undefined;
  /** `overhead.podFixed`'s memory of that class, which Kubernetes adds to the Pod's limit. */
  overheadBytes: number;
  /** The tenant's namespace (`<namespace_prefix><tenant>`). */
  namespaceOf: (tenant: string) => string;
  defaultImage: string | undefined;
  /** How often a running Pod's usage is read from the metrics API. */
  usageEveryMs: number;
  /**
   * This node's id: its Pods carry it, so that its own strays are found after a restart. Read
   * when first needed: judging the cluster (`boxcar doctor`) needs no state directory.
   */
  node: () => string;
  logger: Logger;
}

export class KubernetesDriver implements Runtime {
  readonly capabilities: Capabilities;
  /** Requests between prepare and start: the Pod is made from them (secrets are never persisted). */
  private readonly prepared = new Map<string, { req: SandboxRequest; place: PodPlace }>();
  /** Running Pods' usage, sampled from when `wait` follows them until `destroy`. */
  private readonly usage = new Map<string, PodUsage>();
  private noMetricsApiSaid = false;

  constructor(
    readonly name: RuntimeName,
    private readonly opts: KubernetesDriverOptions,
  ) {
    this.capabilities = {
      // The nodes' default runtime (runc) shares the node's kernel; a sandboxed class does not.
      sharedKernel: opts.runtimeClassName === undefined,
      workload: 'image',
      memoryMeasure: 'metrics-api',
      memoryOverheadBytes: () => opts.overheadBytes,
      gracefulStop: true,
      hostCgroup: false,
      // Denied by the tenant namespace's NetworkPolicy (boxcar k8s manifests); prepare refuses jobs that ask.
      network: false,
      survivesRestart: true,
      writableRoot: false,
      workspaceReturned: false,
      pullsImages: true,
    };
  }

  fingerprint(): Promise<Fingerprint> {
    return clusterFingerprint(this.opts.cluster, this.name, this.opts.runtimeClassName);
  }

  async prepare(req: SandboxRequest): Promise<TaskHandle> {
    const place: PodPlace = {
      namespace: this.opts.namespaceOf(req.tenant),
      name: podName(req.sandboxId),
      runtimeClassName: this.opts.runtimeClassName,
      node: this.opts.node(),
      defaultImage: this.opts.defaultImage,
    };
    podImage(req.spec, this.opts.defaultImage); // a job's image the cluster cannot pull is refused now
    if (req.workspaceDir)
      throw new UserError(
        'checkout, artifacts, cache and needs: the kubernetes executor gives a job an empty /workspace of its own (nothing is copied into or out of its Pod yet); drop them, or run the job with executor: local',
      );
    if (req.spec.network.enabled)
      throw new UserError(
        "network: the kubernetes executor runs jobs without network (their namespace's NetworkPolicy boxcar-no-network denies all traffic); drop network, or run the job with executor: local",
      );
    await predictAdmission(this.opts.cluster, place, req.spec);
    this.prepared.set(req.sandboxId, { req, place });
    const handle = newHandle({
      runtime: this.name,
      jobId: req.jobId,
      sandboxId: req.sandboxId,
      logPath: req.logPath,
    });
    handle.driverState = {
      namespace: place.namespace,
      pod: place.name,
      secret: wantsSecret(req),
    } satisfies State;
    return handle;
  }

  async start(handle: TaskHandle): Promise<void> {
    const prepared = this.prepared.get(handle.sandboxId);
    if (!prepared)
      throw new Error(
        `kubernetes: sandbox ${handle.sandboxId} was prepared by another Boxcar process; its request (and secrets) are not here`,
      );
    this.prepared.delete(handle.sandboxId);
    const { req, place } = prepared;
    const { cluster } = this.opts;
    const pod = await this.createPod(jobPod(req, place, this.name), place);
    if (wantsSecret(req))
      await cluster
        .call(`creating secret ${place.namespace}/${place.name}`, () =>
          cluster.core.createNamespacedSecret({
            namespace: place.namespace,
            body: jobSecret(req, place, this.name, pod.metadata?.uid ?? ''),
          }),
        )
        .catch((err: unknown) => {
          if (!isStatus(err, 409)) throw err; // made by an earlier try of this start
        });
    await this.untilStarted(place, pod.spec?.containers[0]?.image ?? '', req.spec.timeoutMs);
  }

  /** Creates the Pod; one that exists already (a retried request that had arrived) is this sandbox's. */
  private async createPod(body: V1Pod, place: PodPlace): Promise<V1Pod> {
    const { cluster } = this.opts;
    const where = `pod ${place.namespace}/${place.name}`;
    try {
      return await cluster.call(`creating ${where}`, () =>
        cluster.core.createNamespacedPod({ namespace: place.namespace, body }),
      );
    } catch (err) {
      if (err instanceof ClusterError && err.code === 403) throw refusalOf(err.serverMessage);
      if (!isStatus(err, 409)) throw err;
      const existing = await cluster.call(`reading ${where}`, () =>
        cluster.core.readNamespacedPod({ name: place.name, namespace: place.namespace }),
      );
      const sandbox = body.metadata?.labels?.[SANDBOX_LABEL];
      if (existing.metadata?.labels?.[SANDBOX_LABEL] !== sandbox)
        throw new Error(`${where} exists and is not sandbox ${sandbox}'s`, { cause: err });
      return existing;
    }
  }

  /**
   * Until the container runs (or has run); a pull failure or a sandbox failure ends the wait, and
   * so does the job's timeout: a Pod no node takes (none has room, none is Ready) never counts
   * against activeDeadlineSeconds, so without it the job would wait for ever.
   */
  private async untilStarted(place: PodPlace, image: string, timeoutMs: number): Promise<void> {
    const { cluster, logger } = this.opts;
    const stop = new AbortController();
    let sandboxFailure: string | undefined;
    let eventsFailure: unknown;
    let pending = 'Pending';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      stop.abort();
    }, timeoutMs);
    // Beside the watch: a sandbox that fails to start shows in the Pod's events, not its status.
    const events = (async () => {
      while (!stop.signal.aborted) {
        const list = await cluster.call(`reading the events of pod ${place.namespace}/${place.name}`, () =>
          cluster.core.listNamespacedEvent({
            namespace: place.namespace,
            fieldSelector: `involvedObject.name=${place.name}`,
          }),
        );
        const failed = list.items.find((e) => e.reason === 'FailedCreatePodSandBox');
        if (failed) {
          sandboxFailure = failed.message ?? 'FailedCreatePodSandBox';
          return stop.abort();
        }
        // Cut short when the wait ends: the start must not wait for the next poll.
        await sleepUnless(EVENTS_EVERY_MS, stop.signal);
      }
    })().catch((err: unknown) => {
      eventsFailure = err;
      stop.abort();
    });
    try {
      const state = await watchPod(
        cluster,
        place,
        (pod, last) => {
          if (!pod) return { kind: 'deleted' as const, last };
          const s = containerState(pod);
          if (s.kind !== 'pending') return s;
          pending = s.reason;
          return undefined;
        },
        logger,
        stop.signal,
      );
      if (eventsFailure) throw eventsFailure;
      if (sandboxFailure)
        throw new SandboxFailure(
          `${this.name}: the cluster could not start the Pod's sandbox (RuntimeClass ${place.runtimeClassName ?? 'default'}): FailedCreatePodSandBox: ${sandboxFailure}`,
        );
      if (timedOut)
        throw new SandboxFailure(
          `pod ${place.namespace}/${place.name} did not start within the job's timeout (${timeoutMs / 1000} s): ${pending}`,
        );
      if (!state) throw new Error(`pod ${place.namespace}/${place.name}: stopped waiting for it to start`);
      if (state.kind === 'deleted')
        throw new Error(`pod ${place.namespace}/${place.name} was deleted before its container started`);
      if (state.kind === 'pull-failed')
        throw new UserError(
          `image ${image}: the cluster's node could not pull it (${state.reason}: ${state.message})`,
        );
    } finally {
      clearTimeout(timer);
      stop.abort();
      await events;
    }
  }

  async wait(handle: TaskHandle): Promise<ExitStatus> {
    const s = this.state(handle);
    if (!s) throw new Error(`kubernetes: sandbox ${handle.sandboxId} has no Pod`);
    const usage = this.usageOf(handle.sandboxId, s);
    usage.start();
    try {
      return await this.untilExited(s);
    } finally {
      await usage.stop();
    }
  }

  private usageOf(sandboxId: string, s: State): PodUsage {
    let u = this.usage.get(sandboxId);
    if (!u) {
      u = new PodUsage(
        this.opts.cluster,
        { namespace: s.namespace, name: s.pod },
        this.opts.usageEveryMs,
        this.opts.logger,
        () => {
          if (this.noMetricsApiSaid) return;
          this.noMetricsApiSaid = true;
          this.opts.logger.warn(
            'the cluster serves no metrics API (metrics.k8s.io: install metrics-server): jobs get no memory or CPU figures',
          );
        },
      );
      this.usage.set(sandboxId, u);
    }
    return u;
  }

  private async untilExited(s: State): Promise<ExitStatus> {
    const exit = await watchPod(
      this.opts.cluster,
      { namespace: s.namespace, name: s.pod },
      (pod, last): ExitStatus | undefined => {
        if (!pod) return deletedExit(last);
        const c = containerState(pod);
        return c.kind === 'exited' ? c.exit : undefined;
      },
      this.opts.logger,
    );
    return exit ?? deletedExit(undefined);
  }

  /** TERM: the Pod is deleted with its own grace period; KILL: at once. */
  async stop(handle: TaskHandle, signal: StopSignal): Promise<void> {
    const s = this.state(handle);
    if (s) await this.deletePod(s, signal === 'SIGKILL' ? 0 : undefined);
  }

  async destroy(handle: TaskHandle): Promise<void> {
    this.prepared.delete(handle.sandboxId);
    await this.usage.get(handle.sandboxId)?.stop();
    this.usage.delete(handle.sandboxId);
    const s = this.state(handle);
    if (!s) return;
    // The Secret is the Pod's (the garbage collector deletes it with it); deleted here too, so
    // that it is gone when the job is, not when the collector gets to it.
    if (s.secret)
      await this.deleteObject(`secret ${s.namespace}/${s.pod}`, () =>
        this.opts.cluster.core.deleteNamespacedSecret({ name: s.pod, namespace: s.namespace }),
      );
    await this.deletePod(s, 0);
  }

  /** What the metrics API showed while the job ran (approximate: see pod-usage.ts); zeros without it. */
  async stats(handle: TaskHandle): Promise<TaskStats> {
    return (
      this.usage.get(handle.sandboxId)?.figures() ?? {
        memoryBytes: 0,
        peakMemoryBytes: 0,
        cpuUsageNs: 0,
        pids: 0,
      }
    );
  }

  async recover(handle: TaskHandle): Promise<Recovered> {
    const s = this.state(handle);
    if (!s) return { state: 'gone', reason: 'its Pod was never created' };
    const { cluster } = this.opts;
    let pod: V1Pod;
    try {
      pod = await cluster.call(`reading pod ${s.namespace}/${s.pod}`, () =>
        cluster.core.readNamespacedPod({ name: s.pod, namespace: s.namespace }),
      );
    } catch (err) {
      if (isStatus(err, 404))
        return { state: 'gone', reason: `pod ${s.namespace}/${s.pod} no longer exists` };
      throw err;
    }
    const c = containerState(pod);
    if (c.kind === 'exited') return { state: 'exited', exit: c.exit };
    if (c.kind === 'pull-failed')
      return { state: 'gone', reason: `its image could not be pulled (${c.reason})` };
    // Pending (scheduling, pulling) or running: the Pod goes on by itself; watch it again.
    return { state: 'running' };
  }

  async *output(handle: TaskHandle, opts: OutputOptions): AsyncIterable<OutputChunk> {
    const s = this.state(handle);
    if (!s) return;
    const { cluster, logger } = this.opts;
    const where = { namespace: s.namespace, name: s.pod };
    yield* followLog(
      cluster,
      where,
      {
        follow: opts.follow,
        signal: opts.signal,
        ended: async () => {
          if (opts.ended?.aborted) return true;
          const r = await this.recover(handle);
          return r.state !== 'running';
        },
      },
      logger.child({ sandbox: handle.sandboxId }),
    );
  }

  /**
   * Deletes this node's Pods of this runtime that no live job holds (left by a crash between
   * creating a Pod and recording it, or by a job whose end was recorded while its Pod stayed).
   */
  async removeStrays(live: ReadonlySet<string>): Promise<string[]> {
    const { cluster } = this.opts;
    const selector = (labels: Record<string, string>) =>
      Object.entries(labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(',');
    // Per tenant namespace (Boxcar's RBAC grants Pods there, not cluster-wide).
    const namespaces = await cluster.call("listing Boxcar's namespaces", () =>
      cluster.core.listNamespace({ labelSelector: selector(MANAGED_BY) }),
    );
    const removed: string[] = [];
    for (const ns of namespaces.items) {
      const namespace = ns.metadata?.name ?? '';
      const pods = await cluster.call(`listing this node's pods in ${namespace}`, () =>
        cluster.core.listNamespacedPod({
          namespace,
          labelSelector: selector({
            ...MANAGED_BY,
            [NODE_LABEL]: this.opts.node(),
            [RUNTIME_LABEL]: this.name,
          }),
        }),
      );
      for (const pod of pods.items) {
        if (live.has(pod.metadata?.labels?.[SANDBOX_LABEL] ?? '')) continue;
        const s = { namespace, pod: pod.metadata?.name ?? '', secret: true };
        await this.deleteObject(`secret ${s.namespace}/${s.pod}`, () =>
          cluster.core.deleteNamespacedSecret({ name: s.pod, namespace: s.namespace }),
        );
        await this.deletePod(s, 0);
        removed.push(`${s.namespace}/${s.pod}`);
      }
    }
    return removed;
  }

  private state(handle: TaskHandle): State | undefined {
    return driverState(handle, State);
  }

  private deletePod(s: State, gracePeriodSeconds: number | undefined): Promise<void> {
    return this.deleteObject(`pod ${s.namespace}/${s.pod}`, () =>
      this.opts.cluster.core.deleteNamespacedPod({ name: s.pod, namespace: s.namespace, gracePeriodSeconds }),
    );
  }

  /** Deletes; one already gone (404) is what was wanted. */
  private async deleteObject(what: string, request: () => Promise<unknown>): Promise<void> {
    try {
      await this.opts.cluster.call(`deleting ${what}`, request);
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
    }
  }
}
