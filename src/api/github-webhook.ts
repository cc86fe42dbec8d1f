import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { z } from 'zod';
import type { Boxcar } from '../boxcar.js';
import { errorMessage, UserError } from '../lib/errors.js';
import { parseYaml } from '../lib/yaml.js';
import { JOB_FILE, planOf } from '../pipelines/plan.js';
import { githubPullRequestTrust } from '../policy/webhooks.js';
import type { PipelineRunner } from '../scheduler/pipelines.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { Delivery, NewDelivery } from '../store/store.js';
import { pipelineSpecFor } from '../tenants/limits.js';
import { tenantForRepository, tenantSettings } from '../tenants/tenant-config.js';

const RUN_ON = ['opened', 'reopened', 'synchronize'];
/** GitHub retries a delivery for up to three days; a week covers it and manual redeliveries. */
export const DELIVERY_RETENTION_MS = 8 * 24 * 3600_000;
const FETCH_CONCURRENCY = 4;
const DELIVERY_LEASE_MS = 5 * 60_000;
const SWEEP_MS = 1000;
const PRUNE_EVERY_MS = 3600_000;

const PullRequestEvent = z.object({
  action: z.string(),
  number: z.number(),
  pull_request: z.object({
    head: z.object({
      sha: z.string().regex(/^[0-9a-f]{40}$/),
      repo: z.object({ clone_url: z.string() }).nullable(),
    }),
  }),
  repository: z.object({ full_name: z.string() }),
});

/**
 * What a delivery keeps for its worker: the few fields it needs and the classifier's verdict.
 * Every forge's intake stores this shape (GitLab: `number` is the merge request's iid); fields
 * of a forge's own (where its statuses go) ride along and are read by src/forge.
 */
const DeliveryEvent = z.object({
  number: z.number(),
  repository: z.string(),
  headSha: z.string(),
  cloneUrl: z.string(),
  classifier: z.object({
    source: z.string().optional(),
    userGroup: z.string().optional(),
    repository: z.string().optional(),
    evidence: z.array(z.string()),
  }),
});
export type DeliveryEvent = z.output<typeof DeliveryEvent>;

