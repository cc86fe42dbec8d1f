import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadPolicy } from './load-policy.js';
import { classify } from './trust.js';
import { githubPullRequestTrust, gitlabMergeRequestTrust } from './webhooks.js';

const require = createRequire(import.meta.url);
const examples = require('@octokit/webhooks-examples/api.github.com/index.json') as Array<{
  name: string;
  examples: Array<Record<string, unknown>>;
}>;
const pullRequests = examples.find((e) => e.name === 'pull_request')?.examples ?? [];
const gitlabMr = JSON.parse(
  readFileSync(new URL('../../../src/policy/testdata/gitlab-merge-request.json', import.meta.url), 'utf8'),
) as Record<string, unknown>;

type Pr = { pull_request: { author_association: string; head: { repo: { full_name: string } | null } } };
const clone = <T>(x: T): T => structuredClone(x);

test('every published pull_request example (same repository, OWNER) is trusted', async () => {
  const policy = await loadPolicy();
  assert.ok(pullRequests.length >= 20, 'the examples package ships the pull_request payloads');
  for (const p of pullRequests) {
    const inputs = githubPullRequestTrust(p);
    assert.equal(
      classify(policy, inputs).trust,
      'trusted',
      `${String(p.action)}: ${inputs.evidence.join('; ')}`,
    );
  }
});

test('fork variants and outside authors are untrusted', async () => {
  const policy = await loadPolicy();
  const opened = pullRequests.find((p) => p.action === 'opened') as unknown as Pr;
  const fork = clone(opened);
  fork.pull_request.head.repo = {
    ...(fork.pull_request.head.repo as object),
    full_name: 'stranger/Hello-World',
  };
  fork.pull_request.author_association = 'FIRST_TIME_CONTRIBUTOR';
  assert.equal(classify(policy, githubPullRequestTrust(fork)).trust, 'untrusted');

  // A fork by a member is still code from outside the repository.
  const memberFork = clone(fork);
  memberFork.pull_request.author_association = 'MEMBER';
  assert.equal(githubPullRequestTrust(memberFork).source, 'external_pr');
  assert.equal(classify(policy, githubPullRequestTrust(memberFork)).trust, 'untrusted');

  // Same repository, but the author is not a collaborator (e.g. write access removed since).
  for (const assoc of ['CONTRIBUTOR', 'FIRST_TIMER', 'FIRST_TIME_CONTRIBUTOR', 'NONE', 'MANNEQUIN']) {
    const p = clone(opened);
    p.pull_request.author_association = assoc;
    assert.equal(classify(policy, githubPullRequestTrust(p)).trust, 'untrusted', assoc);
  }

  // The head repository was deleted: nothing says where the code came from.
  const deleted = clone(opened);
  deleted.pull_request.head.repo = null;
  assert.equal(classify(policy, githubPullRequestTrust(deleted)).trust, 'untrusted');
});

test('GitLab: same-project merge requests are trusted, forks are not', async () => {
  const policy = await loadPolicy();
  assert.equal(classify(policy, gitlabMergeRequestTrust(gitlabMr)).trust, 'trusted');
  const fork = clone(gitlabMr) as { object_attributes: Record<string, unknown> };
  fork.object_attributes.source_project_id = 4242;
  fork.object_attributes.source = { path_with_namespace: 'stranger/awesome_project' };
  const inputs = gitlabMergeRequestTrust(fork);
  assert.equal(classify(policy, inputs).trust, 'untrusted');
  assert.match(inputs.evidence.join(' '), /from stranger\/awesome_project \(a fork\)/);
  const gone = clone(gitlabMr) as { object_attributes: Record<string, unknown> };
  gone.object_attributes.source_project_id = null;
  gone.object_attributes.source = null;
  assert.equal(classify(policy, gitlabMergeRequestTrust(gone)).trust, 'untrusted');
});

test('a payload of the wrong kind is refused with the missing field named', () => {
  assert.throws(
    () => githubPullRequestTrust({ action: 'opened' }),
    /not a GitHub pull_request event payload: pull_request/,
  );
  assert.throws(
    () => gitlabMergeRequestTrust(pullRequests[0]),
    /not a GitLab merge request event payload: object_kind/,
  );
});
