import { randomUUID } from 'node:crypto';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { pipelineJobs, pipelineView } from '../api/job-view.js';
import { readLogs } from '../api/logs.js';
import type { Boxcar } from '../boxcar.js';
import { costReport, priceJob, type PricedJob } from '../cost/allocation.js';
import { TERMINAL_STATES, type JobState } from '../jobs/states.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { JobRecord } from '../store/store.js';
import { registerAuth } from './auth.js';
import { costByDay, DAY_MS } from './cost-by-day.js';
import { operatorStatus } from './fleet-status.js';
import { JobFeed } from './job-feed.js';
import { streamJobLog } from './log-stream.js';
import { costPage } from './pages/cost.js';
import { fleetPage } from './pages/fleet.js';
import { jobPage } from './pages/job.js';
import { jobRow, jobsPage } from './pages/jobs.js';
import { messagePage } from './pages/login.js';
import { pipelinePage } from './pages/pipeline.js';
import { sendHtml, sendNotFound } from './respond.js';
import { openEventStream } from './sse.js';
import { loadStaticFiles } from './static.js';
import { canSee, tenantFilter, type Viewer } from './viewer.js';

export interface DashboardOptions {
  box: Boxcar;
  scheduler: Scheduler;
}

/** Scripts and styles only from this server, no inline ones, no framing, forms only to here. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const ListQuery = z.object({ limit: z.coerce.number().int().min(1).max(1000).default(100) });
const LIVE_STATES: JobState[] = ['queued', 'starting', 'running'];
/** The jobs the fleet page's figures are drawn from (the newest). */
const FLEET_JOBS = 5000;
const COST_DAYS = 14;
/** The most finished jobs the cost page prices (the newest). */
const COST_JOBS_MAX = 100_000;

/**
 * The dashboard, served by `boxcar serve` at `/`: a login with an API token (kept server-side;
 * the browser holds a random session id in an HttpOnly, SameSite=Strict cookie), the live job
 * list, each job with its live log, pipelines with their DAG, the fleet and the cost. A tenant
 * sees only its own jobs (another's is "not found"); an operator sees every tenant's and the node.
 */
