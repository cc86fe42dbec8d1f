import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Boxcar } from '../boxcar.js';
import { UserError } from '../errors.js';
import { parseYaml } from '../config/yaml.js';
import { parseDurationMs } from '../jobs/quantity.js';
import { JobSpec } from '../jobs/spec.js';
import { isTerminal, JOB_STATES, type JobState } from '../jobs/states.js';
import { parseOrThrow } from '../jobs/validation.js';
import { metricsText } from '../observability/metrics.js';
import { acceptJob, JobRefused } from '../scheduler/intake.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { JobRecord } from '../store/store.js';
import { registerGithubWebhook } from './github-webhook.js';
import { jobView } from './job-view.js';
import { streamLogs, readLogs } from './logs.js';
import { bearerToken, tokenHash } from './tokens.js';

/**
 * The HTTP API of a serving node. Every /v1 route needs a tenant's token; a tenant sees and
 * cancels only its own jobs (another tenant's job is a 404, as if it did not exist). Bad input
 * gets a 4xx naming the field; nothing a client sends can take the server down.
 */
const BODY_LIMIT = 1024 * 1024;
const MAX_WAIT_MS = 10 * 60_000;
const YAML_TYPES = ['application/yaml', 'application/x-yaml', 'text/yaml'];

declare module 'fastify' {
  interface FastifyRequest {
    tenant: string;
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

export function buildApi(box: Boxcar, scheduler: Scheduler): FastifyInstance {
  const app = Fastify({ bodyLimit: BODY_LIMIT, logger: false });
  app.decorateRequest('tenant', '');
  app.addContentTypeParser(YAML_TYPES, { parseAs: 'string' }, (_req, body, done) => done(null, body));
  // As fastify's, but an empty body is no body (a POST /cancel from a client that always sends the header).
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    if (body === '') return done(null, undefined);
    try {
      done(null, JSON.parse(body as string));
    } catch (err) {
      done(new HttpError(400, `the body is not valid JSON: ${(err as Error).message}`), undefined);
    }
  });

  app.setErrorHandler((err: FastifyError | Error, req, reply) => {
    if (err instanceof JobRefused) return reply.code(422).send({ error: err.message, job: jobView(err.job) });
    if (err instanceof HttpError) return reply.code(err.statusCode).send({ error: err.message });
    if (err instanceof UserError) return reply.code(400).send({ error: err.message });
    if ((err as FastifyError).code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE')
      return reply.code(415).send({
        error: `content-type ${req.headers['content-type'] ?? '(none)'} is not accepted; send application/json or application/yaml`,
      });
    const status = (err as FastifyError).statusCode;
    if (status && status >= 400 && status < 500) return reply.code(status).send({ error: err.message });
    box.logger.error({ err, url: req.url, method: req.method }, 'API request failed');
    return reply.code(500).send({ error: `internal error: ${err.message}` });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: `no such endpoint: ${req.method} ${req.url.split('?')[0]}` }),
  );

  app.get('/healthz', async () => ({ ok: true }));
  registerGithubWebhook(app, box, scheduler);
  app.get('/metrics', async (_req, reply) => {
    const { contentType, text } = await metricsText();
    return reply.type(contentType).send(text);
  });

  app.register(
    async (v1) => {
      v1.addHook('onRequest', async (req) => {
        const token = bearerToken(req.headers.authorization);
        if (!token) throw new HttpError(401, 'missing API token: send "Authorization: Bearer <token>"');
        const tenant = await box.store.tenantOfToken(tokenHash(token));
        if (!tenant) throw new HttpError(401, 'unknown API token: create one with `boxcar token create`');
        req.tenant = tenant;
      });

      /** The tenant's own job, or 404 (another tenant's job does not exist for it). */
      const ownJob = async (req: FastifyRequest<{ Params: { id: string } }>): Promise<JobRecord> => {
        const job = await box.store.getJob(req.params.id);
        if (!job || job.tenant !== req.tenant) throw new HttpError(404, `no job ${req.params.id}`);
        return job;
      };

      v1.post('/jobs', async (req, reply) => {
        const spec =
          typeof req.body === 'string'
            ? parseYaml(req.body, 'job', JobSpec)
            : parseOrThrow(JobSpec, req.body ?? {}, 'job');
        const job = await acceptJob(box, scheduler.placement, { tenant: req.tenant, spec });
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
        const jobs = await box.store.listJobs({ tenant: req.tenant, states: states as JobState[], limit });
        return jobs.map(jobView);
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
        const after = await box.store.requestCancel(job.id);
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
          if (!follow) return reply.type('text/plain; charset=utf-8').send(await readLogs(box, job));
          reply.hijack();
          await streamLogs(box, scheduler, job, req.raw, reply.raw);
        },
      );

      v1.get('/node', async () => ({
        node: scheduler.owner,
        capacity: scheduler.placement.capacity,
        requested: scheduler.placement.used,
        running: scheduler.running,
        memory: process.memoryUsage(),
        runtimes: await box.runtimes.fingerprintAll(),
        runtimeStatus: await box.runtimes.status(),
      }));
    },
    { prefix: '/v1' },
  );
  return app;
}
