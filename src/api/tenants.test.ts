import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { jobLogPath } from '../runner/job-log.js';
import { Scheduler } from '../scheduler/scheduler.js';
import { leftovers, TEST_CONFIG, testBoxcar } from '../testing/harness.js';
import { DeliveryWorker } from './github-webhook.js';
import { PipelineRunner } from '../scheduler/pipelines.js';
import type { JobView } from './job-view.js';
import { buildApi } from './server.js';
import { createToken } from './tokens.js';

const require = createRequire(import.meta.url);

/**
 * The multi-tenant promises, tried the way a hostile tenant would: trust claimed in the body,
 * another tenant's secret named, impossible jobs sent to push everyone off the primary
 * runtime, limits pushed, a webhook delivery replayed. Each asserts what is stored and
 * streamed, not only the HTTP status. Real store, scheduler and sandboxes.
 */
type Box = Awaited<ReturnType<typeof testBoxcar>>;

const WEBHOOK_SECRET = 'a-webhook-secret-of-some-length';
const TOKEN_VALUE = 'tok-3f9a7c21e5d84b06'; // team-a's secret: it must never be seen
const CONFIG = `
${TEST_CONFIG}
workspaces: { checkout_protocols: [https, ssh, file] } # the tests' repositories are local ones
tenants:
  team-a: { trust: trusted }
  partners: { trust: untrusted }
  capped:
    trust: trusted
    max_queued: 2
    max_priority: 10
    limits:
      default: { memory: 128Mi, timeout: 5m }
      max: { memory: 512Mi }
      maxLimitRequestRatio: { memory: 2 }
quotas:
  - apiVersion: v1
    kind: ResourceQuota
    metadata: { name: one-at-a-time, namespace: capped }
    spec: { hard: { pods: "1" } }
api: { max_follows_per_tenant: 2 }
webhooks:
  github:
    secret: ${WEBHOOK_SECRET}
    tenant: outsiders
    repositories: { "Codertocat/*": team-a }
`;

