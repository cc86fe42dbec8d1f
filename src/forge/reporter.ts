import { z } from 'zod';
import type { WebhooksConfig } from '../config/config.js';
import type { JobState } from '../jobs/states.js';
import type { Logger } from '../observability/logger.js';
import type { JobOrigin, JobRecord, Store } from '../store/store.js';
import {
  jobDescription,
  forgeOrigin,
  statusState,
  type CommitStatus,
  type Forge,
  type StatusState,
} from './commit-status.js';
import { AppAuth, tokenAuth } from './github/auth.js';
import { githubStatusSender } from './github/statuses.js';
import { gitlabStatusSender } from './gitlab/statuses.js';
import { DEFAULT_QUEUE, StatusQueue, type SendStatus, type StatusQueueOptions } from './status-queue.js';

/**
 * A pipeline as its record says it (pipelines/ and the store's PipelineRecord fit this shape):
 * its origin says which forge, repository, commit and delivery it belongs to.
 */
export interface PipelineChange {
  id: string;
  name: string;
  state: JobState;
  origin: JobOrigin;
  description?: string;
}

export interface ForgeReporter {
  /** A job changed (queued, started, ended): its commit status follows, later and off this path. */
  jobChanged(job: JobRecord): void;
  /** The same, for a pipeline's own status (context `boxcar/<pipeline>`). */
  pipelineChanged(pipeline: PipelineChange): void;
  /** Gives queued statuses up to `graceMs` to go out. */
  stop(graceMs: number): Promise<void>;
}

/** What GitLab's intake keeps in a delivery for statuses: the merge request's source project and branch. */
export const GitlabStatusTarget = z.object({
  project: z.union([z.number().int(), z.string().min(1)]),
  ref: z.string().min(1),
});
const GitlabDeliveryEvent = z.object({ gitlab: GitlabStatusTarget });

const PIPELINE_DESCRIPTION: Partial<Record<StatusState, string>> = {
  pending: 'pipeline queued',
  running: 'pipeline running',
  success: 'pipeline succeeded',
  failure: 'pipeline failed',
  canceled: 'pipeline cancelled',
  error: 'Boxcar could not run the pipeline',
};

class Reporter implements ForgeReporter {
  constructor(
    private readonly queue: StatusQueue,
    private readonly forges: ReadonlySet<Forge>,
    private readonly store: Pick<Store, 'getDelivery'>,
    private readonly publicUrl: string,
    private readonly logger: Logger,
  ) {}

  jobChanged(job: JobRecord): void {
    const origin = forgeOrigin(job.origin);
    if (!origin || !this.forges.has(origin.forge)) return;
    const pipeline = job.spec.env.BOXCAR_PIPELINE;
    this.report(origin.forge, origin.delivery, {
      repository: origin.repository,
      commit: origin.commit,
      context: pipeline ? `boxcar/${pipeline}/${job.name}` : `boxcar/${job.name}`,
      state: statusState(job.state),
      description: jobDescription(job),
      targetUrl: `${this.publicUrl}/v1/jobs/${encodeURIComponent(job.id)}/logs`,
    });
  }

  pipelineChanged(p: PipelineChange): void {
    const origin = forgeOrigin(p.origin);
    if (!origin || !this.forges.has(origin.forge)) return;
    const state = statusState(p.state);
    this.report(origin.forge, origin.delivery, {
      repository: origin.repository,
      commit: origin.commit,
      context: `boxcar/${p.name}`,
      state,
      description: p.description ?? PIPELINE_DESCRIPTION[state] ?? state,
      targetUrl: `${this.publicUrl}/v1/pipelines/${encodeURIComponent(p.id)}`,
    });
  }

  stop(graceMs: number): Promise<void> {
    return this.queue.stop(graceMs);
  }

  private report(forge: Forge, delivery: string, s: Omit<CommitStatus, 'forge'>): void {
    if (forge === 'github') return this.queue.push({ forge, ...s });
    // GitLab wants the status on the merge request's source branch, in its own project.
    this.gitlabTarget(delivery)
      .then((target) => this.queue.push({ forge, ...s, repository: String(target.project), ref: target.ref }))
      .catch((err: unknown) =>
        this.logger.error({ err, delivery, status: s }, 'no GitLab status: its delivery is unreadable'),
      );
  }

  private async gitlabTarget(delivery: string): Promise<z.output<typeof GitlabStatusTarget>> {
    const d = await this.store.getDelivery(delivery);
    if (!d) throw new Error(`delivery ${delivery} is gone (deliveries are kept 8 days)`);
    return GitlabDeliveryEvent.parse(d.event).gitlab;
  }
}

/**
 * The reporter for the forges this node has credentials for (GitHub: `webhooks.github.token`
 * or `.app`; GitLab: `webhooks.gitlab.token`), or undefined when there is none.
 */
export function forgeReporter(
  config: WebhooksConfig,
  store: Pick<Store, 'getDelivery'>,
  logger: Logger,
  opts: { publicUrl: string; queue?: StatusQueueOptions },
): ForgeReporter | undefined {
  const senders = new Map<Forge, SendStatus>();
  const { github, gitlab } = config;
  const githubApi = github.apiUrl.replace(/\/+$/, '');
  if (github.app)
    senders.set(
      'github',
      githubStatusSender(githubApi, new AppAuth(githubApi, github.app.id, github.app.privateKeyFile)),
    );
  else if (github.token) senders.set('github', githubStatusSender(githubApi, tokenAuth(github.token)));
  if (gitlab.token)
    senders.set('gitlab', gitlabStatusSender(gitlab.apiUrl.replace(/\/+$/, ''), gitlab.token));
  if (!senders.size) return undefined;
  const log = logger.child({ component: 'forge-status' });
  const send: SendStatus = (s, signal) => (senders.get(s.forge) as SendStatus)(s, signal);
  const queue = new StatusQueue(send, log, opts.queue ?? DEFAULT_QUEUE);
  return new Reporter(queue, new Set(senders.keys()), store, opts.publicUrl.replace(/\/+$/, ''), log);
}
