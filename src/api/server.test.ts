import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { leftovers, testBoxcar } from '../testing/harness.js';
import { Scheduler } from '../scheduler/scheduler.js';
import { DeliveryWorker } from './github-webhook.js';
import { PipelineRunner } from '../scheduler/pipelines.js';
import { registerNodeMetrics } from '../scheduler/node-metrics.js';
import { buildApi } from './server.js';
import { createToken } from './tokens.js';
import type { JobView } from './job-view.js';

const require = createRequire(import.meta.url);

/** The API in-process (fastify inject) over a real store and scheduler running real runc jobs. */
type Box = Awaited<ReturnType<typeof testBoxcar>>;

const SECRET = 'a-webhook-secret-of-some-length';
const QUOTAS = `
observability: { tenant_labels: true }
workspaces: { checkout_protocols: [https, ssh, file] } # the tests' repositories are local ones
tenants:
  team-a: { trust: trusted }
  team-b: { trust: trusted }
webhooks:
  github: { secret: ${SECRET}, tenant: team-a }
quotas:
  - apiVersion: v1
    kind: ResourceQuota
    metadata: { name: cicd-quota, namespace: team-a }
    spec:
      hard: { requests.memory: 1000Gi, limits.memory: 2000Gi, requests.cpu: "500", limits.cpu: "1000", pods: "10000" }
      scopes: [NotTerminating]
  - apiVersion: v1
    kind: ResourceQuota
    metadata: { name: two-at-once, namespace: team-b }
    spec:
      hard: { pods: "2", limits.memory: 1Gi }
`;

