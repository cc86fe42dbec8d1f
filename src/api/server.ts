import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { z } from 'zod';
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Boxcar } from '../boxcar.js';
import { UserError, errorMessage } from '../lib/errors.js';
import { parseYaml } from '../lib/yaml.js';
import { parseDurationMs } from '../lib/quantity.js';
import { COST_GROUPS, finishedJobsCost, type CostGroup } from '../cost/allocation.js';
import { isTerminal, JOB_STATES, type JobState } from '../jobs/states.js';
import { parseOrThrow } from '../lib/validation.js';
import { metricsText } from '../observability/metrics.js';
import { acceptJob, JobRefused, QueueFull } from '../scheduler/intake.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { PipelineRunner } from '../scheduler/pipelines.js';
import { PIPELINE_STATES, type PipelineState } from '../pipelines/dag.js';
import { planOf } from '../pipelines/plan.js';
import type { ApiToken, JobRecord, PipelineRecord } from '../store/store.js';
import { jobSpecFor, pipelineSpecFor } from '../tenants/limits.js';
import { tenantSettings } from '../tenants/tenant-config.js';
import { registerGithubWebhook, type DeliveryWorker } from './github-webhook.js';
import { registerGitlabWebhook } from './gitlab-webhook.js';
import { jobView, pipelineJobs, pipelineView } from './job-view.js';
import { registerPeerBlobs } from './peer-blobs.js';
import { registerPeerLogs, relayLog, remoteLog } from './peer-logs.js';
import { streamLogs, readLogs } from './logs.js';
import { bearerToken, tokenHash } from './tokens.js';

const BODY_LIMIT = 1024 * 1024;
const ImagePullBody = z.strictObject({ image: z.string().min(1) });
const MAX_WAIT_MS = 10 * 60_000;
const YAML_TYPES = ['application/yaml', 'application/x-yaml', 'text/yaml'];

declare module 'fastify' {
  interface FastifyRequest {
    token: ApiToken | undefined;
  }
}

class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

/** A request body as YAML text (`content-type: application/yaml`) or JSON, through `schema`. */
function bodyAs<S extends z.ZodType>(body: unknown, schema: S, what: string): z.output<S> {
  return typeof body === 'string' ? parseYaml(body, what, schema) : parseOrThrow(schema, body ?? {}, what);
}

/** The token's tenant, for routes that act on a tenant's jobs. */
function tenantOf(req: FastifyRequest): string {
  const tenant = req.token?.tenant;
  if (!tenant)
    throw new HttpError(
      403,
      'this token belongs to no tenant; use a tenant’s token (`boxcar token create --tenant NAME`)',
    );
  return tenant;
}

async function authenticate(box: Boxcar, req: FastifyRequest): Promise<ApiToken> {
  const token = bearerToken(req.headers.authorization);
  if (!token) throw new HttpError(401, 'missing API token: send "Authorization: Bearer <token>"');
  const found = await box.store.tokenByHash(tokenHash(token));
  if (!found) throw new HttpError(401, 'unknown API token: create one with `boxcar token create`');
  req.token = found;
  return found;
}

function requireOperator(token: ApiToken): void {
  if (token.role !== 'operator')
    throw new HttpError(403, 'this needs an operator’s token (`boxcar token create --operator`)');
}

/** This node for its operator (`GET /v1/node`, the dashboard's fleet page): capacity, runtimes, warm pools. */
export async function nodeStatus(box: Boxcar, scheduler: Scheduler) {
  return {
    node: scheduler.owner,
    capacity: scheduler.placement.capacity,
    requested: scheduler.placement.used,
    running: scheduler.running,
    memory: process.memoryUsage(),
    runtimes: await box.runtimes.fingerprintAll(),
    runtimeStatus: await box.runtimes.status(),
  };
}

/**
 * The HTTP API of a serving node. Every /v1 route needs a token; a tenant sees and cancels
 * only its own jobs (another tenant's job is a 404, as if it did not exist), and the node's
 * metrics and status need an operator's token. Bad input gets a 4xx naming the field; nothing
 * a client sends can take the server down, and a failure of the server's own says no more than
 * a reference to its log. Authenticated requests that are refused go to the audit trail.
 */
