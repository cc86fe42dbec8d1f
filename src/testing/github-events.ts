import { createHmac, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';

/** A pull_request event as GitHub sends one (its own "opened" example from @octokit/webhooks-examples). */
export interface PullRequestEvent {
  number: number;
  pull_request: { head: { sha: string; repo: Record<string, unknown> } };
  repository: { full_name: string };
}

/**
 * GitHub's example of a pull request opened from a branch of the same repository (trusted),
 * pointed at `cloneUrl` (a local repository, for tests) at commit `sha`.
 */
export function pullRequestOpened(sha: string, cloneUrl: string): PullRequestEvent {
  const require = createRequire(import.meta.url);
  const examples = require('@octokit/webhooks-examples/api.github.com/index.json') as Array<{
    name: string;
    examples: Array<PullRequestEvent & { action: string }>;
  }>;
  const event = structuredClone(
    examples.find((e) => e.name === 'pull_request')?.examples.find((e) => e.action === 'opened'),
  ) as PullRequestEvent;
  event.pull_request.head.sha = sha;
  event.pull_request.head.repo = { ...event.pull_request.head.repo, clone_url: cloneUrl };
  return event;
}

/** Delivers `event` to a Boxcar's GitHub webhook, signed with `secret`, as GitHub would. */
export function postPullRequest(
  serverUrl: string,
  secret: string,
  event: PullRequestEvent,
): Promise<Response> {
  const body = JSON.stringify(event);
  return fetch(`${serverUrl}/v1/webhooks/github`, {
    method: 'POST',
    body,
    headers: {
      'content-type': 'application/json',
      'x-github-event': 'pull_request',
      'x-github-delivery': randomUUID(),
      'x-hub-signature-256': `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`,
    },
  });
}
