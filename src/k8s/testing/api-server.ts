/**
 * A Kubernetes API server for tests: the subset Boxcar's executor uses, over real HTTP, with the
 * admission rules that decide whether a job's Pod is accepted. No Kubernetes API server can be
 * installed on Boxcar's test machines, so this stands in for one; what it says is Kubernetes'
 * wording where Boxcar predicts it (RuntimeClass, ResourceQuota: see ../admission.ts) and its
 * own elsewhere (schema failures, the Pod Security details).
 *
 * Served: RuntimeClasses (get, list), ResourceQuotas (get, list), Namespaces (get), Pods
 * (create, get, list by label, delete). Every request body is validated against the Kubernetes
 * OpenAPI schema (kubernetes-models) before anything else looks at it. Pods stay Pending: the
 * scripted kubelet, watch and logs are to come with the executor.
 */

import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { RuntimeClass } from 'kubernetes-models/node.k8s.io/v1';
import {
  Namespace,
  Pod,
  ResourceQuota,
  type INamespace,
  type IPod,
  type IResourceQuota,
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

class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: { name: string; kind: string; group?: string },
  ) {
    super(message);
  }
}

export class FakeApiServer {
  private readonly namespaces = new Map<string, INamespace>();
  private readonly runtimeClasses = new Map<string, IRuntimeClass>();
  /** Per namespace, by name. */
  private readonly quotas = new Map<string, Map<string, IResourceQuota>>();
  private readonly pods = new Map<string, Map<string, IPod>>();
  private resourceVersion = 1;
  private server: Server | undefined;

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

  async listen(): Promise<string> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
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
      const body = await readBody(req);
      const out = this.route(req.method ?? 'GET', url, body);
      send(res, 200, out);
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
      send(res, err.code, {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: err.message,
        reason: err.reason,
        ...(err.details && { details: err.details }),
        code: err.code,
      });
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
    if (method === 'GET' && (m = /^\/api\/v1\/namespaces\/([^/]+)$/.exec(p)))
      return this.namespaces.get(m[1] as string) ?? notFound('namespaces', m[1] as string);
    if ((m = /^\/api\/v1\/namespaces\/([^/]+)\/(resourcequotas|pods)(?:\/([^/]+))?$/.exec(p))) {
      const [, ns, resource, name] = m as unknown as [string, string, string, string | undefined];
      if (!this.namespaces.has(ns)) throw notFoundError('namespaces', ns);
      if (resource === 'resourcequotas') {
        const quotas = this.inNamespace(this.quotas, ns);
        if (method === 'GET' && !name) return list('ResourceQuotaList', 'v1', [...quotas.values()]);
        if (method === 'GET' && name) return quotas.get(name) ?? notFound('resourcequotas', name);
      } else {
        const pods = this.inNamespace(this.pods, ns);
        if (method === 'POST' && !name) return this.createPod(ns, body);
        if (method === 'GET' && !name)
          return list(
            'PodList',
            'v1',
            [...pods.values()].filter(matches(url.searchParams.get('labelSelector'))),
          );
        if (method === 'GET' && name) return pods.get(name) ?? notFound('pods', name);
        if (method === 'DELETE' && name) return this.deletePod(ns, name);
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
    return pod;
  }

  private deletePod(ns: string, name: string): IPod {
    const pods = this.inNamespace(this.pods, ns);
    const pod = pods.get(name);
    if (!pod) throw notFoundError('pods', name);
    pods.delete(name);
    // The stored Pod carries the overhead admission set on it.
    const request = podRequest(pod);
    this.charge([...this.inNamespace(this.quotas, ns).values()], podUsage(request, request.overhead), -1);
    return pod;
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
}

const list = (kind: string, apiVersion: string, items: unknown[]) => ({
  kind,
  apiVersion,
  metadata: {},
  items,
});

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
function matches(selector: string | null): (pod: IPod) => boolean {
  const wanted = (selector ?? '')
    .split(',')
    .filter(Boolean)
    .map((s) => s.split('='));
  return (pod) => wanted.every(([k, v]) => pod.metadata?.labels?.[k as string] === v);
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