export function signatureValid(secret: string, body: Buffer, header: string | undefined): boolean {
  const expected = Buffer.from(`sha256=${createHmac('sha256', secret).update(body).digest('hex')}`);
  const given = Buffer.from(header ?? '');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * Turns remembered deliveries into jobs. Any node sharing the store may take a pending
 * delivery (held by lease, so one that died mid-way is taken up again); deliveries of one pull
 * request are handled one after the other on a node, in the order they came.
 */
export class DeliveryWorker {
  readonly owner: string;
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private readonly groups = new Map<string, Promise<void>>();
  private readonly running = new Set<Promise<void>>();
  private lastPrune = 0;
  private stopped = false;

  constructor(
    private readonly box: Boxcar,
    private readonly scheduler: Scheduler,
    private readonly pipelines: PipelineRunner,
  ) {
    this.owner = scheduler.owner;
  }

  start(): void {
    this.timer = setInterval(() => this.notify(), SWEEP_MS);
    this.notify();
  }

  /** Looks for pending deliveries now. */
  notify(): void {
    if (this.stopped || this.sweeping) return;
    this.sweeping = this.sweep()
      .catch((err: unknown) => this.box.logger.error({ err }, 'webhook delivery sweep failed'))
      .finally(() => (this.sweeping = undefined));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.sweeping;
    await Promise.allSettled([...this.running]);
  }

  private async sweep(): Promise<void> {
    const { store } = this.box;
    if (Date.now() - this.lastPrune > PRUNE_EVERY_MS) {
      this.lastPrune = Date.now();
      await store.pruneDeliveries(Date.now() - DELIVERY_RETENTION_MS);
    }
    const free = FETCH_CONCURRENCY - this.inFlight;
    if (free <= 0) return;
    for (const d of await store.claimDeliveries(this.owner, Date.now() + DELIVERY_LEASE_MS, free)) {
      const group = `${d.forge}:${String(d.event.repository)}#${String(d.event.number)}`;
      this.inFlight++;
      const done = (this.groups.get(group) ?? Promise.resolve())
        .then(() => this.handle(d, group))
        .finally(() => {
          this.inFlight--;
          if (this.groups.get(group) === done) this.groups.delete(group);
          this.running.delete(done);
          this.notify();
        });
      this.groups.set(group, done);
      this.running.add(done);
    }
  }

  private async handle(d: Delivery, group: string): Promise<void> {
    const log = this.box.logger.child({ delivery: d.id });
    try {
      const { jobs, refused } = await this.queueJobs(d, group, DeliveryEvent.parse(d.event));
      await this.box.store.settleDelivery(d.id, 'done', {
        jobs,
        ...(refused.length ? { error: refused.join('; ') } : {}),
      });
      this.scheduler.notify();
    } catch (err) {
      if (!(err instanceof UserError)) log.error({ err }, 'handling a webhook delivery failed');
      await this.box.store.settleDelivery(d.id, 'failed', { error: errorMessage(err) });
    }
  }

  private async queueJobs(
    d: Delivery,
    group: string,
    ev: DeliveryEvent,
  ): Promise<{ jobs: string[]; refused: string[] }> {
    const { box, scheduler } = this;
    const tenant = tenantSettings(box.config.tenants, d.tenant);
    const text = await box.mirrors.show(ev.cloneUrl, ev.headSha, JOB_FILE).catch((err: unknown) => {
      throw err instanceof UserError ? new UserError(`cannot read ${JOB_FILE}: ${err.message}`) : err;
    });
    const file = parseYaml(
      text,
      `${ev.repository}@${ev.headSha.slice(0, 12)}:${JOB_FILE}`,
      pipelineSpecFor(tenant),
    );
    const actor = `webhook:${d.forge}:${d.id}`;
    // A new push makes the pipelines of the pull request's earlier pushes moot (GitLab's and
    // GitHub's "auto-cancel redundant pipelines").
    const live = await box.store.listJobs({
      group,
      states: ['queued', 'starting', 'running'],
      limit: 10_000,
    });
    const why = `superseded by a newer push (${ev.headSha.slice(0, 12)})`;
    for (const old of live.filter((j) => j.origin.commit !== ev.headSha && j.createdAt < d.receivedAt)) {
      if (old.origin.pipeline) await this.pipelines.cancel(old.origin.pipeline, actor);
      await box.store.requestCancel(old.id, actor, why);
      scheduler.cancelLocal(old.id);
      scheduler.announce(old.id);
    }
    // Every job checks out the pull request's head commit, unless it names its own checkout.
    const plan = planOf({
      ...file,
      checkout: file.checkout ?? { url: ev.cloneUrl, commit: ev.headSha, submodules: false },
    });
    for (const job of plan.jobs)
      job.spec.env = {
        ...job.spec.env,
        BOXCAR_REPOSITORY: ev.repository,
        BOXCAR_SHA: ev.headSha,
        BOXCAR_PULL_REQUEST: String(ev.number),
        BOXCAR_PIPELINE: plan.name,
      };
    const p = await this.pipelines.submit({
      tenant: tenant.name,
      plan,
      origin: { via: 'webhook', actor, repository: ev.repository, group, commit: ev.headSha },
      classifier: ev.classifier,
    });
    const jobs = Object.values(p.jobs).flatMap((s) => s.attempts);
    const refused = Object.entries(p.jobs).flatMap(([name, s]) => (s.error ? [`${name}: ${s.error}`] : []));
    return { jobs, refused };
  }
}

/**
 * Remembers a forge's delivery (a replay of one seen already is a no-op, answered 200) and wakes
 * the worker; answers 202 at once, before any job is queued.
 */
export async function rememberDelivery(
  box: Boxcar,
  worker: DeliveryWorker,
  reply: FastifyReply,
  d: Omit<NewDelivery, 'receivedAt'>,
): Promise<FastifyReply> {
  const added = await box.store.addDelivery({ ...d, receivedAt: Date.now() });
  if (!added) return reply.code(200).send({ delivery: d.id, duplicate: true });
  worker.notify();
  return reply.code(202).send({ delivery: d.id, state: 'pending' });
}

/**
 * GitHub webhook intake. The body is authenticated by its `X-Hub-Signature-256` HMAC (checked
 * in constant time, before anything in it is read); a bad or missing signature queues nothing.
 * A pull request opened, reopened or pushed to is remembered by its `X-GitHub-Delivery` id (a
 * replay of the same delivery is a no-op for as long as deliveries are kept) and answered at
 * once; a worker then fetches the repository's `.boxcar.yml` at the head commit, off the
 * request path, a few at a time and with a timeout, cancels the jobs of the pull request's
 * earlier pushes, and queues the file's jobs with the trust the classifier gives the payload
 * (a fork's code is untrusted whatever its job file says), for the tenant the repository maps to.
 */
export function registerGithubWebhook(app: FastifyInstance, box: Boxcar, worker: DeliveryWorker): void {
  app.register(
    async (hooks) => {
      // The signature covers the bytes as sent: keep them.
      hooks.removeContentTypeParser('application/json');
      hooks.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) =>
        done(null, body),
      );
      hooks.post('/github', async (req, reply) => {
        const github = box.config.webhooks.github;
        if (!github.secret)
          return reply.code(404).send({
            error: 'GitHub webhooks are not configured: set webhooks.github.secret in the config file',
          });
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const signature = req.headers['x-hub-signature-256'];
        if (!signatureValid(github.secret, body, typeof signature === 'string' ? signature : undefined)) {
          box.logger.warn({ ip: req.ip }, 'GitHub webhook with a bad or missing signature refused');
          return reply.code(401).send({ error: 'bad or missing X-Hub-Signature-256: nothing was queued' });
        }
        const event = req.headers['x-github-event'];
        if (event === 'ping') return { ok: true };
        if (event !== 'pull_request') return reply.code(202).send({ ignored: `event ${String(event)}` });
        const delivery = req.headers['x-github-delivery'];
        if (typeof delivery !== 'string' || !/^[A-Za-z0-9-]{1,100}$/.test(delivery))
          throw new UserError(
            'missing or malformed X-GitHub-Delivery header: GitHub sends one with every delivery',
          );
        let payload: unknown;
        try {
          payload = JSON.parse(body.toString('utf8'));
        } catch {
          throw new UserError('the body is not valid JSON');
        }
        const pr = PullRequestEvent.safeParse(payload);
        if (!pr.success) throw new UserError(`not a pull_request payload: ${pr.error.issues[0]?.message}`);
        if (!RUN_ON.includes(pr.data.action))
          return reply.code(202).send({ ignored: `action ${pr.data.action}` });
        const head = pr.data.pull_request.head;
        if (!head.repo) return reply.code(202).send({ ignored: 'the head repository was deleted' });
        const repository = pr.data.repository.full_name;
        const ev: DeliveryEvent = {
          number: pr.data.number,
          repository,
          headSha: head.sha,
          cloneUrl: head.repo.clone_url,
          classifier: githubPullRequestTrust(payload),
        };
        return rememberDelivery(box, worker, reply, {
          id: delivery,
          forge: 'github',
          tenant: tenantForRepository(github, repository),
          event: ev,
        });
      });
    },
    { prefix: '/v1/webhooks' },
  );
}
