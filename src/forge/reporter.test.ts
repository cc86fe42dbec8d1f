import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { WebhooksConfig } from '../config/config.js';
import { silentLogger } from '../observability/logger.js';
import { metricsText } from '../observability/metrics.js';
import type { Delivery, JobRecord } from '../store/store.js';
import { forgeCall } from './http.js';
import { forgeReporter, type ForgeReporter } from './reporter.js';
import type { StatusQueueOptions } from './status-queue.js';
import { GITHUB_APP_OPERATIONS, githubSpec, gitlabSpec, jwtProblem, statesOf } from './testing/forge-apis.js';
import {
  startOpenApiServer,
  type Answer,
  type OpenApiDocument,
  type OpenApiServer,
  type SeenRequest,
} from './testing/openapi-server.js';

/**
 * The reporter against stand-ins for GitHub's and GitLab's APIs on loopback, every request
 * checked against the forge's published description (GitHub: @octokit/openapi; GitLab: the
 * vendored commit status API) and its credentials checked: job and pipeline statuses, retries
 * after a 500 and after a 429 with Retry-After, coalescing, the bound on memory, and a GitHub
 * App's JWT and installation token flow.
 */

const SHA = 'a'.repeat(40);
const FAST: StatusQueueOptions = {
  retry: { attempts: 5, baseMs: 50, maxMs: 200 },
  maxPending: 100,
  concurrency: 4,
};
const PUBLIC = 'https://boxcar.example.com/';

let github: OpenApiDocument;
let gitlab: OpenApiDocument;
const servers: OpenApiServer[] = [];
const reporters: ForgeReporter[] = [];
let dir: string;

before(async () => {
  github = githubSpec();
  gitlab = await gitlabSpec();
  dir = await mkdtemp(path.join(os.tmpdir(), 'bx-forge-'));
});
after(async () => {
  await Promise.all(reporters.map((r) => r.stop(0)));
  await Promise.all(servers.map((s) => s.close()));
  await rm(dir, { recursive: true, force: true });
});

function webhooks(over: {
  github?: Partial<WebhooksConfig['github']>;
  gitlab?: Partial<WebhooksConfig['gitlab']>;
}) {
  return {
    publicUrl: undefined,
    github: { tenant: 'github', repositories: {}, apiUrl: 'http://127.0.0.1:9', ...over.github },
    gitlab: { tenant: 'gitlab', repositories: {}, apiUrl: 'http://127.0.0.1:9', ...over.gitlab },
  };
}

async function server(
  spec: OpenApiDocument,
  authorize: (s: SeenRequest) => string | undefined,
  respond?: (s: SeenRequest) => Answer,
) {
  const s = await startOpenApiServer({ spec, authorize, respond });
  servers.push(s);
  return s;
}

const bearer = (token: string) => (s: SeenRequest) =>
  s.headers.authorization === `Bearer ${token}` ? undefined : `authorization ${s.headers.authorization}`;

function reporter(config: WebhooksConfig, queue = FAST, deliveries: Record<string, unknown> = {}) {
  const store = {
    getDelivery: async (id: string) =>
      deliveries[id] ? ({ id, event: deliveries[id] } as unknown as Delivery) : undefined,
  };
  const r = forgeReporter(config, store, silentLogger(), { publicUrl: PUBLIC, queue });
  assert.ok(r, 'credentials configured: a reporter');
  reporters.push(r);
  return r;
}