describe('tenants, trust and secrets, tried by hostile tenants', () => {
  let box: Box;
  let scheduler: Scheduler;
  let deliveries: DeliveryWorker;
  let pipelines: PipelineRunner;
  let app: FastifyInstance;
  let base: string;
  const token: Record<string, string> = {};
  const selfTrust = { source: 'internal_repo', user_group: 'internal_team' };

  const call = async (tenant: string, method: 'GET' | 'POST', url: string, payload?: unknown) => {
    const res = await app.inject({
      method,
      url,
      payload: payload as object | undefined,
      headers: { authorization: `Bearer ${token[tenant] ?? tenant}` },
    });
    const json = String(res.headers['content-type']).startsWith('application/json');
    return {
      status: res.statusCode,
      body: (json ? JSON.parse(res.body) : {}) as Record<string, unknown>,
      raw: res.body,
    };
  };
  const submit = async (tenant: string, job: Record<string, unknown>) => {
    const r = await call(tenant, 'POST', '/v1/jobs', job);
    assert.equal(r.status, 201, r.raw);
    return r.body as unknown as JobView;
  };
  const waitDone = async (tenant: string, id: string) =>
    (await call(tenant, 'GET', `/v1/jobs/${id}?wait=60s`)).body as unknown as JobView;
  const logsOf = async (tenant: string, id: string) => (await call(tenant, 'GET', `/v1/jobs/${id}/logs`)).raw;
  /** Follows a job's log over real HTTP (Server-Sent Events), as a client would. */
  const follow = async (tenant: string, id: string) => {
    const res = await fetch(`${base}/v1/jobs/${id}/logs?follow=true`, {
      headers: { authorization: `Bearer ${token[tenant]}` },
    });
    return { status: res.status, text: res.ok ? await res.text() : await res.text() };
  };
  const sse = (text: string) =>
    text
      .split('\n\n')
      .filter((e) => e.startsWith('data: '))
      .map((e) => (JSON.parse(e.slice(6)) as { text: string }).text)
      .join('');

  const config = path.join(os.tmpdir(), `bx-tenants-config-${process.pid}.yaml`);
  before(async () => {
    writeFileSync(config, CONFIG);
    box = await testBoxcar({ config });
    scheduler = new Scheduler(box, { pollMs: 100 });
    await scheduler.start();
    pipelines = new PipelineRunner(box, scheduler);
    pipelines.start();
    deliveries = new DeliveryWorker(box, scheduler, pipelines);
    deliveries.start();
    app = buildApi(box, scheduler, deliveries, pipelines);
    base = await app.listen({ host: '127.0.0.1', port: 0 });
    for (const t of ['team-a', 'partners', 'capped', 'hostile'])
      token[t] = (await createToken(box.store, { tenant: t, role: 'tenant' }, 'operator:test')).token;
    await box.secrets.set({ tenant: 'team-a', repository: '', name: 'TOKEN' }, TOKEN_VALUE, 'operator:test');
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

  test('an untrusted tenant claiming internal code, and naming another tenant’s secret, gets neither', async () => {
    const job = await submit('partners', {
      ...selfTrust,
      secrets: ['TOKEN'],
      command: 'echo "token=${TOKEN:-none}"; env | grep -c TOKEN || true',
    });
    assert.equal(job.decision.trust, 'untrusted');
    assert.notEqual(job.runtime, 'runc');
    assert.ok(
      job.decision.reasons.includes(
        "untrusted, lowered by the tenant's ceiling: tenant partners is untrusted (tenants.partners.trust)",
      ),
      job.decision.reasons.join(' | '),
    );
    assert.ok(job.decision.reasons.includes('secrets withheld from an untrusted job: TOKEN'));
    const done = await waitDone('partners', job.id);
    assert.equal(done.state, 'succeeded', done.error ?? '');
    assert.equal(await logsOf('partners', job.id), 'token=none\n0\n');
    const stored = JSON.stringify([await box.store.getJob(job.id), await box.store.events(job.id)]);
    assert.doesNotMatch(stored, new RegExp(TOKEN_VALUE));
    const audit = await box.store.auditRecords({ tenant: 'partners', limit: 100 });
    const submitted = audit.find((r) => r.action === 'job.submitted' && r.subject === job.id);
    assert.match(submitted?.actor ?? '', /^token:tok-/);
    assert.match(submitted?.detail ?? '', /lowered by the tenant's ceiling/);
    assert.ok(audit.some((r) => r.action === 'job.started' && r.subject === job.id));
  });

  test('a trusted tenant gets its own secret, masked in what is stored and streamed, also split across writes', async () => {
    const job = await submit('team-a', {
      ...selfTrust,
      secrets: ['TOKEN'],
      command: [
        'sh',
        '-c',
        'printf "a=%s\\n" "$TOKEN"; printf %s "$TOKEN" | head -c 7; sleep 0.5; printf "%s\\n" "$TOKEN" | tail -c +8; printf %s "$TOKEN" | sha256sum',
      ],
    });
    assert.equal(job.runtime, 'runc');
    const streamed = await follow('team-a', job.id);
    const done = await waitDone('team-a', job.id);
    assert.equal(done.state, 'succeeded', done.error ?? '');
    const digest = createHash('sha256').update(TOKEN_VALUE).digest('hex');
    const expected = `a=***\n***\n${digest}  -\n`;
    assert.equal(sse(streamed.text), expected, 'streamed');
    assert.equal(await logsOf('team-a', job.id), expected, 'read back');
    const file = readFileSync(jobLogPath(box.paths, job.id), 'utf8');
    assert.doesNotMatch(file, new RegExp(TOKEN_VALUE.slice(0, 7)), 'the stored log holds no part of it');
    assert.match(file, /^\S+ stdout F a=\*\*\*$/m, 'CRI lines');
  });

  test('a trusted job naming a secret its tenant does not have is refused at once, naming it', async () => {
    const r = await call('team-a', 'POST', '/v1/jobs', { ...selfTrust, secrets: ['NOPE'], command: 'true' });
    assert.equal(r.status, 400);
    assert.match(
      String(r.body.error),
      /secrets: NOPE is not set for tenant team-a; set it with `boxcar secret set --tenant team-a NAME`/,
    );
    const refused = await box.store.auditRecords({ tenant: 'team-a', limit: 1000 });
    assert.ok(refused.some((x) => x.action === 'request.refused' && /NOPE/.test(x.detail)));
  });

  test('25 impossible jobs do not push another tenant’s untrusted job off the primary runtime', async () => {
    const primary = box.policy.untrusted_code.runtime;
    for (let i = 0; i < 25; i++) {
      const r = await call('hostile', 'POST', '/v1/jobs', { command: 'true', resources: { memory: '1Pi' } });
      assert.equal(r.status, 422, r.raw);
      assert.match(String(r.body.error), /requests more than this node has/);
    }
    const job = await submit('partners', { command: 'true' });
    assert.equal(job.runtime, primary);
    assert.ok(
      !job.decision.reasons.some((r) => /breaker|falling back/.test(r)),
      job.decision.reasons.join(' | '),
    );
    await waitDone('partners', job.id);
  });

  test('tenant limits: defaults fill in, maxima and ratios are refused naming the field, priority and queue are capped', async () => {
    const small = await submit('capped', { ...selfTrust, command: 'sleep 30' });
    const stored = await box.store.getJob(small.id);
    assert.equal(stored?.spec.limits.memoryBytes, 128 * 2 ** 20, 'the tenant’s default memory');
    assert.equal(stored?.spec.timeoutMs, 5 * 60_000, 'the tenant’s default timeout');
    const refusals: Array<[Record<string, unknown>, RegExp]> = [
      [
        { resources: { memory: '1Gi' } },
        /resources\.memory: 1\.0 GiB is more than tenant capped allows \(512 MiB\); ask for at most 512 MiB/,
      ],
      [
        { resources: { memory: '512Mi', requests: { memory: '64Mi' } } },
        /resources\.requests\.memory: 64 MiB is too far below its limit 512 MiB .*request at least 256 MiB/,
      ],
      [{ priority: 50 }, /priority: 50 is above tenant capped's max_priority 10/],
    ];
    for (const [fields, message] of refusals) {
      const r = await call('capped', 'POST', '/v1/jobs', { ...selfTrust, command: 'true', ...fields });
      assert.equal(r.status, 400, r.raw);
      assert.match(String(r.body.error), message);
    }
    // One runs (its quota is one pod), two wait: the queue is full.
    const waiting = [
      await submit('capped', { ...selfTrust, command: 'true' }),
      await submit('capped', { ...selfTrust, command: 'true' }),
    ];
    const full = await call('capped', 'POST', '/v1/jobs', { ...selfTrust, command: 'true' });
    assert.equal(full.status, 429, full.raw);
    assert.match(String(full.body.error), /tenant capped has 2 jobs waiting, its most \(max_queued 2\)/);
    for (const j of [small, ...waiting]) await call('capped', 'POST', `/v1/jobs/${j.id}/cancel`);
    for (const j of [small, ...waiting]) assert.equal((await waitDone('capped', j.id)).state, 'cancelled');
    const cancels = await box.store.auditRecords({ tenant: 'capped', limit: 1000 });
    assert.equal(cancels.filter((r) => r.action === 'job.cancel').length, 3);
  });

  test('log streams: a tenant holds at most its cap at once', async () => {
    const job = await submit('team-a', { ...selfTrust, command: 'sleep 3' });
    const open = [0, 1].map(() =>
      fetch(`${base}/v1/jobs/${job.id}/logs?follow=true`, {
        headers: { authorization: `Bearer ${token['team-a']}` },
      }),
    );
    const streams = await Promise.all(open);
    assert.deepEqual(
      streams.map((s) => s.status),
      [200, 200],
    );
    const third = await follow('team-a', job.id);
    assert.equal(third.status, 429);
    assert.match(third.text, /already follows 2 logs, its most \(api\.max_follows_per_tenant 2\)/);
    await Promise.all(streams.map((s) => s.text()));
    assert.equal((await follow('team-a', job.id)).status, 200, 'a closed stream frees its place');
  });

  test('a failure of the server’s own says no more than a reference to its log', async () => {
    const getJob = box.store.getJob;
    box.store.getJob = () => Promise.reject(new Error('SQLITE_CORRUPT: internal detail at /var/lib/boxcar'));
    try {
      const r = await call('team-a', 'GET', '/v1/jobs/anything');
      assert.equal(r.status, 500);
      assert.match(String(r.body.error), /^internal error \(reference [0-9a-f-]{36} in the server's log\)$/);
      assert.doesNotMatch(r.raw, /SQLITE|var\/lib/);
    } finally {
      box.store.getJob = getJob;
    }
  });

  test('webhooks: a delivery sent 100 times is one pipeline; a new push cancels the previous push’s jobs', async () => {
    const repo = path.join(box.paths.root, 'tenant-repo');
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8' }).trim();
    execFileSync('git', ['init', '-q', repo]);
    const commit = () => {
      writeFileSync(
        path.join(repo, '.boxcar.yml'),
        `name: checks\njobs:\n  - name: slow\n    command: sleep 30 # ${Date.now()}\n`,
      );
      git('add', '.boxcar.yml');
      git('-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-q', '-m', 'ci');
      return git('rev-parse', 'HEAD');
    };
    const examples = require('@octokit/webhooks-examples/api.github.com/index.json') as Array<{
      name: string;
      examples: Array<{
        action: string;
        pull_request: { head: { sha: string; repo: { clone_url: string } } };
      }>;
    }>;
    const opened = examples
      .find((e) => e.name === 'pull_request')
      ?.examples.find((e) => e.action === 'opened');
    const deliver = async (sha: string, delivery: string, times: number) => {
      const payload = structuredClone(opened) as NonNullable<typeof opened>;
      payload.pull_request.head.sha = sha;
      payload.pull_request.head.repo.clone_url = repo;
      const body = JSON.stringify(payload);
      const signature = `sha256=${createHmac('sha256', WEBHOOK_SECRET).update(body).digest('hex')}`;
      return Promise.all(
        Array.from({ length: times }, () =>
          app.inject({
            method: 'POST',
            url: '/v1/webhooks/github',
            payload: body,
            headers: {
              'content-type': 'application/json',
              'x-github-event': 'pull_request',
              'x-github-delivery': delivery,
              'x-hub-signature-256': signature,
            },
          }),
        ),
      );
    };
    const jobsOf = async (delivery: string) => {
      for (let i = 0; i < 300; i++) {
        const d = (await call('team-a', 'GET', `/v1/deliveries/${delivery}`)).body as {
          state: string;
          jobs: string[];
          error: string;
        };
        if (d.state === 'done') return d.jobs;
        assert.notEqual(d.state, 'failed', d.error);
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('delivery still pending');
    };

    const first = commit();
    const replies = await deliver(first, 'delivery-one', 100);
    assert.equal(replies.filter((r) => r.statusCode === 202).length, 1);
    assert.equal(replies.filter((r) => r.statusCode === 200 && /"duplicate":true/.test(r.body)).length, 99);
    const [firstJob] = await jobsOf('delivery-one');
    assert.ok(firstJob);
    const job = (await call('team-a', 'GET', `/v1/jobs/${firstJob}`)).body as unknown as JobView;
    assert.equal(job.tenant, 'team-a', 'Codertocat/* maps to team-a');
    assert.equal(job.decision.trust, 'trusted');
    const group = (await box.store.getJob(firstJob))?.origin.group as string;
    assert.equal((await box.store.listJobs({ group })).length, 1, 'one pipeline for a hundred copies');
    assert.equal((await deliver(first, 'delivery-one', 1))[0]?.statusCode, 200, 'still remembered');

    const second = commit();
    await deliver(second, 'delivery-two', 1);
    const [secondJob] = await jobsOf('delivery-two');
    const superseded = await waitDone('team-a', firstJob);
    assert.equal(superseded.state, 'cancelled');
    const events = await box.store.events(firstJob);
    assert.ok(
      events.some((e) => /superseded by a newer push/.test(e.reason ?? '')) ||
        (await box.store.auditRecords({ tenant: 'team-a', limit: 10_000 })).some(
          (r) =>
            r.action === 'job.cancel' &&
            r.subject === firstJob &&
            /superseded by a newer push/.test(r.detail),
        ),
    );
    await call('team-a', 'POST', `/v1/jobs/${secondJob}/cancel`);
    assert.equal((await waitDone('team-a', secondJob as string)).state, 'cancelled');
  });
});
