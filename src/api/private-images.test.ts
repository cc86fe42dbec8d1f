import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Scheduler } from '../scheduler/scheduler.js';
import { leftovers, testBoxcar } from '../testing/harness.js';
import { pushLayout, writeLayout } from '../testing/oci-images.js';
import { startRegistry, type TestRegistry } from '../testing/registry.js';
import type { JobView } from './job-view.js';
import { buildApi } from './server.js';
import { createToken } from './tokens.js';

/**
 * A private image across tenants, against the CNCF registry with htpasswd: the tenant whose
 * credentials reach it runs it; another tenant, by tag or by the very digest now in the node's
 * cache, and even with the node's own credentials configured for that registry, gets a refusal
 * that says how to log in, and no job.
 */
describe('private images across tenants', () => {
  const USER = { name: 'acme', password: 'acme-registry-pass' };
  let registry: TestRegistry;
  let box: Awaited<ReturnType<typeof testBoxcar>>;
  let scheduler: Scheduler;
  let app: FastifyInstance;
  let work: string;
  const token: Record<string, string> = {};

  before(async () => {
    registry = await startRegistry({ user: USER });
    work = await mkdtemp(path.join(os.tmpdir(), 'bx-private-'));
    await writeLayout(
      path.join(work, 'layout'),
      'v',
      [
        [
          { name: 'bin/', type: 'directory' },
          { name: 'bin/busybox', content: readFileSync('/bin/busybox'), mode: 0o755 },
          { name: 'bin/sh', type: 'symlink', linkname: 'busybox' },
          { name: 'secret-sauce', content: 'only acme sees this\n' },
        ],
      ],
      { compression: 'gzip' },
    );
    await pushLayout(
      path.join(work, 'layout'),
      'v',
      `${registry.host}/acme/app:1`,
      `${USER.name}:${USER.password}`,
    );
    // The node itself may pull from that registry: its credentials are the operator's, not a tenant's.
    const config = path.join(work, 'config.yaml');
    await writeFile(
      config,
      `tenants:\n  acme: { trust: trusted }\n  rival: { trust: trusted }\n` +
        `registries:\n  auth:\n    "${registry.host}": { username: ${USER.name}, password: ${USER.password} }\n`,
    );
    box = await testBoxcar({ config });
    scheduler = new Scheduler(box, { pollMs: 100 });
    await scheduler.start();
    app = buildApi(box, scheduler);
    for (const t of ['acme', 'rival'])
      token[t] = (await createToken(box.store, { tenant: t, role: 'tenant' }, 'operator:test')).token;
    await box.registryLogins.set(
      'acme',
      registry.host,
      { username: USER.name, password: USER.password },
      'operator:test',
    );
  });
  after(async () => {
    await app?.close();
    await scheduler?.stop(10_000);
    const left = box ? await leftovers(box.paths) : [];
    await box?.cleanup();
    await registry?.stop();
    await rm(work, { recursive: true, force: true });
    assert.deepEqual(left, []);
  });

  const submit = async (tenant: string, image: string) => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      payload: { image, source: 'internal_repo', user_group: 'internal_team', command: 'cat /secret-sauce' },
      headers: { authorization: `Bearer ${token[tenant]}` },
    });
    return { status: res.statusCode, body: JSON.parse(res.body) as JobView & { error?: string } };
  };
  const jobsOf = async (tenant: string) =>
    JSON.parse(
      (await app.inject({ url: '/v1/jobs', headers: { authorization: `Bearer ${token[tenant]}` } })).body,
    ) as unknown[];

  test('the tenant whose credentials reach the image runs it; another cannot, by tag or by digest', async () => {
    const own = await submit('acme', `${registry.host}/acme/app:1`);
    assert.equal(own.status, 201, JSON.stringify(own.body));
    const done = JSON.parse(
      (
        await app.inject({
          url: `/v1/jobs/${own.body.id}?wait=60s`,
          headers: { authorization: `Bearer ${token.acme}` },
        })
      ).body,
    ) as JobView;
    assert.equal(done.state, 'succeeded', done.error ?? '');
    const logs = await app.inject({
      url: `/v1/jobs/${own.body.id}/logs`,
      headers: { authorization: `Bearer ${token.acme}` },
    });
    assert.match(logs.body, /only acme sees this/);
    const pinned = own.body.image?.ref as string;
    assert.match(pinned, /@sha256:[0-9a-f]{64}$/);

    // The image is in the node's cache now. The rival has no credentials of its own.
    for (const image of [`${registry.host}/acme/app:1`, pinned]) {
      const r = await submit('rival', image);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.match(
        r.body.error ?? '',
        new RegExp(
          `refused access to image .*\\(401\\); give tenant rival its own credentials for it: \`boxcar registry login --tenant rival ${registry.host.replace(/\./g, '\\.')}\``,
        ),
      );
    }
    // Wrong credentials are no better.
    await box.registryLogins.set(
      'rival',
      registry.host,
      { username: USER.name, password: 'guessed-wrong' },
      'operator:test',
    );
    assert.equal((await submit('rival', pinned)).status, 400);
    assert.deepEqual(await jobsOf('rival'), []);
  });
});
