/**
 * A Kubernetes API server for tests: the subset Boxcar's executor uses, over real HTTP, with the
 * admission rules that decide whether a job's Pod is accepted. No Kubernetes API server can be
 * installed on Boxcar's test machines, so this stands in for one; what it says is Kubernetes'
 * wording where Boxcar predicts it (RuntimeClass, ResourceQuota: see ../admission.ts) and its
 * own elsewhere (schema failures, the Pod Security details).
 *
 * Served: RuntimeClasses (get, list), ResourceQuotas (get, list), Namespaces (get, list), Nodes
 * (list), PodMetrics (metrics.k8s.io, from the script), Pods (create, get, list by label, delete, watch with resourceVersion, bookmarks and
 * 410 Gone, log with follow, timestamps and sinceTime), Secrets (create, get, list, delete; deleted
 * with the Pod that owns them), Events (list by involved object). Every request body is
 * validated against the Kubernetes OpenAPI schema (kubernetes-models) before anything else looks
 * at it. A scripted kubelet (fake-kubelet.ts) runs the Pods. Tests can make the cluster
 * misbehave: throttle (429 with Retry-After), drop log streams mid-line, drop watches, compact
 * the watch history (410), fail the sandboxes of a RuntimeClass (FailedCreatePodSandBox), and
 * delete a RuntimeClass.
 */

import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RuntimeClass } from 'kubernetes-models/node.k8s.io/v1';
import {
  Namespace,
  Node,
  Pod,
  ResourceQuota,
  Secret,
  type IContainerStatus,
  type IEvent,
  type INamespace,
  type INode,
  type IPod,
  type IPodStatus,
  type IResourceQuota,
  type ISecret,
} from 'kubernetes-models/v1';
import type { IRuntimeClass } from 'kubernetes-models/node.k8s.io/v1';
import {
  formatQuota,
  mutateRuntimeClass,
  podUsage,
  quotaRefusal,
  validateRuntimeClass,
  QUOTA_RESOURCES,
  type QuotaResource,
  type ResourceList,
} from '../admission.js';
import { podRequest, quotaView, runtimeClassView } from '../admission-views.js';
import { restrictedViolations } from './pod-security.js';
import { logTimestamp, scriptOf, type KubeletScript } from './fake-kubelet.js';

class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: { name?: string; kind?: string; group?: string; retryAfterSeconds?: number },
  ) {
    super(message);
  }
}

interface PodLog {
  lines: { ts: string; text: string }[];
  /** The container has ended: no line will come. */
  done: boolean;
  listeners: Set<() => void>;
}

interface PodWatcher {
  ns: string | undefined;
  selector: (pod: IPod) => boolean;
  bookmarks: boolean;
  res: ServerResponse;
}

interface WatchEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  pod: IPod;
}

const BOOKMARK_EVERY_MS = 100;
const CONTAINER_CREATING = { waiting: { reason: 'ContainerCreating' } };

export class FakeApiServer {
  private readonly namespaces = new Map<string, INamespace>();
  private readonly runtimeClasses = new Map<string, IRuntimeClass>();
  private readonly nodes = new Map<string, INode>();
  /** Per namespace, by name. */
  private readonly quotas = new Map<string, Map<string, IResourceQuota>>();
  private readonly pods = new Map<string, Map<string, IPod>>();
  private readonly secrets = new Map<string, Map<string, ISecret>>();
  private readonly events = new Map<string, IEvent[]>();
  private readonly logs = new Map<string, PodLog>();
  private readonly kubeletTimers = new Map<string, Set<NodeJS.Timeout>>();
  private readonly history: WatchEvent[] = [];
  /** Watches from a resourceVersion below this are answered 410 Gone (the history is compacted). */
  private compactedBelow = 0;
  private readonly watchers = new Set<PodWatcher>();
  private readonly failingClasses = new Set<string>();
  private throttled = { count: 0, retryAfterSeconds: 0 };
  private logDrops = { count: 0, afterBytes: 0 };
  private metricsApi = true;
  private resourceVersion = 1;
  private server: Server | undefined;
  private bookmarkTimer: NodeJS.Timeout | undefined;
  /** Every request as `METHOD path`, in order: what tests count (creates, retries). */
  readonly requests: string[] = [];

