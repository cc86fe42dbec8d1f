import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Boxcar } from '../boxcar.js';
import type { GitlabStatusTarget } from '../forge/reporter.js';
import { UserError } from '../lib/errors.js';
import { gitlabMergeRequestTrust } from '../policy/webhooks.js';
import { tenantForRepository } from '../tenants/tenant-config.js';
import { rememberDelivery, type DeliveryEvent, type DeliveryWorker } from './github-webhook.js';

/** Opened, reopened, and updated with new commits (GitLab sends `oldrev` only then). */
const RUN_ON = ['open', 'reopen'];

const MergeRequestEvent = z.object({
  object_kind: z.literal('merge_request'),
  object_attributes: z.object({
    iid: z.number().int(),
    action: z.string().optional(),
    oldrev: z.string().optional(),
    source_branch: z.string().min(1),
    source_project_id: z.number().int().nullable(),
    last_commit: z.object({ id: z.string().regex(/^[0-9a-f]{40}$/) }),
    source: z.object({ git_http_url: z.string().min(1) }).nullable(),
    target: z.object({ path_with_namespace: z.string().min(1) }),
  }),
});

/** Equal tokens, compared in constant time whatever their lengths (digests of equal size). */
export function tokenValid(secret: string, header: string | undefined): boolean {
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return header !== undefined && timingSafeEqual(digest(secret), digest(header));
}

/**
 * GitLab merge request webhooks at /v1/webhooks/gitlab. The `X-Gitlab-Token` is checked in
 * constant time before the body is read (a bad or missing one queues nothing: 401). A merge
 * request opened, reopened or updated with new commits is remembered by its
 * `X-Gitlab-Event-UUID` (a replay queues nothing) and handed to the same delivery worker as
 * GitHub's: `.boxcar.yml` at the merge request's last commit, fetched from its source project,
 * with the trust the classifier gives it (a fork's code is untrusted whatever its file says).
 */
export function registerGitlabWebhook(app: FastifyInstance, box: Boxcar, worker: DeliveryWorker): void {
  app.register(
    async (hooks) => {
      hooks.removeContentTypeParser('application/json');
      hooks.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) =>
        done(null, body),
      );
      // Before the body is read: an unauthenticated sender gets nothing of Boxcar's parsing.
      hooks.addHook('onRequest', async (req, reply) => {
        const { secret } = box.config.webhooks.gitlab;
        if (!secret)
          return reply.code(404).send({
            error: 'GitLab webhooks are not configured: set webhooks.gitlab.secret in the config file',
          });
        const token = req.headers['x-gitlab-token'];
        if (!tokenValid(secret, typeof token === 'string' ? token : undefined)) {
          box.logger.warn({ ip: req.ip }, 'GitLab webhook with a bad or missing token refused');
          return reply.code(401).send({ error: 'bad or missing X-Gitlab-Token: nothing was queued' });
        }
      });
      hooks.post('/gitlab', async (req, reply) => {
        const event = req.headers['x-gitlab-event'];
        if (event !== 'Merge Request Hook')
          return reply.code(202).send({ ignored: `event ${String(event)}` });
        const delivery = req.headers['x-gitlab-event-uuid'];
        if (typeof delivery !== 'string' || !/^[A-Za-z0-9-]{1,100}$/.test(delivery))
          throw new UserError(
            'missing or malformed X-Gitlab-Event-UUID header: GitLab sends one with every delivery',
          );
        let payload: unknown;
        try {
          payload = JSON.parse((Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0)).toString('utf8'));
        } catch {
          throw new UserError('the body is not valid JSON');
        }
        const mr = MergeRequestEvent.safeParse(payload);
        if (!mr.success) throw new UserError(`not a merge_request payload: ${mr.error.issues[0]?.message}`);
        const a = mr.data.object_attributes;
        const action = a.action ?? '';
        if (!RUN_ON.includes(action) && !(action === 'update' && a.oldrev))
          return reply.code(202).send({ ignored: `action ${action || '(none)'} without new commits` });
        if (!a.source || a.source_project_id === null)
          return reply.code(202).send({ ignored: 'the source project was deleted' });
        const repository = a.target.path_with_namespace;
        const ev: DeliveryEvent & { gitlab: z.input<typeof GitlabStatusTarget> } = {
          number: a.iid,
          repository,
          headSha: a.last_commit.id,
          cloneUrl: a.source.git_http_url,
          classifier: gitlabMergeRequestTrust(payload),
          gitlab: { project: a.source_project_id, ref: a.source_branch },
        };
        return rememberDelivery(box, worker, reply, {
          id: delivery,
          forge: 'gitlab',
          tenant: tenantForRepository(box.config.webhooks.gitlab, repository),
          event: ev,
        });
      });
    },
    { prefix: '/v1/webhooks' },
  );
}
