import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { leftovers, tempState } from '../testing/harness.js';
import { boxcarSync, exited, startServe } from '../testing/serve-process.js';
import { pullRequestOpened, postPullRequest } from '../testing/github-events.js';
import { githubSpec, gitlabSpec, statesOf } from './testing/forge-apis.js';
import { startOpenApiServer, type OpenApiServer, type SeenRequest } from './testing/openapi-server.js';

/**
 * Statuses of real jobs through a real `boxcar serve`: webhooks from GitHub and GitLab queue a
 * repository's `.boxcar.yml`, runc (or, for a fork, an isolating runtime) runs it, and the
 * loopback stand-ins for GitHub's and GitLab's APIs receive the statuses, every request checked
 * against the forge's API description (GitHub: @octokit/openapi; GitLab: the vendored commit
 * status API) and its credentials.
 */

const GITHUB_SECRET = 'a-github-webhook-secret';
const GITLAB_SECRET = 'a-gitlab-webhook-token';
const JOB_FILE = `name: checks
jobs:
  - name: ok
    command: sleep 1; echo ok
  - name: bad
    command: sleep 1; exit 1
`;

describe('forge statuses through boxcar serve', () => {
  let state: Awaited<ReturnType<typeof tempState>>;
  let gh: OpenApiServer;
  let gl: OpenApiServer;
  let serve: { child: ChildProcess; url: string } | undefined;
  let token: string;
  let repo: string;
  let sha: string;

  const api = async (method: string, url: string) => {
    const res = await fetch(`${serve?.url}${url}`, { method, headers: { authorization: `Bearer ${token}` } });
    return (await res.json()) as Record<string, unknown>;
  };
  const jobCount = async () => ((await api('GET', '/v1/jobs?limit=1000')) as unknown as unknown[]).length;
  const deliveredJobs = async (delivery: string): Promise<string[]> => {
    for (let i = 0; i < 600; i++) {
      const d = (await api('GET', `/v1/deliveries/${delivery}`)) as {
        state: string;
        jobs: string[];
        error: string;
      };
      if (d.state === 'failed') throw new Error(`delivery failed: ${d.error}`);
      if (d.state === 'done') return d.jobs;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`delivery ${delivery} still pending`);
  };
  const until = async (what: string, ok: () => boolean, ms = 60_000) => {
    const end = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const noProblems = (s: OpenApiServer) =>
    assert.deepEqual(
      s.seen.filter((r) => r.problems.length),
      [],
      'every request matches the API description',
    );

  before(async () => {
    state = await tempState('bx-forge-serve-');
    gh = await startOpenApiServer({
      spec: githubSpec(),
      authorize: (s) => (s.headers.authorization === 'Bearer ghp_serve' ? undefined : 'bad token'),
    });
    gl = await startOpenApiServer({
      spec: await gitlabSpec(),
      authorize: (s) => (s.headers['private-token'] === 'glpat-serve' ? undefined : 'bad token'),
    });
    repo = path.join(state.root, 'repo');
    execFileSync('git', ['init', '-q', repo]);
    writeFileSync(path.join(repo, '.boxcar.yml'), JOB_FILE);
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8' }).trim();
    git('add', '.boxcar.yml');
    git('-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-q', '-m', 'ci');
    sha = git('rev-parse', 'HEAD');
    const config = path.join(state.root, 'config.yaml');
    writeFileSync(
      config,
      `tenants:
  team-a: { trust: trusted }
microvm: { allow_tcg_for_untrusted: true }
workspaces: { checkout_protocols: [https, ssh, file] } # the test's repository is a local one
webhooks:
  public_url: https://boxcar.example.com
  github: { secret: ${GITHUB_SECRET}, tenant: team-a, api_url: '${gh.url}', token: ghp_serve }
  gitlab: { secret: ${GITLAB_SECRET}, tenant: team-a, api_url: '${gl.url}', token: glpat-serve }
`,
    );
    serve = await startServe(['--state', state.root, '--config', config, '--drain', '5s']);
    token = boxcarSync(['--state', state.root, '--config', config, 'token', 'create', '--tenant', 'team-a']);
  });

  after(async () => {
    if (serve) {
      serve.child.kill('SIGTERM');
      await exited(serve.child);
    }
    await gh?.close();
    await gl?.close();
    const left = state ? await leftovers(state) : [];
    await state?.cleanup();
    assert.deepEqual(left, []);
  });

  test('GitHub: a pull request’s jobs and pipeline go pending, then success or failure, linking to their logs', async () => {
    const event = pullRequestOpened(sha, repo); // same repository: trusted
    const res = await postPullRequest(serve?.url as string, GITHUB_SECRET, event);
    assert.equal(res.status, 202, await res.clone().text());
    const [ok, bad] = await deliveredJobs(((await res.json()) as { delivery: string }).delivery);
    const contexts = ['boxcar/checks/ok', 'boxcar/checks/bad', 'boxcar/checks'];
    await until('final statuses', () =>
      contexts.every((c) => ['success', 'failure'].includes(statesOf(gh.seen, c).at(-1) ?? '')),
    );
    noProblems(gh);
    assert.deepEqual(statesOf(gh.seen, 'boxcar/checks/ok'), ['pending', 'success']);
    assert.deepEqual(statesOf(gh.seen, 'boxcar/checks/bad'), ['pending', 'failure']);
    const pipeline = statesOf(gh.seen, 'boxcar/checks');
    assert.equal(pipeline[0], 'pending', 'the pipeline, while it runs');
    assert.equal(pipeline.at(-1), 'failure', 'one of its jobs failed');
    const repository = event.repository.full_name;
    for (const s of gh.seen) assert.equal(s.path, `/repos/${repository}/statuses/${sha}`);
    const urls = gh.seen.map((s) => (s.body as { target_url: string }).target_url);
    assert.ok(urls.includes(`https://boxcar.example.com/v1/jobs/${ok}/logs`));
    assert.ok(urls.includes(`https://boxcar.example.com/v1/jobs/${bad}/logs`));
    assert.ok(urls.some((u) => /^https:\/\/boxcar\.example\.com\/v1\/pipelines\/[\w-]+$/.test(u)));
  });

  test('GitLab: a bad or missing X-Gitlab-Token queues nothing; a fork’s merge request runs untrusted and gets statuses', async () => {
    const mr = JSON.parse(
      readFileSync(
        new URL('../../../src/policy/testdata/gitlab-merge-request.json', import.meta.url),
        'utf8',
      ),
    ) as { object_attributes: Record<string, unknown> };
    Object.assign(mr.object_attributes, {
      source_project_id: 99, // a fork of project 14
      source: { path_with_namespace: 'stranger/fork', git_http_url: repo },
      last_commit: { id: sha, message: 'ci', timestamp: '2026-01-01T00:00:00Z' },
    });
    const body = JSON.stringify(mr);
    const uuid = randomUUID();
    const post = (secret?: string) =>
      fetch(`${serve?.url}/v1/webhooks/gitlab`, {
        method: 'POST',
        body,
        headers: {
          'content-type': 'application/json',
          'x-gitlab-event': 'Merge Request Hook',
          'x-gitlab-event-uuid': uuid,
          ...(secret === undefined ? {} : { 'x-gitlab-token': secret }),
        },
      });
    const before = await jobCount();
    assert.equal((await post()).status, 401);
    assert.equal((await post('x'.repeat(GITLAB_SECRET.length))).status, 401);
    assert.equal((await post(`${GITLAB_SECRET}-and-more`)).status, 401);
    assert.equal(await jobCount(), before, 'nothing was queued');

    const res = await post(GITLAB_SECRET);
    assert.equal(res.status, 202, await res.clone().text());
    assert.equal(((await res.json()) as { delivery: string }).delivery, uuid);
    const replay = await post(GITLAB_SECRET);
    assert.deepEqual(await replay.json(), { delivery: uuid, duplicate: true });
    const ids = await deliveredJobs(uuid);
    assert.equal(ids.length, 2);
    for (const id of ids) {
      const job = (await api('GET', `/v1/jobs/${id}`)) as { decision: { trust: string }; runtime: string };
      assert.equal(job.decision.trust, 'untrusted', 'a fork’s code, whatever its job file says');
      assert.notEqual(job.runtime, 'runc');
    }
    await until('GitLab statuses of both jobs', () =>
      ['ok', 'bad'].every((j) => statesOf(gl.seen, `boxcar/checks/${j}`).length > 0),
    );
    // The fork's jobs are not this test's business past their statuses: cancel them.
    for (const id of ids) await api('POST', `/v1/jobs/${id}/cancel`);
    const finals = ['success', 'failed', 'canceled'];
    await until('final GitLab statuses', () =>
      ['ok', 'bad'].every((j) => finals.includes(statesOf(gl.seen, `boxcar/checks/${j}`).at(-1) ?? '')),
    );
    noProblems(gl);
    for (const j of ['ok', 'bad']) assert.equal(statesOf(gl.seen, `boxcar/checks/${j}`)[0], 'pending');
    for (const s of gl.seen as SeenRequest[]) {
      assert.equal(s.path, `/api/v4/projects/99/statuses/${sha}`, 'the merge request’s source project');
      assert.equal((s.body as { ref: string }).ref, 'ms-viewport');
    }
  });
});