  /**
   * Objects as `kubectl apply` would create them (e.g. `boxcar k8s manifests`' output), each
   * validated against its schema; kinds this server does not serve are left out.
   */
  load(objects: readonly { kind?: string }[]): void {
    for (const o of objects) {
      if (o.kind === 'Namespace') {
        const ns = new Namespace(o as INamespace);
        ns.validate();
        this.namespaces.set(ns.metadata?.name ?? '', ns.toJSON());
      }
      if (o.kind === 'RuntimeClass') {
        const rc = new RuntimeClass(o as IRuntimeClass);
        rc.validate();
        this.runtimeClasses.set(rc.metadata?.name ?? '', rc.toJSON());
      }
      if (o.kind === 'Node') {
        const node = new Node(o as INode);
        node.validate();
        this.nodes.set(node.metadata?.name ?? '', node.toJSON());
      }
      if (o.kind === 'ResourceQuota') {
        const model = new ResourceQuota(o as IResourceQuota);
        model.validate();
        const q = structuredClone(model.toJSON());
        // As the quota controller writes it once it has seen the quota: its hard limits in
        // canonical form, nothing used yet.
        const hard = quotaView(q).hard;
        q.status = {
          hard: Object.fromEntries(
            Object.entries(hard).map(([r, n]) => [r, formatQuota(r as QuotaResource, n)]),
          ),
          used: Object.fromEntries(Object.keys(hard).map((r) => [r, '0'])),
        };
        const ns = q.metadata?.namespace ?? '';
        this.inNamespace(this.quotas, ns).set(q.metadata?.name ?? '', q);
      }
    }
  }

  /** The next `count` requests (streams excepted) are answered 429 with Retry-After. */
  throttle(count: number, retryAfterSeconds: number): void {
    this.throttled = { count, retryAfterSeconds };
  }

  /** The next `count` followed log streams are cut after `afterBytes` bytes, mid-line if it falls there. */
  dropLogStreams(count: number, afterBytes: number): void {
    this.logDrops = { count, afterBytes };
  }

  /** Every open watch ends (as an API server's restart or a load balancer's timeout ends them). */
  dropWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  /** Forgets the watch history: a watch from any resourceVersion seen so far gets 410 Gone. */
  compact(): void {
    this.history.length = 0;
    this.compactedBelow = this.resourceVersion + 1;
    this.dropWatches();
  }

  /** Pods of this RuntimeClass never get a sandbox: the kubelet reports FailedCreatePodSandBox. */
  failSandboxes(runtimeClass: string): void {
    this.failingClasses.add(runtimeClass);
  }

  /** The operator deletes a RuntimeClass (`kubectl delete runtimeclass NAME`). */
  deleteRuntimeClass(name: string): void {
    this.runtimeClasses.delete(name);
  }

  /** The cluster has no metrics-server: metrics.k8s.io is not served. */
  removeMetricsApi(): void {
    this.metricsApi = false;
  }

  /** Pods as the server holds them now, in every namespace. */
  allPods(): IPod[] {
    return [...this.pods.values()].flatMap((m) => [...m.values()]);
  }

  /** Secrets as the server holds them now, in every namespace. */
  allSecrets(): ISecret[] {
    return [...this.secrets.values()].flatMap((m) => [...m.values()]);
  }