export async function dashboard(app: FastifyInstance, { box, scheduler }: DashboardOptions): Promise<void> {
  const feed = new JobFeed(box, scheduler);
  const files = await loadStaticFiles();
  const follows = new Map<string, number>();
  // Live streams never end by themselves: a node that stops ends them, or its close would wait forever.
  const closing = new AbortController();
  app.addHook('preClose', async () => closing.abort());

  app.addHook('onSend', async (_req, reply) => {
    reply.header('content-security-policy', CSP);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'same-origin');
    reply.header('x-frame-options', 'DENY');
  });
  app.setErrorHandler(async (err: FastifyError, req, reply) => {
    // A request fastify itself refused (a body too large, a malformed form): say why.
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500)
      return reply
        .code(err.statusCode)
        .type('text/html; charset=utf-8')
        .send(messagePage('Refused', err.message));
    const ref = randomUUID();
    box.logger.error({ err, url: req.url, method: req.method, ref }, 'dashboard request failed');
    return reply
      .code(500)
      .type('text/html; charset=utf-8')
      .send(messagePage('Something went wrong', `internal error (reference ${ref} in the server's log)`));
  });

  const viewerOf = registerAuth(app, box);
  /** A page that needs a login: the login form otherwise. */
  const page = <R extends FastifyRequest>(
    render: (req: R, reply: FastifyReply, v: Viewer) => Promise<unknown>,
  ): ((req: R, reply: FastifyReply) => Promise<unknown>) => {
    return async (req, reply) => {
      const v = await viewerOf(req);
      if (!v) return reply.redirect('/ui/login', 303);
      return render(req, reply, v);
    };
  };
  /** The job if the viewer may see it (another tenant's does not exist for it). */
  const visibleJob = async (id: string, v: Viewer) => {
    const job = await box.store.getJob(id);
    return job && canSee(v, job) ? job : undefined;
  };

  app.get<{ Params: { file: string } }>('/ui/static/:file', async (req, reply) => {
    const f = files.get(req.params.file);
    if (!f) return sendNotFound(reply, 'such file');
    const gzip = /\bgzip\b/.test(req.headers['accept-encoding'] ?? '');
    if (gzip) reply.header('content-encoding', 'gzip');
    return reply
      .header('cache-control', 'no-cache')
      .header('vary', 'accept-encoding')
      .type(f.type)
      .send(gzip ? f.gzip : f.body);
  });

  app.get(
    '/',
    page(async (req, reply, v) => {
      const q = ListQuery.safeParse(req.query);
      if (!q.success)
        return sendHtml(reply, messagePage('Bad request', 'limit: use a whole number from 1 to 1000'), 400);
      const limit = q.data.limit;
      const jobs = await box.store.listJobs({ ...tenantFilter(v), limit });
      return sendHtml(reply, jobsPage(jobs, v, limit));
    }),
  );

  app.get('/ui/events/jobs', async (req, reply) => {
    const v = await viewerOf(req);
    if (!v) return reply.code(401).send({ error: 'log in first' });
    reply.hijack();
    const stream = openEventStream(req.raw, reply.raw, closing.signal);
    const pending = new Map<string, JobRecord>();
    let busy = false;
    // Sends what changed, coalesced per job while the browser is slow: memory stays bounded.
    const pump = async () => {
      if (busy) return;
      busy = true;
      try {
        while (pending.size && !stream.gone.aborted) {
          const batch = [...pending.values()];
          pending.clear();
          await stream.send(batch.map((j) => ({ id: j.id, html: jobRow(j, v).text })));
        }
      } finally {
        busy = false;
      }
    };
    const queue = (jobs: JobRecord[]) => {
      for (const j of jobs) if (canSee(v, j)) pending.set(j.id, j);
      pump().catch((err: unknown) => box.logger.error({ err }, 'dashboard: sending job changes failed'));
    };
    const unsubscribe = feed.subscribe(queue);
    try {
      // What changed between the page's rendering and this stream: the live and newest jobs as they are.
      const [live, newest] = await Promise.all([
        box.store.listJobs({ ...tenantFilter(v), states: LIVE_STATES, limit: 1000 }),
        box.store.listJobs({ ...tenantFilter(v), limit: 100 }),
      ]);
      queue([...newest.reverse(), ...live]);
      if (!stream.gone.aborted)
        await new Promise((r) => stream.gone.addEventListener('abort', r, { once: true }));
    } finally {
      unsubscribe();
      stream.end();
    }
  });

  app.get<{ Params: { id: string } }>(
    '/ui/jobs/:id',
    page(async (req, reply, v) => {
      const job = await visibleJob(req.params.id, v);
      return job ? sendHtml(reply, jobPage(job, v)) : sendNotFound(reply, `job ${req.params.id}`);
    }),
  );
  app.get<{ Params: { id: string } }>(
    '/ui/jobs/:id/log.txt',
    page(async (req, reply, v) => {
      const job = await visibleJob(req.params.id, v);
      if (!job) return sendNotFound(reply, `job ${req.params.id}`);
      return reply.type('text/plain; charset=utf-8').send(await readLogs(box, job));
    }),
  );
  app.get<{ Params: { id: string } }>('/ui/jobs/:id/log', async (req, reply) => {
    const v = await viewerOf(req);
    if (!v) return reply.code(401).send({ error: 'log in first' });
    const job = await visibleJob(req.params.id, v);
    if (!job) return reply.code(404).send({ error: `no job ${req.params.id}` });
    // The API's cap on a tenant's open log streams holds for the dashboard's too.
    const open = follows.get(job.tenant) ?? 0;
    const cap = box.config.api.max_follows_per_tenant;
    if (open >= cap)
      return reply.code(429).send({
        error: `tenant ${job.tenant} already follows ${open} logs here (api.max_follows_per_tenant ${cap})`,
      });
    follows.set(job.tenant, open + 1);
    reply.hijack();
    try {
      await streamJobLog(box, scheduler, job, req.raw, reply.raw, closing.signal);
    } finally {
      const left = (follows.get(job.tenant) ?? 1) - 1;
      if (left) follows.set(job.tenant, left);
      else follows.delete(job.tenant);
    }
  });

  app.get<{ Params: { id: string } }>(
    '/ui/pipelines/:id',
    page(async (req, reply, v) => {
      const p = await box.store.getPipeline(req.params.id);
      if (!p || !canSee(v, p)) return sendNotFound(reply, `pipeline ${req.params.id}`);
      const view = pipelineView(p, await pipelineJobs(p, (id) => box.store.getJob(id)));
      return sendHtml(reply, pipelinePage(view, v));
    }),
  );

  app.get(
    '/ui/fleet',
    page(async (_req, reply, v) => {
      const jobs = await box.store.listJobs({ ...tenantFilter(v), limit: FLEET_JOBS });
      const operator = v.role === 'operator' ? await operatorStatus(box, scheduler) : undefined;
      return sendHtml(reply, fleetPage(jobs, v, operator));
    }),
  );

  app.get(
    '/ui/cost',
    page(async (_req, reply, v) => {
      const from = Math.floor(Date.now() / DAY_MS) * DAY_MS - (COST_DAYS - 1) * DAY_MS;
      const jobs = (
        await box.store.listJobs({ ...tenantFilter(v), states: [...TERMINAL_STATES], limit: COST_JOBS_MAX })
      ).filter((j) => j.durationMs !== null && (j.finishedAt ?? 0) >= from);
      const overheadOf = (j: PricedJob) =>
        box.runtimes.get(j.runtime).capabilities.memoryOverheadBytes(j.spec.limits);
      const days = costByDay(jobs, from, COST_DAYS, (j) => priceJob(j, overheadOf(j), box.prices).total);
      const byRuntime = costReport(jobs, 'runtime', overheadOf, box.prices);
      const byTrust = costReport(jobs, 'trust', overheadOf, box.prices);
      return sendHtml(reply, costPage(days, byRuntime, byTrust, v, COST_DAYS));
    }),
  );
}