describe('boxcar API', () => {
  let box: Box;
  let scheduler: Scheduler;
  let app: FastifyInstance;
  let deliveries: DeliveryWorker;
  let pipelines: PipelineRunner;
  const token: Record<string, string> = {};
  const trusted = { source: 'internal_repo', user_group: 'internal_team' };

  const call = async (
    tenant: string | undefined,
    method: 'GET' | 'POST',
    url: string,
    payload?: unknown,
    headers: Record<string, string> = {},
  ) => {
    const res = await app.inject({
      method,
      url,
      payload: payload as string | object | undefined,
      headers: { ...(tenant ? { authorization: `Bearer ${token[tenant] ?? tenant}` } : {}), ...headers },
    });
    return {
      status: res.statusCode,
      body: res.body ? (JSON.parse(res.body) as Record<string, unknown>) : {},
      raw: res.body,
    };
  };
  const submit = async (tenant: string, job: Record<string, unknown>) => {
    const r = await call(tenant, 'POST', '/v1/jobs', { ...trusted, ...job });
    assert.equal(r.status, 201, r.raw);
    return r.body as unknown as JobView;
  };
  const waitDone = async (tenant: string, id: string) =>
    (await call(tenant, 'GET', `/v1/jobs/${id}?wait=30s`)).body as unknown as JobView;
  /** The jobs a webhook delivery queued, once its worker has fetched the job file. */
  const deliveredJobs = async (tenant: string, delivery: string) => {
    for (let i = 0; i < 300; i++) {
      const d = (await call(tenant, 'GET', `/v1/deliveries/${delivery}`)).body as {
        state: string;
        jobs: string[];
        error: string | null;
      };
      if (d.state === 'failed') throw new Error(`delivery failed: ${d.error}`);
      if (d.state === 'done') return d.jobs;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`delivery ${delivery} still pending`);
  };

  const config = path.join(os.tmpdir(), `bx-api-config-${process.pid}.yaml`);
  before(async () => {
    writeFileSync(config, QUOTAS);
    box = await testBoxcar({ config });
    scheduler = new Scheduler(box, { pollMs: 100 });
    await scheduler.start();
    registerNodeMetrics(box, scheduler);
    pipelines = new PipelineRunner(box, scheduler);
    pipelines.start();
    deliveries = new DeliveryWorker(box, scheduler, pipelines);
    deliveries.start();
    app = buildApi(box, scheduler, deliveries, pipelines);
    for (const t of ['team-a', 'team-b'])
      token[t] = (await createToken(box.store, { tenant: t, role: 'tenant' }, 'operator:test')).token;
  });
  after(async () => {
    await app.close();
    await deliveries.stop();
    await pipelines.stop();
    await scheduler.stop(10_000);
    const left = await leftovers(box.paths);
    await box.cleanup();
    rmSync(config, { force: true });
    assert.deepEqual(left, []);
  });

  test('two tenants: each sees, follows and cancels only its own jobs', async () => {
    const a = await submit('team-a', { command: 'echo from-a; exit 3' });
    assert.equal(a.state, 'queued');
    assert.equal(a.runtime, 'runc');
    const done = await waitDone('team-a', a.id);
    assert.equal(done.state, 'failed');
    assert.equal(done.exitCode, 3);
    const logs = await app.inject({
      url: `/v1/jobs/${a.id}/logs`,
      headers: { authorization: `Bearer ${token['team-a']}` },
    });
    assert.equal(logs.body, 'from-a\n');

    assert.equal((await call('team-b', 'GET', `/v1/jobs/${a.id}`)).status, 404);
    assert.equal((await call('team-b', 'GET', `/v1/jobs/${a.id}/logs`)).status, 404);
    assert.equal((await call('team-b', 'POST', `/v1/jobs/${a.id}/cancel`)).status, 404);
    const listB = (await call('team-b', 'GET', '/v1/jobs')).body as unknown as JobView[];
    assert.ok(!listB.some((j) => j.id === a.id));
    const listA = (await call('team-a', 'GET', '/v1/jobs')).body as unknown as JobView[];
    assert.ok(listA.some((j) => j.id === a.id));
    // Its cost too: priced, summed, and only its own.
    const costA = (await call('team-a', 'GET', '/v1/cost?by=tenant&since=1h')).body as unknown as Array<{
      key: string;
      jobs: number;
      total: number;
    }>;
    assert.deepEqual(
      costA.map((l) => l.key),
      ['team-a'],
    );
    // A job of a few milliseconds costs well under one micro-dollar: the amount is whole, not positive.
    assert.ok(costA[0] && costA[0].jobs >= 1 && Number.isInteger(costA[0].total) && costA[0].total >= 0);
    const costB = (await call('team-b', 'GET', '/v1/cost?by=tenant')).body as unknown as Array<{
      key: string;
    }>;
    assert.ok(costB.every((l) => l.key === 'team-b'));
    const bad = await call('team-a', 'GET', '/v1/cost?by=planet');
    assert.equal(bad.status, 400);
    assert.match(JSON.stringify(bad.body), /by: \\"planet\\" is not a grouping; use one of tenant, repo/);
  });

  test('a missing or unknown token is 401 and queues nothing', async () => {
    const none = await call(undefined, 'POST', '/v1/jobs', { command: 'true' });
    assert.equal(none.status, 401);
    assert.match(String(none.body.error), /missing API token/);
    const bad = await call('bxc_not-a-token', 'GET', '/v1/jobs');
    assert.equal(bad.status, 401);
    assert.match(String(bad.body.error), /unknown API token/);
  });

  test('bad input gets a 4xx that names the field; the server keeps serving', async () => {
    const cases: Array<[unknown, Record<string, string>, number, RegExp]> = [
      ['{"command": ', { 'content-type': 'application/json' }, 400, /JSON/i],
      [{ command: 'true', colour: 'red' }, {}, 400, /colour/],
      [{ command: 'true', resources: { memory: '12 apples' } }, {}, 400, /resources\.memory: .*256Mi/],
      [
        { command: 'true', resources: { memory: '64Mi', requests: { memory: '1Gi' } } },
        {},
        400,
        /resources\.requests\.memory/,
      ],
      [
        'command: true\nresources:\n  cpus: lots\n',
        { 'content-type': 'application/yaml' },
        400,
        /job:3: resources\.cpus/,
      ],
      [{ command: 'x'.repeat(2 * 1024 * 1024) }, {}, 413, /body/i],
      ['<xml/>', { 'content-type': 'application/xml' }, 415, /content-type/i],
    ];
    for (const [payload, headers, status, message] of cases) {
      const r = await call('team-a', 'POST', '/v1/jobs', payload, headers);
      assert.equal(r.status, status, `${JSON.stringify(payload).slice(0, 80)} → ${r.raw.slice(0, 200)}`);
      assert.match(String(r.body.error), message);
    }
    assert.equal((await call('team-a', 'GET', '/v1/jobs?state=bogus')).status, 400);
    assert.equal((await call('team-a', 'GET', '/v1/jobs?limit=-4')).status, 400);
    assert.equal((await call('team-a', 'GET', '/v1/jobs/nope?wait=soon')).status, 404);
    assert.equal((await call('team-a', 'GET', '/healthz')).status, 200);
  });

  test('quota (ResourceQuota semantics): over the pods limit waits with the reason; never-fitting is refused', async () => {
    const sleepers = await Promise.all(
      [1, 2, 3].map(() =>
        submit('team-b', { command: 'sleep 1', resources: { memory: '64Mi', cpus: '100m' } }),
      ),
    );
    let third: JobView | undefined;
    for (let i = 0; i < 50; i++) {
      const views = await Promise.all(
        sleepers.map(
          async (s) => (await call('team-b', 'GET', `/v1/jobs/${s.id}`)).body as unknown as JobView,
        ),
      );
      third = views.find((v) => v.state === 'queued' && v.waitReason);
      if (third) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(third, 'one of three jobs waits while two run');
    assert.match(
      third.waitReason ?? '',
      /waiting for quota two-at-once: pods used 2 \+ requested 1 > hard 2/,
    );
    for (const s of sleepers) assert.equal((await waitDone('team-b', s.id)).state, 'succeeded');

    const big = await call('team-b', 'POST', '/v1/jobs', {
      ...trusted,
      command: 'true',
      resources: { memory: '2Gi' },
    });
    assert.equal(big.status, 422);
    assert.match(
      String(big.body.error),
      /exceeds quota two-at-once: limits.memory 2\.0 GiB is more than the hard limit 1\.0 GiB/,
    );
    const recorded = (big.body.job as JobView).id;
    assert.equal(
      ((await call('team-b', 'GET', `/v1/jobs/${recorded}`)).body as unknown as JobView).state,
      'error',
    );
  });

  test('cancel stops a running job; a queued one is cancelled at once', async () => {
    const job = await submit('team-a', { command: 'echo up; sleep 60' });
    for (let i = 0; i < 100; i++) {
      const v = (await call('team-a', 'GET', `/v1/jobs/${job.id}`)).body as unknown as JobView;
      if (v.state === 'running') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const t0 = Date.now();
    assert.equal((await call('team-a', 'POST', `/v1/jobs/${job.id}/cancel`)).status, 202);
    const done = await waitDone('team-a', job.id);
    assert.equal(done.state, 'cancelled');
    assert.ok(Date.now() - t0 < 5000, 'stopped within the grace period');
  });

  test('logs follow live as Server-Sent Events, ending with the finished job', async () => {
    const job = await submit('team-a', { command: 'for i in 1 2 3; do echo line $i; sleep 0.2; done' });
    const res = await app.inject({
      url: `/v1/jobs/${job.id}/logs?follow=true`,
      headers: { authorization: `Bearer ${token['team-a']}` },
    });
    assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
    const data = res.body
      .split('\n\n')
      .filter((e) => e.startsWith('data: '))
      .map((e) => (JSON.parse(e.slice(6)) as { text: string }).text)
      .join('');
    assert.equal(data, 'line 1\nline 2\nline 3\n');
    const end = res.body.split('\n\n').find((e) => e.startsWith('event: end'));
    assert.match(end ?? '', /"state":"succeeded"/);
  });

  test('GitHub webhook: a fork’s pull request runs its repository’s job file untrusted; a bad signature queues nothing', async () => {
    const repo = path.join(box.paths.root, 'pr-repo');
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8' }).trim();
    execFileSync('git', ['init', '-q', repo]);
    writeFileSync(
      path.join(repo, '.boxcar.yml'),
      'name: pr-checks\njobs:\n  - name: hello\n    source: internal_repo # the fork says so; the payload decides\n    command: echo "pr $BOXCAR_PULL_REQUEST"\n',
    );
    git('add', '.boxcar.yml');
    git('-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-q', '-m', 'ci');
    const sha = git('rev-parse', 'HEAD');
    type PullRequestEvent = {
      action: string;
      number: number;
      pull_request: { head: { sha: string; repo: Record<string, unknown> } };
    };
    const examples = require('@octokit/webhooks-examples/api.github.com/index.json') as Array<{
      name: string;
      examples: PullRequestEvent[];
    }>;
    const opened = examples
      .find((e) => e.name === 'pull_request')
      ?.examples.find((e) => e.action === 'opened');
    const example = structuredClone(opened) as PullRequestEvent;
    example.pull_request.head.sha = sha;
    example.pull_request.head.repo = {
      ...example.pull_request.head.repo,
      full_name: 'stranger/fork',
      clone_url: repo,
    };
    const body = JSON.stringify(example);
    const post = (signature?: string) =>
      app.inject({
        method: 'POST',
        url: '/v1/webhooks/github',
        payload: body,
        headers: {
          'content-type': 'application/json',
          'x-github-event': 'pull_request',
          'x-github-delivery': `delivery-${sha}`,
          ...(signature ? { 'x-hub-signature-256': signature } : {}),
        },
      });
    const before = ((await call('team-a', 'GET', '/v1/jobs?limit=1000')).body as unknown as JobView[]).length;
    assert.equal((await post()).statusCode, 401);
    assert.equal((await post(`sha256=${'0'.repeat(64)}`)).statusCode, 401);
    const forged = createHmac('sha256', 'another-secret-entirely').update(body).digest('hex');
    assert.equal((await post(`sha256=${forged}`)).statusCode, 401);
    const after = ((await call('team-a', 'GET', '/v1/jobs?limit=1000')).body as unknown as JobView[]).length;
    assert.equal(after, before, 'nothing was queued');

    const res = await post(`sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`);
    assert.equal(res.statusCode, 202, res.body);
    const { delivery } = JSON.parse(res.body) as { delivery: string };
    const [jobId] = await deliveredJobs('team-a', delivery);
    const job = (await call('team-a', 'GET', `/v1/jobs/${jobId}`)).body as unknown as JobView;
    assert.equal(job.decision.trust, 'untrusted');
    assert.notEqual(job.runtime, 'runc');
    const done = await waitDone('team-a', job.id);
    assert.equal(done.state, 'succeeded', done.error ?? '');
    const logs = await app.inject({
      url: `/v1/jobs/${job.id}/logs`,
      headers: { authorization: `Bearer ${token['team-a']}` },
    });
    assert.equal(logs.body, `pr ${example.number}\n`);
  });

  test('/metrics exports the seed’s scheduler metrics, to an operator’s token only', async () => {
    assert.equal((await app.inject({ url: '/metrics' })).statusCode, 401);
    assert.equal((await call('team-a', 'GET', '/metrics')).status, 403);
    assert.equal((await call('team-a', 'GET', '/v1/node')).status, 403);
    const operator = (await createToken(box.store, { tenant: null, role: 'operator' }, 'operator:test'))
      .token;
    assert.equal((await call(operator, 'GET', '/v1/node')).status, 200);
    assert.equal((await call(operator, 'GET', '/v1/jobs')).status, 403, 'no tenant: no jobs');
    const res = await app.inject({ url: '/metrics', headers: { authorization: `Bearer ${operator}` } });
    assert.match(res.body, /scheduler_job_startup_duration_seconds_count\{runtime="runc"\} [1-9]/);
    assert.match(res.body, /scheduler_job_memory_usage_bytes_bucket/);
    assert.match(res.body, /scheduler_job_cost_dollars_sum\{runtime="runc"\}/);
    assert.match(res.body, /boxcar_sandbox_start_seconds_count\{runtime="runc",start_path="cold"\} [1-9]/);
    assert.match(res.body, /boxcar_job_cost_dollars_total\{runtime="runc",trust="trusted"\} /);
    for (const runtime of ['runc', 'gvisor', 'firecracker', 'wasm']) {
      assert.match(res.body, new RegExp(`boxcar_queue_depth\\{runtime="${runtime}"\\} \\d+`));
      assert.match(res.body, new RegExp(`boxcar_breaker_state\\{runtime="${runtime}"\\} [012]`));
    }
    assert.match(res.body, /boxcar_admissions_total\{outcome="admitted",reason="ok"\} [1-9]/);
    assert.match(
      res.body,
      /boxcar_admissions_total\{outcome="refused",reason="(quota|limits|queue_full)"\} [1-9]/,
    );
    assert.match(res.body, /boxcar_tenant_jobs_finished_total\{tenant="team-a",state="succeeded"\} [1-9]/);
    // Prometheus' own linter, on a node that has run jobs: nothing to say, process defaults included.
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: res.body, encoding: 'utf8' });
    assert.equal(lint.error, undefined, 'promtool runs (Debian package prometheus)');
    assert.equal(`${lint.stdout}${lint.stderr}`, '');
    assert.equal(lint.status, 0);
  });
});