  async listen(): Promise<string> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    this.bookmarkTimer = setInterval(() => this.bookmark(), BOOKMARK_EVERY_MS);
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    clearInterval(this.bookmarkTimer);
    for (const timers of this.kubeletTimers.values()) for (const t of timers) clearTimeout(t);
    this.kubeletTimers.clear();
    for (const log of this.logs.values()) this.finishLog(log);
    this.dropWatches();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve, reject) => this.server?.close((e) => (e ? reject(e) : resolve())));
  }

  /** A kubeconfig for the client library, pointing at this server. */
  kubeconfig(url: string): string {
    return JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      // The client library speaks plain HTTP only when told to skip TLS verification; the
      // server listens on loopback, and TLS with its own CA is for a later version.
      clusters: [{ name: 'fake', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'boxcar', user: { token: 'test-token' } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'boxcar' } }],
      'current-context': 'fake',
    });
  }

  private inNamespace<T>(map: Map<string, Map<string, T>>, ns: string): Map<string, T> {
    const m = map.get(ns) ?? new Map<string, T>();
    map.set(ns, m);
    return m;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://fake');
      const method = req.method ?? 'GET';
      this.requests.push(`${method} ${url.pathname}`);
      if (method === 'GET' && url.searchParams.get('watch') === 'true') return this.watch(url, res);
      const log = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/log$/.exec(url.pathname);
      if (method === 'GET' && log) return this.streamLog(log[1] as string, log[2] as string, url, res);
      if (this.throttled.count > 0) {
        this.throttled.count--;
        const after = this.throttled.retryAfterSeconds;
        res.setHeader('retry-after', String(after));
        throw new ApiError(429, 'TooManyRequests', 'Too many requests, please try again later.', {
          retryAfterSeconds: after,
        });
      }
      const body = await readBody(req);
      const out = this.route(method, url, body);
      send(res, method === 'POST' ? 201 : 200, out);
    } catch (err) {
      // A failure of the test server itself: a 500 the test sees, with what went wrong.
      if (!(err instanceof ApiError)) {
        send(res, 500, {
          kind: 'Status',
          apiVersion: 'v1',
          status: 'Failure',
          message: String(err),
          code: 500,
        });
        return;
      }
      send(res, err.code, statusOf(err));
    }
  }

  private route(method: string, url: URL, body: unknown): unknown {
    const p = url.pathname;
    let m: RegExpExecArray | null;
    if (method === 'GET' && p === '/apis/node.k8s.io/v1/runtimeclasses')
      return list('RuntimeClassList', 'node.k8s.io/v1', [...this.runtimeClasses.values()]);
    if (method === 'GET' && (m = /^\/apis\/node\.k8s\.io\/v1\/runtimeclasses\/([^/]+)$/.exec(p)))
      return (
        this.runtimeClasses.get(m[1] as string) ?? notFound('runtimeclasses.node.k8s.io', m[1] as string)
      );
    if (method === 'GET' && p === '/api/v1/nodes')
      return list(
        'NodeList',
        'v1',
        [...this.nodes.values()].filter(matches(url.searchParams.get('labelSelector'))),
      );
    if (method === 'GET' && p === '/api/v1/pods')
      return list('PodList', 'v1', this.allPods().filter(matches(url.searchParams.get('labelSelector'))));
    if (
      method === 'GET' &&
      (m = /^\/apis\/metrics\.k8s\.io\/v1beta1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(p))
    )
      return this.podMetrics(m[1] as string, m[2] as string);
    if (method === 'GET' && p === '/api/v1/namespaces')
      return list(
        'NamespaceList',
        'v1',
        [...this.namespaces.values()].filter(matches(url.searchParams.get('labelSelector'))),
      );
    if (method === 'GET' && (m = /^\/api\/v1\/namespaces\/([^/]+)$/.exec(p)))
      return this.namespaces.get(m[1] as string) ?? notFound('namespaces', m[1] as string);
    if (
      (m = /^\/api\/v1\/namespaces\/([^/]+)\/(resourcequotas|pods|secrets|events)(?:\/([^/]+))?$/.exec(p))
    ) {
      const [, ns, resource, name] = m as unknown as [string, string, string, string | undefined];
      if (!this.namespaces.has(ns)) throw notFoundError('namespaces', ns);
      if (resource === 'resourcequotas') {
        const quotas = this.inNamespace(this.quotas, ns);
        if (method === 'GET' && !name) return list('ResourceQuotaList', 'v1', [...quotas.values()]);
        if (method === 'GET' && name) return quotas.get(name) ?? notFound('resourcequotas', name);
      } else if (resource === 'pods') {
        const pods = this.inNamespace(this.pods, ns);
        if (method === 'POST' && !name) return this.createPod(ns, body);
        if (method === 'GET' && !name)
          return list(
            'PodList',
            'v1',
            [...pods.values()].filter(matches(url.searchParams.get('labelSelector'))),
          );
        if (method === 'GET' && name) return pods.get(name) ?? notFound('pods', name);
        if (method === 'DELETE' && name) return this.deletePod(ns, name, gracePeriod(url, body));
      } else if (resource === 'secrets') {
        const secrets = this.inNamespace(this.secrets, ns);
        if (method === 'POST' && !name) return this.createSecret(ns, body);
        if (method === 'GET' && !name)
          return list(
            'SecretList',
            'v1',
            [...secrets.values()].filter(matches(url.searchParams.get('labelSelector'))),
          );
        if (method === 'GET' && name) return secrets.get(name) ?? notFound('secrets', name);
        if (method === 'DELETE' && name) {
          const secret = secrets.get(name) ?? notFound('secrets', name);
          secrets.delete(name);
          return secret;
        }
      } else if (method === 'GET' && !name) {
        const about = /^involvedObject\.name=(.+)$/.exec(url.searchParams.get('fieldSelector') ?? '')?.[1];
        return list(
          'EventList',
          'v1',
          (this.events.get(ns) ?? []).filter((e) => !about || e.involvedObject.name === about),
        );
      }
    }
    throw new ApiError(404, 'NotFound', `the server could not find the requested resource (${method} ${p})`);
  }

  /** Create as the API server does: decode and validate against the schema, admission, storage. */
  private createPod(ns: string, body: unknown): IPod {
    try {
      new Pod(body as never).validate();
    } catch (err) {
      throw new ApiError(400, 'BadRequest', `Pod in body is invalid: ${(err as Error).message}`);
    }
    const pod = structuredClone(body) as IPod;
    const name = pod.metadata?.name;
    if (!name)
      throw new ApiError(
        422,
        'Invalid',
        'Pod "" is invalid: metadata.name: Required value: name or generateName is required',
      );
    // Admission in the API server's order: mutating (RuntimeClass), then validating (Pod
    // Security, RuntimeClass, ResourceQuota last).
    const classes = [...this.runtimeClasses.values()].map(runtimeClassView);
    const request = podRequest(pod);
    const mutated = mutateRuntimeClass(request, classes);
    if ('refusal' in mutated) throw refused(name, mutated.refusal);
    const labels = this.namespaces.get(ns)?.metadata?.labels ?? {};
    if (labels['pod-security.kubernetes.io/enforce'] === 'restricted') {
      const violations = restrictedViolations(pod.spec ?? { containers: [] });
      if (violations.length)
        throw refused(
          name,
          `pods "${name}" is forbidden: violates PodSecurity "restricted:latest": ${violations.join(', ')}`,
        );
    }
    const quotas = [...this.inNamespace(this.quotas, ns).values()];
    const usage = podUsage(request, mutated.overhead);
    const refusal =
      validateRuntimeClass(request, classes, mutated.overhead) ??
      quotaRefusal(name, usage, quotas.map(quotaView));
    if (refusal) throw refused(name, refusal);
    const pods = this.inNamespace(this.pods, ns);
    if (pods.has(name))
      throw new ApiError(409, 'AlreadyExists', `pods "${name}" already exists`, { name, kind: 'pods' });
    const rc = pod.spec?.runtimeClassName ? this.runtimeClasses.get(pod.spec.runtimeClassName) : undefined;
    if (pod.spec) {
      if (rc?.overhead?.podFixed) pod.spec.overhead = rc.overhead.podFixed;
      if (mutated.nodeSelector) pod.spec.nodeSelector = mutated.nodeSelector;
      // MergeTolerations: the class's, where the Pod has no equal one.
      const own = pod.spec.tolerations ?? [];
      const added = (rc?.scheduling?.tolerations ?? []).filter(
        (t) => !own.some((o) => JSON.stringify(o) === JSON.stringify(t)),
      );
      if (added.length) pod.spec.tolerations = [...own, ...added];
    }
    pod.metadata = {
      ...pod.metadata,
      namespace: ns,
      uid: randomUUID(),
      resourceVersion: String(++this.resourceVersion),
      creationTimestamp: new Date().toISOString(),
    };
    pod.status = { phase: 'Pending' };
    pods.set(name, pod);
    this.charge(quotas, usage, 1);
    this.record('ADDED', pod);
    this.runKubelet(ns, pod);
    return pod;
  }

  /** metrics-server's PodMetrics: the script's usage while the container runs. */
  private podMetrics(ns: string, name: string): unknown {
    if (!this.metricsApi)
      throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    const pod = this.pods.get(ns)?.get(name);
    const usage = pod && scriptOf(pod.spec?.containers[0]?.env).usage;
    if (!pod?.status?.containerStatuses?.[0]?.state?.running || !usage)
      return notFound('podmetrics.metrics.k8s.io', `${ns}/${name}`);
    return {
      kind: 'PodMetrics',
      apiVersion: 'metrics.k8s.io/v1beta1',
      metadata: { name, namespace: ns },
      timestamp: new Date().toISOString(),
      window: '15s',
      containers: [{ name: pod.spec?.containers[0]?.name, usage }],
    };
  }

  private deletePod(ns: string, name: string, graceSeconds: number): IPod {
    const pods = this.inNamespace(this.pods, ns);
    const pod = pods.get(name);
    if (!pod) throw notFoundError('pods', name);
    this.stopKubelet(ns, name);
    // A container still running is stopped: TERM within a grace period, else KILL.
    const status = pod.status?.containerStatuses?.[0];
    if (status?.state?.running)
      this.setContainer(pod, {
        terminated: {
          exitCode: graceSeconds > 0 ? 143 : 137,
          reason: 'Error',
          startedAt: status.state.running.startedAt,
          finishedAt: new Date().toISOString(),
        },
      });
    pods.delete(name);
    const log = this.logs.get(`${ns}/${name}`);
    if (log) this.finishLog(log);
    this.logs.delete(`${ns}/${name}`);
    // The garbage collector: what the Pod owns goes with it.
    const secrets = this.inNamespace(this.secrets, ns);
    for (const [sName, s] of secrets)
      if (s.metadata?.ownerReferences?.some((o) => o.uid === pod.metadata?.uid)) secrets.delete(sName);
    // The stored Pod carries the overhead admission set on it.
    const request = podRequest(pod);
    this.charge([...this.inNamespace(this.quotas, ns).values()], podUsage(request, request.overhead), -1);
    pod.metadata = { ...pod.metadata, resourceVersion: String(++this.resourceVersion) };
    this.record('DELETED', pod);
    return pod;
  }

  private createSecret(ns: string, body: unknown): ISecret {
    try {
      new Secret(body as never).validate();
    } catch (err) {
      throw new ApiError(400, 'BadRequest', `Secret in body is invalid: ${(err as Error).message}`);
    }
    const secret = structuredClone(body) as ISecret;
    const name = secret.metadata?.name ?? '';
    const secrets = this.inNamespace(this.secrets, ns);
    if (secrets.has(name))
      throw new ApiError(409, 'AlreadyExists', `secrets "${name}" already exists`, { name, kind: 'secrets' });
    secret.metadata = {
      ...secret.metadata,
      namespace: ns,
      uid: randomUUID(),
      resourceVersion: String(++this.resourceVersion),
    };
    secrets.set(name, secret);
    return secret;
  }

  /** What the quota admission plugin records in status.used (and the controller releases). */
  private charge(quotas: IResourceQuota[], usage: ResourceList, sign: 1 | -1): void {
    for (const q of quotas) {
      const view = quotaView(q);
      const used = { ...(q.status?.used ?? {}) };
      for (const r of QUOTA_RESOURCES) {
        if (view.hard[r] === undefined || usage[r] === undefined) continue;
        used[r] = formatQuota(r, (view.used[r] ?? 0) + sign * usage[r]);
      }
      q.status = { ...q.status, used };
    }
  }

  // The kubelet.

  private runKubelet(ns: string, pod: IPod): void {
    const name = pod.metadata?.name ?? '';
    const container = pod.spec?.containers[0];
    const script = scriptOf(container?.env);
    this.setContainer(pod, CONTAINER_CREATING);
    this.later(ns, name, script.startAfterMs, () => this.startContainer(ns, pod, script));
  }

  private startContainer(ns: string, pod: IPod, script: KubeletScript): void {
    const name = pod.metadata?.name ?? '';
    const rc = pod.spec?.runtimeClassName;
    if (rc && this.failingClasses.has(rc)) {
      this.event(
        ns,
        pod,
        'FailedCreatePodSandBox',
        `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to create containerd task: failed to start shim: the ${rc} runtime's VMM did not start`,
      );
      return;
    }
    const image = pod.spec?.containers[0]?.image ?? '';
    if (script.pullFails) {
      this.setContainer(pod, {
        waiting: {
          reason: script.pullFails,
          message:
            script.pullFails === 'ErrImagePull'
              ? `failed to pull and unpack image "${image}": not found`
              : `Back-off pulling image "${image}"`,
        },
      });
      return;
    }
    const missing = (pod.spec?.containers[0]?.envFrom ?? [])
      .map((e) => e.secretRef?.name)
      .find((s) => s && !this.inNamespace(this.secrets, ns).has(s));
    if (missing) {
      // The kubelet retries until the Secret exists, as a real one does.
      this.setContainer(pod, {
        waiting: { reason: 'CreateContainerConfigError', message: `secret "${missing}" not found` },
      });
      this.later(ns, name, 10, () => this.startContainer(ns, pod, script));
      return;
    }
    const startedAt = new Date().toISOString();
    this.logs.set(`${ns}/${name}`, { lines: [], done: false, listeners: new Set() });
    this.setContainer(pod, { running: { startedAt } }, 'Running');
    let i = 0;
    const next = () => {
      const log = this.logs.get(`${ns}/${name}`);
      if (!log) return;
      if (i < script.lines.length) {
        log.lines.push({ ts: logTimestamp(Date.now(), log.lines.length), text: script.lines[i++] as string });
        for (const l of log.listeners) l();
        return this.later(ns, name, script.lineEveryMs, next);
      }
      this.finishLog(log);
      this.setContainer(
        pod,
        {
          terminated: {
            exitCode: script.oomKilled ? 137 : script.exitCode,
            reason: script.oomKilled ? 'OOMKilled' : script.exitCode === 0 ? 'Completed' : 'Error',
            startedAt,
            finishedAt: new Date().toISOString(),
          },
        },
        script.exitCode === 0 && !script.oomKilled ? 'Succeeded' : 'Failed',
      );
    };
    this.later(ns, name, script.lineEveryMs, next);
  }

  private later(ns: string, name: string, ms: number, fn: () => void): void {
    const key = `${ns}/${name}`;
    const timers = this.kubeletTimers.get(key) ?? new Set<NodeJS.Timeout>();
    this.kubeletTimers.set(key, timers);
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  }

  private stopKubelet(ns: string, name: string): void {
    for (const t of this.kubeletTimers.get(`${ns}/${name}`) ?? []) clearTimeout(t);
    this.kubeletTimers.delete(`${ns}/${name}`);
  }

  /** The Pod's one container's state (and the Pod's phase), as the kubelet reports it. */
  private setContainer(
    pod: IPod,
    state: IContainerStatus['state'],
    phase?: NonNullable<IPodStatus['phase']>,
  ): void {
    const container = pod.spec?.containers[0];
    pod.status = {
      ...pod.status,
      ...(phase && { phase }),
      containerStatuses: [
        {
          name: container?.name ?? '',
          image: container?.image ?? '',
          imageID: '',
          ready: Boolean(state?.running),
          restartCount: 0,
          started: Boolean(state?.running),
          state,
        },
      ],
    };
    pod.metadata = { ...pod.metadata, resourceVersion: String(++this.resourceVersion) };
    this.record('MODIFIED', pod);
  }

  private event(ns: string, pod: IPod, reason: string, message: string): void {
    const list = this.events.get(ns) ?? [];
    this.events.set(ns, list);
    list.push({
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: `${pod.metadata?.name}.${randomUUID().slice(0, 8)}`, namespace: ns },
      involvedObject: { kind: 'Pod', name: pod.metadata?.name, namespace: ns, uid: pod.metadata?.uid },
      reason,
      message,
      type: 'Warning',
      source: { component: 'kubelet' },
      count: 1,
    });
  }

  private finishLog(log: PodLog): void {
    log.done = true;
    for (const l of log.listeners) l();
  }

  // Streams: watches and logs.

  private record(type: WatchEvent['type'], pod: IPod): void {
    const e: WatchEvent = { rv: Number(pod.metadata?.resourceVersion), type, pod: structuredClone(pod) };
    this.history.push(e);
    for (const w of this.watchers) this.deliver(w, e);
  }

  private deliver(w: PodWatcher, e: WatchEvent): void {
    if (w.ns !== undefined && e.pod.metadata?.namespace !== w.ns) return;
    if (!w.selector(e.pod)) return;
    w.res.write(`${JSON.stringify({ type: e.type, object: e.pod })}\n`);
  }

  private bookmark(): void {
    const rv = String(this.resourceVersion);
    for (const w of this.watchers)
      if (w.bookmarks)
        w.res.write(
          `${JSON.stringify({ type: 'BOOKMARK', object: { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: rv } } })}\n`,
        );
  }

  private watch(url: URL, res: ServerResponse): void {
    const m = /^\/api\/v1(?:\/namespaces\/([^/]+))?\/pods$/.exec(url.pathname);
    if (!m) return send(res, 404, statusOf(new ApiError(404, 'NotFound', `no watch at ${url.pathname}`)));
    const q = url.searchParams;
    const byName = /^metadata\.name=(.+)$/.exec(q.get('fieldSelector') ?? '')?.[1];
    const labels = matches(q.get('labelSelector'));
    const w: PodWatcher = {
      ns: m[1],
      selector: (pod) => (!byName || pod.metadata?.name === byName) && labels(pod),
      bookmarks: q.get('allowWatchBookmarks') === 'true',
      res,
    };
    res.writeHead(200, { 'content-type': 'application/json' });
    const from = q.get('resourceVersion');
    if (from && from !== '0' && Number(from) < this.compactedBelow) {
      // As etcd answers once a revision is compacted: an ERROR event, then the end.
      res.end(
        `${JSON.stringify({ type: 'ERROR', object: statusOf(new ApiError(410, 'Expired', `too old resource version: ${from} (${this.compactedBelow})`)) })}\n`,
      );
      return;
    }
    if (from && from !== '0') for (const e of this.history) if (e.rv > Number(from)) this.deliver(w, e);
    if (!from || from === '0')
      for (const pod of this.allPods())
        this.deliver(w, { rv: Number(pod.metadata?.resourceVersion), type: 'ADDED', pod });
    this.watchers.add(w);
    res.on('close', () => this.watchers.delete(w));
  }

  private streamLog(ns: string, name: string, url: URL, res: ServerResponse): void {
    const pod = this.pods.get(ns)?.get(name);
    if (!pod) return send(res, 404, statusOf(notFoundError('pods', name)));
    const log = this.logs.get(`${ns}/${name}`);
    if (!log) {
      const waiting = pod.status?.containerStatuses?.[0]?.state?.waiting?.reason ?? 'ContainerCreating';
      const c = url.searchParams.get('container');
      return send(
        res,
        400,
        statusOf(
          new ApiError(
            400,
            'BadRequest',
            `container "${c}" in pod "${name}" is waiting to start: ${waiting}`,
          ),
        ),
      );
    }
    const q = url.searchParams;
    const follow = q.get('follow') === 'true';
    const stamps = q.get('timestamps') === 'true';
    // sinceTime is read as metav1.Time: to the second.
    const since = q.get('sinceTime') ? Math.floor(Date.parse(q.get('sinceTime') as string) / 1000) * 1000 : 0;
    const cut =
      follow && this.logDrops.count > 0 ? (this.logDrops.count--, this.logDrops.afterBytes) : Infinity;
    let sent = 0;
    let at = 0;
    res.writeHead(200, { 'content-type': 'text/plain' });
    const flush = (): boolean => {
      for (; at < log.lines.length; at++) {
        const line = log.lines[at] as { ts: string; text: string };
        if (Date.parse(line.ts) < since) continue;
        const text = `${stamps ? `${line.ts} ` : ''}${line.text}\n`;
        if (sent + Buffer.byteLength(text) > cut) {
          // Cut once the partial line is on the wire: the client has the headers and part of a line.
          res.write(Buffer.from(text).subarray(0, cut - sent), () => res.destroy());
          return false;
        }
        sent += Buffer.byteLength(text);
        res.write(text);
      }
      return true;
    };
    if (!flush()) return;
    if (!follow || log.done) return void res.end();
    const listener = () => {
      if (!flush()) return log.listeners.delete(listener);
      if (log.done) {
        log.listeners.delete(listener);
        res.end();
      }
    };
    log.listeners.add(listener);
    res.on('close', () => log.listeners.delete(listener));
  }
}