export function buildApi(
  box: Boxcar,
  scheduler: Scheduler,
  deliveries?: DeliveryWorker,
  pipelines?: PipelineRunner,
): FastifyInstance {
  const app = Fastify({ bodyLimit: BODY_LIMIT, logger: false });
  app.decorateRequest('token', undefined);
  const follows = new Map<string, number>();
  app.addContentTypeParser(YAML_TYPES, { parseAs: 'string' }, (_req, body, done) => done(null, body));
  // As fastify's, but an empty body is no body (a POST /cancel from a client that always sends the header).
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    if (body === '') return done(null, undefined);
    try {
      done(null, JSON.parse(body as string));
    } catch (err) {
      done(new HttpError(400, `the body is not valid JSON: ${errorMessage(err)}`), undefined);
    }
  });

  const refuse = async (req: FastifyRequest, reply: FastifyReply, status: number, body: object) => {
    const token = req.token;
    if (token)
      await box.store
        .audit({
          tenant: token.tenant,
          actor: `token:${token.id}`,
          action: 'request.refused',
          subject: `${req.method} ${req.url.split('?')[0]}`,
          detail: { status, error: (body as { error?: string }).error },
        })
        .catch((err: unknown) => box.logger.error({ err }, 'auditing a refused request failed'));
    else
      box.logger.warn(
        { url: req.url, method: req.method, status, ip: req.ip },
        'unauthenticated request refused',
      );
    return reply.code(status).send(body);
  };
  app.setErrorHandler(async (err: FastifyError | Error, req, reply) => {
    if (err instanceof JobRefused)
      return refuse(req, reply, 422, { error: err.message, job: jobView(err.job) });
    if (err instanceof HttpError) return refuse(req, reply, err.statusCode, { error: err.message });
    if (err instanceof QueueFull) return refuse(req, reply, 429, { error: err.message });
    if (err instanceof UserError) return refuse(req, reply, 400, { error: err.message });
    if ((err as FastifyError).code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
      return refuse(req, reply, 415, {
        error: `content-type ${req.headers['content-type'] ?? '(none)'} is not accepted; send application/json or application/yaml`,
      });
    const status = (err as FastifyError).statusCode;
    if (status && status >= 400 && status < 500) return refuse(req, reply, status, { error: err.message });
    // The server's own failure: its details are for its log, not for whoever sent the request.
    const ref = randomUUID();
    box.logger.error({ err, url: req.url, method: req.method, ref }, 'API request failed');
    return reply.code(500).send({ error: `internal error (reference ${ref} in the server's log)` });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: `no such endpoint: ${req.method} ${req.url.split('?')[0]}` }),
  );

  app.get('/healthz', async () => ({ ok: true }));
  if (deliveries) {
    registerGithubWebhook(app, box, deliveries);
    registerGitlabWebhook(app, box, deliveries);
  }
  if (box.peers) registerPeerBlobs(app, box.images, box.peers);
  registerPeerLogs(app, box, scheduler);
  app.get('/metrics', async (req, reply) => {
    requireOperator(await authenticate(box, req));
    const { contentType, text } = await metricsText();
    return reply.type(contentType).send(text);
  });

  app.register(
    async (v1) => {
      v1.addHook('onRequest', async (req) => {
        await authenticate(box, req);
      });

      /** The tenant's own job, or 404 (another tenant's job does not exist for it). */
      const ownJob = async (req: FastifyRequest<{ Params: { id: string } }>): Promise<JobRecord> => {
        const job = await box.store.getJob(req.params.id);
        if (!job || job.tenant !== tenantOf(req)) throw new HttpError(404, `no job ${req.params.id}`);
        return job;
      };

      v1.post('/jobs', async (req, reply) => {
        const tenant = tenantSettings(box.config.tenants, tenantOf(req));
        const spec = bodyAs(req.body, jobSpecFor(tenant), 'job');
        const job = await acceptJob(box, scheduler.placement, {
          tenant: tenant.name,
          spec,
          origin: { via: 'api', actor: `token:${req.token?.id}` },
        });
        scheduler.notify();
        return reply.code(201).send(jobView(job));
      });

      v1.get<{ Querystring: { state?: string; limit?: string } }>('/jobs', async (req) => {
        const states = req.query.state?.split(',').filter(Boolean);
        for (const s of states ?? [])
          if (!(JOB_STATES as readonly string[]).includes(s))
            throw new HttpError(400, `state: "${s}" is not a job state; use one of ${JOB_STATES.join(', ')}`);
        const limit = req.query.limit === undefined ? 50 : Number(req.query.limit);
        if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
          throw new HttpError(400, `limit: "${req.query.limit}" must be a whole number from 1 to 10000`);
        const jobs = await box.store.listJobs({ tenant: tenantOf(req), states: states as JobState[], limit });
        return jobs.map(jobView);
      });

      // A tenant's own finished jobs, priced and summed (see `boxcar cost`).
      v1.get<{ Querystring: { by?: string; since?: string } }>('/cost', async (req) => {
        const by = req.query.by ?? 'runtime';
        if (!(COST_GROUPS as readonly string[]).includes(by))
          throw new HttpError(400, `by: "${by}" is not a grouping; use one of ${COST_GROUPS.join(', ')}`);
        const since = parseDurationMs(req.query.since ?? '7d');
        if (!since.ok) throw new HttpError(400, `since: ${since.message}`);
        return finishedJobsCost(
          box.store,
          { by: by as CostGroup, sinceMs: since.value, tenant: tenantOf(req) },
          (j) => box.runtimes.get(j.runtime).capabilities.memoryOverheadBytes(j.spec.limits),
          box.prices,
        );
      });

      v1.get<{ Params: { id: string }; Querystring: { wait?: string } }>('/jobs/:id', async (req) => {
        let job = await ownJob(req);
        if (req.query.wait === undefined) return jobView(job);
        const wait = parseDurationMs(req.query.wait);
        if (!wait.ok) throw new HttpError(400, `wait: ${wait.message}`);
        const deadline = Date.now() + Math.min(wait.value, MAX_WAIT_MS);
        while (!isTerminal(job.state) && Date.now() < deadline) {
          await scheduler.nextChange(job.id, Math.min(1000, deadline - Date.now()));
          job = (await box.store.getJob(job.id)) as JobRecord;
        }
        return jobView(job);
      });

      v1.post<{ Params: { id: string } }>('/jobs/:id/cancel', async (req, reply) => {
        const job = await ownJob(req);
        const after = await box.store.requestCancel(job.id, `token:${req.token?.id}`);
        scheduler.cancelLocal(job.id);
        scheduler.announce(job.id);
        return reply.code(202).send(jobView(after));
      });

      v1.get<{ Params: { id: string }; Querystring: { follow?: string } }>(
        '/jobs/:id/logs',
        async (req, reply: FastifyReply) => {
          const job = await ownJob(req);
          const follow =
            req.query.follow === 'true' ||
            req.query.follow === '1' ||
            (req.headers.accept ?? '').includes('text/event-stream');
          // Another node ran it: its log is there, and that node is asked for it.
          const remote = await remoteLog(box, job);
          if (remote && !follow) {
            reply.hijack();
            return relayLog(box, remote, false, req.raw, reply.raw);
          }
          if (!follow) return reply.type('text/plain; charset=utf-8').send(await readLogs(box, job));
          const open = follows.get(job.tenant) ?? 0;
          const cap = box.config.api.max_follows_per_tenant;
          if (open >= cap)
            throw new HttpError(
              429,
              `tenant ${job.tenant} already follows ${open} logs, its most (api.max_follows_per_tenant ${cap}); close one or read without follow`,
            );
          follows.set(job.tenant, open + 1);
          reply.hijack();
          try {
            if (remote) await relayLog(box, remote, true, req.raw, reply.raw);
            else await streamLogs(box, scheduler, job, req.raw, reply.raw);
          } finally {
            const left = (follows.get(job.tenant) ?? 1) - 1;
            if (left) follows.set(job.tenant, left);
            else follows.delete(job.tenant);
          }
        },
      );

      // A job's artifacts, as the tar they were kept in, until they expire.
      v1.get<{ Params: { id: string } }>('/jobs/:id/artifacts', async (req, reply) => {
        const job = await ownJob(req);
        const kept = job.handle?.attributes.workspace?.artifacts;
        if (!kept) throw new HttpError(404, `job ${job.id} kept no artifacts`);
        if (kept.expiresAt < Date.now() || !(await box.workspaces.artifacts.blobs.has(kept.digest)))
          throw new HttpError(410, `the artifacts of job ${job.id} expired`);
        return reply
          .type('application/x-tar')
          .header('content-disposition', `attachment; filename="${job.name}-artifacts.tar"`)
          .header('digest', `sha-256=${Buffer.from(kept.digest.slice(7), 'hex').toString('base64')}`)
          .send(createReadStream(box.workspaces.artifacts.blobs.path(kept.digest)));
      });

      if (pipelines) {
        /** The tenant's own pipeline, or 404. */
        const ownPipeline = async (req: FastifyRequest<{ Params: { id: string } }>) => {
          const p = await box.store.getPipeline(req.params.id);
          if (!p || p.tenant !== tenantOf(req)) throw new HttpError(404, `no pipeline ${req.params.id}`);
          return p;
        };
        const view = async (p: PipelineRecord) =>
          pipelineView(p, await pipelineJobs(p, (id) => box.store.getJob(id)));

        v1.post('/pipelines', async (req, reply) => {
          const tenant = tenantSettings(box.config.tenants, tenantOf(req));
          const file = bodyAs(req.body, pipelineSpecFor(tenant), 'pipeline');
          const p = await pipelines.submit({
            tenant: tenant.name,
            plan: planOf(file),
            origin: { via: 'api', actor: `token:${req.token?.id}` },
          });
          return reply.code(201).send(await view(p));
        });

        v1.get<{ Querystring: { state?: string; limit?: string } }>('/pipelines', async (req) => {
          const states = req.query.state?.split(',').filter(Boolean);
          for (const st of states ?? [])
            if (!(PIPELINE_STATES as readonly string[]).includes(st))
              throw new HttpError(
                400,
                `state: "${st}" is not a pipeline state; use one of ${PIPELINE_STATES.join(', ')}`,
              );
          const limit = req.query.limit === undefined ? 50 : Number(req.query.limit);
          if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
            throw new HttpError(400, `limit: "${req.query.limit}" must be a whole number from 1 to 1000`);
          const list = await box.store.listPipelines({
            tenant: tenantOf(req),
            states: states as PipelineState[],
            limit,
          });
          return Promise.all(list.map(view));
        });

        v1.get<{ Params: { id: string }; Querystring: { wait?: string } }>('/pipelines/:id', async (req) => {
          let p = await ownPipeline(req);
          if (req.query.wait !== undefined) {
            const wait = parseDurationMs(req.query.wait);
            if (!wait.ok) throw new HttpError(400, `wait: ${wait.message}`);
            const deadline = Date.now() + Math.min(wait.value, MAX_WAIT_MS);
            while (p.state === 'running' && Date.now() < deadline) {
              await new Promise((r) => setTimeout(r, 200));
              p = (await box.store.getPipeline(p.id)) as PipelineRecord;
            }
          }
          return view(p);
        });

        v1.post<{ Params: { id: string } }>('/pipelines/:id/cancel', async (req, reply) => {
          const p = await ownPipeline(req);
          const after = await pipelines.cancel(p.id, `token:${req.token?.id}`);
          return reply.code(202).send(await view(after ?? p));
        });
      }

      /** A webhook delivery of the tenant's: pending, or the jobs it queued (or why it queued none). */
      v1.get<{ Params: { id: string } }>('/deliveries/:id', async (req) => {
        const d = await box.store.getDelivery(req.params.id);
        if (!d || d.tenant !== tenantOf(req)) throw new HttpError(404, `no delivery ${req.params.id}`);
        return {
          id: d.id,
          forge: d.forge,
          state: d.state,
          jobs: d.jobs,
          error: d.error,
          receivedAt: d.receivedAt,
        };
      });

      v1.get('/node', async (req) => {
        requireOperator(req.token as ApiToken);
        return nodeStatus(box, scheduler);
      });
      // An operator warming this node's cache: the image pulled here (from peers where they hold it).
      v1.post('/images/pull', async (req) => {
        requireOperator(req.token as ApiToken);
        const { image } = parseOrThrow(ImagePullBody, req.body, 'body');
        const { ref } = await box.puller.pin(image);
        const pulled = await box.puller.pull(ref);
        return { ref, digest: pulled.digest, ...pulled.pull };
      });
    },
    { prefix: '/v1' },
  );
  return app;
}
