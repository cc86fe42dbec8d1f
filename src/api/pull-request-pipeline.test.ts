import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { leftovers, tempState } from '../testing/harness.js';
import { boxcarSync, exited, startServe } from '../testing/serve-process.js';
import { pullRequestOpened, postPullRequest } from '../testing/github-events.js';
import { githubSpec, statesOf } from '../forge/testing/forge-apis.js';
import { startOpenApiServer, type OpenApiServer } from '../forge/testing/openapi-server.js';

/**
 * Issue 16's "done when", through a real `boxcar serve`: a pull request webhook for a local
 * repository runs its `.boxcar.yml` at the head commit as a pipeline; its jobs see the code,
 * two jobs connected by `needs` pass an artifact, the pipeline has its own record in the API,
 * the artifact downloads as a tar, and the GitHub stand-in (every request checked against
 * @octokit/openapi) receives pending, then success, for each job and for the pipeline.
 */
const SECRET = 'a-github-webhook-secret-for-pipelines';
const JOB_FILE = `name: ci
stages: [build, test]
jobs:
  - name: build
    stage: build
    artifacts: { paths: [dist/] }
    command: mkdir -p dist && sed 's/code/built code/' src/app.txt > dist/app.txt
  - name: test
    stage: test
    needs: [build]
    command: grep -q "the pull request's code" src/app.txt && cat dist/app.txt
`;

interface PipelineView {
  id: string;
  state: string;
  commit: string;
  jobs: Array<{ name: string; status: string; job: string; needs: string[] }>;
}

describe('a pull request runs its pipeline at the head commit', () => {
  let state: Awaited<ReturnType<typeof tempState>>;
  let gh: OpenApiServer;
  let serve: { child: ChildProcess; url: string } | undefined;
  let token: string;
  let repo: string;
  let sha: string;
  const api = async <T>(
    url: string,
    init: RequestInit = {},
  ): Promise<{ status: number; body: T; res: Response }> => {
    const res = await fetch(`${serve?.url}${url}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, ...init.headers },
    });
    const body = (res.headers.get('content-type')?.includes('json') ? await res.json() : undefined) as T;
    return { status: res.status, body, res };
  };

  before(async () => {
    state = await tempState('bx-pr-pipeline-');
    gh = await startOpenApiServer({
      spec: githubSpec(),
      authorize: (s) => (s.headers.authorization === 'Bearer ghp_pipeline' ? undefined : 'bad token'),
    });
    repo = path.join(state.root, 'repo');
    mkdirSync(path.join(repo, 'src'), { recursive: true });
    execFileSync('git', ['init', '-q', repo]);
    writeFileSync(path.join(repo, '.boxcar.yml'), JOB_FILE);
    writeFileSync(path.join(repo, 'src/app.txt'), "the pull request's code\n");
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8' }).trim();
    git('add', '-A');
    git('-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-q', '-m', 'ci');
    sha = git('rev-parse', 'HEAD');
    const config = path.join(state.root, 'config.yaml');
    writeFileSync(
      config,
      `tenants:
  team-a: { trust: trusted }
workspaces: { checkout_protocols: [https, ssh, file] } # the test's repository is a local one
webhooks:
  public_url: https://boxcar.example.com
  github: { secret: ${SECRET}, tenant: team-a, api_url: '${gh.url}', token: ghp_pipeline }
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
    const left = state ? await leftovers(state) : [];
    await state?.cleanup();
    assert.deepEqual(left, []);
  });

  test('checkout, needs and an artifact, the pipeline record, and statuses pending then success', async () => {
    const event = pullRequestOpened(sha, repo);
    const res = await postPullRequest(serve?.url as string, SECRET, event);
    assert.equal(res.status, 202, await res.clone().text());
    const delivery = ((await res.json()) as { delivery: string }).delivery;
    let jobs: string[] = [];
    for (let i = 0; i < 600 && !jobs.length; i++) {
      const d = (await api<{ state: string; jobs: string[]; error: string }>(`/v1/deliveries/${delivery}`))
        .body;
      assert.notEqual(d.state, 'failed', d.error);
      if (d.state === 'done') jobs = d.jobs;
      else await new Promise((r) => setTimeout(r, 100));
    }
    const first = (await api<{ pipeline: string }>(`/v1/jobs/${jobs[0]}`)).body;
    assert.ok(first.pipeline, 'the job belongs to a pipeline');
    const p = (await api<PipelineView>(`/v1/pipelines/${first.pipeline}?wait=120s`)).body;
    assert.equal(p.state, 'succeeded', JSON.stringify(p.jobs));
    assert.equal(p.commit, sha);
    assert.deepEqual(
      p.jobs.map((j) => [j.name, j.status, j.needs]),
      [
        ['build', 'succeeded', []],
        ['test', 'succeeded', ['build']],
      ],
    );
    const byName = Object.fromEntries(p.jobs.map((j) => [j.name, j.job]));
    const log = await api<undefined>(`/v1/jobs/${byName.test}/logs`);
    assert.match(
      await log.res.text(),
      /the pull request's built code/,
      'the checkout and the artifact of build',
    );
    const tar = await api<undefined>(`/v1/jobs/${byName.build}/artifacts`);
    assert.equal(tar.status, 200);
    assert.equal(tar.res.headers.get('content-type'), 'application/x-tar');
    const listed = execFileSync('tar', ['-t'], {
      input: Buffer.from(await tar.res.arrayBuffer()),
      encoding: 'utf8',
    });
    assert.deepEqual(listed.trim().split('\n'), ['dist/', 'dist/app.txt']);
    assert.equal((await api(`/v1/jobs/${byName.test}/artifacts`)).status, 404, 'test kept none');

    const contexts = ['boxcar/ci/build', 'boxcar/ci/test', 'boxcar/ci'];
    const end = Date.now() + 30_000;
    while (!contexts.every((c) => statesOf(gh.seen, c).at(-1) === 'success')) {
      assert.ok(Date.now() < end, `statuses: ${JSON.stringify(contexts.map((c) => statesOf(gh.seen, c)))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(
      gh.seen.filter((s) => s.problems.length),
      [],
      'every request matches the API description',
    );
    for (const c of contexts) assert.equal(statesOf(gh.seen, c)[0], 'pending', `${c} was pending first`);
    for (const s of gh.seen) assert.equal(s.path, `/repos/${event.repository.full_name}/statuses/${sha}`);
  });
});