const list = (kind: string, apiVersion: string, items: unknown[]) => ({
  kind,
  apiVersion,
  metadata: {},
  items,
});

const statusOf = (err: ApiError) => ({
  kind: 'Status',
  apiVersion: 'v1',
  metadata: {},
  status: 'Failure',
  message: err.message,
  reason: err.reason,
  ...(err.details && { details: err.details }),
  code: err.code,
});

/** A delete's grace period: the query's, the body's (DeleteOptions), else Kubernetes' default 30 s. */
function gracePeriod(url: URL, body: unknown): number {
  const q = url.searchParams.get('gracePeriodSeconds');
  if (q !== null) return Number(q);
  const b = (body as { gracePeriodSeconds?: number } | undefined)?.gracePeriodSeconds;
  return b ?? 30;
}

const notFoundError = (resource: string, name: string) =>
  new ApiError(404, 'NotFound', `${resource} "${name}" not found`, {
    name,
    kind: resource.split('.')[0] as string,
  });
function notFound(resource: string, name: string): never {
  throw notFoundError(resource, name);
}
const refused = (name: string, message: string) =>
  new ApiError(403, 'Forbidden', message, { name, kind: 'pods' });

/** Equality-based label selectors (`a=b,c=d`), the kind Boxcar uses. */
function matches(
  selector: string | null,
): (o: { metadata?: { labels?: Record<string, string> } }) => boolean {
  const wanted = (selector ?? '')
    .split(',')
    .filter(Boolean)
    .map((s) => s.split('='));
  return (o) => wanted.every(([k, v]) => o.metadata?.labels?.[k as string] === v);
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  if (!chunks.length) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new ApiError(400, 'BadRequest', `the body is not JSON: ${(err as Error).message}`);
  }
}

function send(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