let jobs = 0;
function job(state: JobRecord['state'], over: Partial<JobRecord> = {}, forge = 'github'): JobRecord {
  return {
    id: `job-${++jobs}`,
    name: 'unit',
    state,
    runtime: 'runc',
    spec: { env: { BOXCAR_PIPELINE: 'checks' } },
    origin: { via: 'webhook', actor: `webhook:${forge}:d-1`, repository: 'org/app', commit: SHA },
    exitCode: state === 'failed' ? 1 : state === 'succeeded' ? 0 : null,
    durationMs: 1200,
    error: null,
    waitReason: null,
    ...over,
  } as unknown as JobRecord;
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const noProblems = (s: OpenApiServer) =>
  assert.deepEqual(
    s.seen.filter((r) => r.problems.length),
    [],
    'every request matches the API description',
  );

describe('GitHub commit statuses', () => {
  test('a job’s pending then success, and a pipeline’s, valid against GitHub’s OpenAPI description', async () => {
    const gh = await server(github, bearer('ghp_test'));
    const r = reporter(webhooks({ github: { apiUrl: gh.url, token: 'ghp_test' } }));
    const j = job('queued');
    r.jobChanged(j);
    await until('pending', () => gh.seen.length === 1);
    r.jobChanged({ ...j, state: 'succeeded', exitCode: 0 });
    r.pipelineChanged({ id: 'p-1', name: 'checks', state: 'failed', origin: j.origin });
    await until('three statuses', () => gh.seen.length === 3);
    noProblems(gh);
    assert.deepEqual(statesOf(gh.seen, 'boxcar/checks/unit'), ['pending', 'success']);
    assert.deepEqual(statesOf(gh.seen, 'boxcar/checks'), ['failure']);
    const first = gh.seen[0] as SeenRequest;
    assert.equal(first.operationId, 'repos/create-commit-status');
    assert.deepEqual(first.params, { owner: 'org', repo: 'app', sha: SHA });
    assert.deepEqual(first.body, {
      state: 'pending',
      context: 'boxcar/checks/unit',
      description: 'queued',
      target_url: `https://boxcar.example.com/v1/jobs/${j.id}/logs`,
    });
    const bodyOf = (context: string, state: string) =>
      gh.seen
        .map((s) => s.body as Record<string, string>)
        .find((b) => b.context === context && b.state === state);
    assert.equal(bodyOf('boxcar/checks/unit', 'success')?.description, 'succeeded in 1.2 s');
    assert.equal(
      bodyOf('boxcar/checks', 'failure')?.target_url,
      'https://boxcar.example.com/v1/pipelines/p-1',
    );
    assert.equal(first.headers['x-github-api-version'], '2022-11-28');
  });

  test('the check can fail: a field GitHub does not define, a bad state, an unknown path, a bad token', async () => {
    const gh = await server(github, bearer('ghp_test'));
    const call = (url: string, body: unknown, token = 'ghp_test') =>
      forgeCall('test', `${gh.url}${url}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        body,
      });
    await assert.rejects(
      call(`/repos/o/r/statuses/${SHA}`, { state: 'pending', colour: 'red' }),
      /422.*additional/,
    );
    await assert.rejects(call(`/repos/o/r/statuses/${SHA}`, { state: 'running' }), /422.*allowed values/);
    await assert.rejects(call(`/repos/o/r/status/${SHA}`, { state: 'pending' }), /422.*not an operation/);
    await assert.rejects(call(`/repos/o/r/statuses/${SHA}`, { state: 'pending' }, 'wrong'), /401/);
  });

  test('retried after a 500, and after a 429 no sooner than its Retry-After', async () => {
    const times: number[] = [];
    const gh = await server(github, bearer('t'), () => {
      times.push(Date.now());
      if (times.length === 1) return { status: 500, body: { message: 'oops' } };
      if (times.length === 2)
        return { status: 429, headers: { 'retry-after': '1' }, body: { message: 'slow down' } };
      return { status: 201, body: {} };
    });
    const r = reporter(webhooks({ github: { apiUrl: gh.url, token: 't' } }));
    r.jobChanged(job('failed'));
    await until('a third call', () => gh.seen.length === 3);
    const [, second, third] = times as [number, number, number];
    assert.ok(third - second >= 990, `waited the Retry-After asked for (${third - second} ms)`);
    noProblems(gh);
    assert.deepEqual(statesOf(gh.seen, 'boxcar/checks/unit'), ['failure', 'failure', 'failure']);
    const { text } = await metricsText();
    assert.match(text, /boxcar_forge_status_updates_total\{forge="github",outcome="retried"\} [2-9]/);
    assert.match(text, /boxcar_forge_status_updates_total\{forge="github",outcome="sent"\} [1-9]/);
  });

  test('states of one context coalesce to the newest; a late, older state and a repeat are not sent', async () => {
    const gh = await server(github, bearer('t'));
    const r = reporter(webhooks({ github: { apiUrl: gh.url, token: 't' } }));
    const j = job('queued');
    r.jobChanged(j); // in flight at once
    r.jobChanged({ ...j, state: 'running' }); // waits…
    r.jobChanged({ ...j, state: 'failed', exitCode: 2 }); // …and is replaced
    r.jobChanged({ ...j, state: 'queued' }); // an echo of the start: older than what waits
    await until('two calls', () => gh.seen.length >= 2);
    await new Promise((res) => setTimeout(res, 200));
    assert.deepEqual(statesOf(gh.seen, 'boxcar/checks/unit'), ['pending', 'failure']);
    assert.match((gh.seen[1]?.body as { description: string }).description, /failed \(exit 2\)/);
    r.jobChanged({ ...j, state: 'failed', exitCode: 2 }); // what the forge already shows
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(gh.seen.length, 2, 'a repeat of the status shown is not sent');
  });

  test('memory is bounded: past maxPending the oldest waiting status is dropped, and counted', async () => {
    const gh = await server(github, bearer('t'), () => ({ status: 503, body: { message: 'down' } }));
    const r = reporter(webhooks({ github: { apiUrl: gh.url, token: 't' } }), {
      retry: { attempts: 3, baseMs: 60_000, maxMs: 60_000 },
      maxPending: 2,
      concurrency: 1,
    });
    for (const name of ['a', 'b', 'c']) r.jobChanged(job('queued', { name }));
    await until('two calls', () => gh.seen.length === 2);
    assert.deepEqual(
      gh.seen.map((s) => (s.body as { context: string }).context),
      ['boxcar/checks/a', 'boxcar/checks/c'],
    );
    assert.match(
      (await metricsText()).text,
      /boxcar_forge_status_updates_total\{forge="github",outcome="dropped"\} 1/,
    );
  });

  test('a GitHub App: JWT → installation → token, cached until near expiry', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const keyFile = path.join(dir, 'app.pem');
    await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    let issued = 0;
    let lifetimeMs = 60_000; // within the five minutes' margin: taken again at the next call
    const gh = await server(
      github,
      (s) =>
        GITHUB_APP_OPERATIONS.has(s.operationId ?? '')
          ? jwtProblem(s.headers.authorization, 4242, publicKey)
          : s.headers.authorization === `Bearer ghs_${issued}`
            ? undefined
            : `expected installation token ghs_${issued}, got ${s.headers.authorization}`,
      (s) => {
        if (s.operationId === 'apps/get-repo-installation') return { status: 200, body: { id: 77 } };
        if (s.operationId === 'apps/create-installation-access-token') {
          assert.equal(s.params.installation_id, '77');
          issued++;
          return {
            status: 201,
            body: { token: `ghs_${issued}`, expires_at: new Date(Date.now() + lifetimeMs).toISOString() },
          };
        }
        return { status: 201, body: {} };
      },
    );
    const r = reporter(webhooks({ github: { apiUrl: gh.url, app: { id: 4242, privateKeyFile: keyFile } } }));
    const statuses = () => gh.seen.filter((s) => s.operationId === 'repos/create-commit-status').length;
    const report = async (name: string) => {
      const before = statuses();
      r.jobChanged(job('queued', { name }));
      await until(`status of ${name}`, () => statuses() === before + 1);
    };
    await report('one');
    await report('two');
    lifetimeMs = 3600_000;
    await report('three');
    await report('four');
    noProblems(gh);
    const [install, token, status] = [
      'apps/get-repo-installation',
      'apps/create-installation-access-token',
      'repos/create-commit-status',
    ];
    assert.deepEqual(
      gh.seen.map((s) => s.operationId),
      [install, token, status, token, status, token, status, status],
      'one installation lookup; a token taken again near its expiry, kept otherwise',
    );
  });
});

describe('GitLab commit statuses', () => {
  test('pending, running, failed on the merge request’s source project, valid against the vendored API', async () => {
    const gl = await server(gitlab, (s) =>
      s.headers['private-token'] === 'glpat-test' ? undefined : 'no PRIVATE-TOKEN',
    );
    const r = reporter(webhooks({ gitlab: { apiUrl: `${gl.url}/`, token: 'glpat-test' } }), FAST, {
      'd-1': { gitlab: { project: 99, ref: 'feature/x' } },
    });
    const j = job('queued', {}, 'gitlab');
    r.jobChanged(j);
    await until('pending', () => gl.seen.length === 1);
    r.jobChanged({ ...j, state: 'running' });
    await until('running', () => gl.seen.length === 2);
    r.jobChanged({ ...j, state: 'error', error: 'no runtime' });
    await until('failed', () => gl.seen.length === 3);
    noProblems(gl);
    assert.deepEqual(statesOf(gl.seen, 'boxcar/checks/unit'), ['pending', 'running', 'failed']);
    assert.equal(gl.seen[0]?.operationId, 'postCommitStatus');
    assert.deepEqual(gl.seen[0]?.params, { id: '99', sha: SHA });
    assert.deepEqual(gl.seen[0]?.body, {
      state: 'pending',
      name: 'boxcar/checks/unit',
      description: 'queued',
      ref: 'feature/x',
      target_url: `https://boxcar.example.com/v1/jobs/${j.id}/logs`,
    });
  });

  test('the check can fail: an unknown field, an unknown state, a long description', async () => {
    const gl = await server(gitlab, () => undefined);
    const call = (body: unknown) =>
      forgeCall('test', `${gl.url}/api/v4/projects/5/statuses/${SHA}`, { method: 'POST', headers: {}, body });
    await assert.rejects(call({ state: 'failed', context: 'x', colour: 1 }), /additional/);
    await assert.rejects(call({ state: 'failure' }), /allowed values/);
    await assert.rejects(call({ state: 'failed', description: 'x'.repeat(256) }), /255/);
    await call({ state: 'failed', context: 'x' });
  });
});
