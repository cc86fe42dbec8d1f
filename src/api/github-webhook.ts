import { createHmac, timingSafeEqual } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Boxcar } from '../boxcar.js';
import { UserError } from '../errors.js';
import { parseYaml } from '../config/yaml.js';
import { PipelineSpec, pipelineJobs } from '../jobs/pipeline.js';
import { githubPullRequestTrust } from '../policy/webhooks.js';
import { run } from '../runtimes/shared/exec.js';
import { acceptJob } from '../scheduler/intake.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import { jobView } from './job-view.js';

/**
 * GitHub webhook intake. The body is authenticated by its `X-Hub-Signature-256` HMAC (checked
 * in constant time, before anything in it is read); a bad or missing signature queues nothing.
 * A pull request opened, reopened or pushed to runs the jobs of the repository's own
 * `.boxcar.yml` (a pipeline file) at the pull request's head commit, with the trust the
 * classifier gives the payload: a fork's code is untrusted whatever its job file says.
 */
export const JOB_FILE = '.boxcar.yml';
const RUN_ON = ['opened', 'reopened', 'synchronize'];

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

export function signatureValid(secret: string, body: Buffer, header: string | undefined): boolean {
  const expected = Buffer.from(`sha256=${createHmac('sha256', secret).update(body).digest('hex')}`);
  const given = Buffer.from(header ?? '');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** The job file at one commit of a repository, fetched with git (shallow, that commit only). */
async function jobFileAt(cloneUrl: string, sha: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-fetch-'));
  try {
    await run('git', ['init', '-q', '--bare', dir]);
    await run('git', ['-C', dir, 'fetch', '-q', '--depth', '1', cloneUrl, sha], { timeoutMs: 60_000 });
    return (await run('git', ['-C', dir, 'show', `${sha}:${JOB_FILE}`])).stdout;
  } catch (err) {
    throw new UserError(`cannot read ${JOB_FILE} at ${sha} from ${cloneUrl}: ${(err as Error).message}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function registerGithubWebhook(app: FastifyInstance, box: Boxcar, scheduler: Scheduler): void {
  app.register(
    async (hooks) => {
      // The signature covers the bytes as sent: keep them.
      hooks.removeContentTypeParser('application/json');
      hooks.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_req, body, done) =>
        done(null, body),
      );
      hooks.post('/github', async (req, reply) => {
        const { secret, tenant } = box.config.webhooks.github;
        if (!secret)
          return reply.code(404).send({
            error: 'GitHub webhooks are not configured: set webhooks.github.secret in the config file',
          });
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const signature = req.headers['x-hub-signature-256'];
        if (!signatureValid(secret, body, typeof signature === 'string' ? signature : undefined))
          return reply.code(401).send({ error: 'bad or missing X-Hub-Signature-256: nothing was queued' });
        const event = req.headers['x-github-event'];
        if (event === 'ping') return { ok: true };
        if (event !== 'pull_request') return reply.code(202).send({ ignored: `event ${String(event)}` });
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
        const trust = githubPullRequestTrust(payload);
        const text = await jobFileAt(head.repo.clone_url, head.sha);
        const pipeline = parseYaml(
          text,
          `${pr.data.repository.full_name}@${head.sha.slice(0, 12)}:${JOB_FILE}`,
          PipelineSpec,
        );
        const jobs = [];
        for (const { spec } of pipelineJobs(pipeline)) {
          spec.env = {
            ...spec.env,
            BOXCAR_REPOSITORY: pr.data.repository.full_name,
            BOXCAR_SHA: head.sha,
            BOXCAR_PULL_REQUEST: String(pr.data.number),
          };
          jobs.push(await acceptJob(box, scheduler.placement, { tenant, spec, trust }));
        }
        scheduler.notify();
        return reply.code(202).send({ jobs: jobs.map(jobView) });
      });
    },
    { prefix: '/v1/webhooks' },
  );
}
