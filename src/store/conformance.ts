import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { JobSpec } from '../jobs/spec.js';
import { checkChain } from './audit-chain.js';
import { Fenced, IllegalTransition, type JobOrigin, type Store } from './store.js';

const decision = { trust: 'trusted' as const, runtime: 'runc' as const, fallback: null, reasons: ['test'] };
const origin: JobOrigin = { via: 'api', actor: 'token:conformance' };
const spec = (extra: Record<string, unknown> = {}) => JobSpec.parse({ command: ['true'], ...extra });

/**
 * What every Store must do for a serving node, run against each implementation (SQLite, and
 * PostgreSQL for several nodes): claims that exactly one node wins, leases, requeues, cancel
 * requests, quota usage and tokens.
 */
export function storeConformance(
  name: string,
  open: () => Promise<Store>,
  /** Runs SQL on the same database behind the store's back (to try to edit the audit trail). */
  rawSql: (sql: string) => Promise<void>,
): void {
  describe(`${name} store: the queue of serving nodes`, () => {
    const withStore = async (fn: (s: Store) => Promise<void>) => {
      const s = await open();
      try {
        await fn(s);
      } finally {
        await s.close();
      }
    };
    let n = 0;
    const job = (s: Store, tenant = 't', extra: Record<string, unknown> = {}) =>
      s.createJob({
        id: `${name}-${process.pid}-${n++}`,
        tenant,
        spec: spec(extra),
        decision,
        origin,
        owner: null,
      });

    test('exactly one of several concurrent claims wins; a lease that runs out can be claimed again', () =>
      withStore(async (s) => {
        const j = await job(s);
        const now = Date.now();
        const wins = await Promise.all(['a', 'b', 'c', 'd'].map((o) => s.claim(j.id, o, now + 60_000)));
        assert.equal(wins.filter(Boolean).length, 1);
        assert.ok(!(await s.claimable(now, 100)).some((x) => x.id === j.id), 'a held job is not claimable');
        const shortJob = await job(s);
        assert.ok(await s.claim(shortJob.id, 'a', now - 1), 'claimed with a lease already over');
        assert.ok(await s.claim(shortJob.id, 'b', now + 60_000), 'an expired lease is claimable');
        await s.release(shortJob.id, 'b', 'waiting for quota q');
        const back = await s.getJob(shortJob.id);
        assert.equal(back?.owner, null);
        assert.equal(back?.waitReason, 'waiting for quota q');
      }));

    test('a requeue of a lost node’s job happens only if nobody took it since; a cancel outlives the requeue', () =>
      withStore(async (s) => {
        const now = Date.now();
        const j = await job(s);
        await s.claim(j.id, 'a', now - 1);
        await s.transition(j.id, 'starting');
        await s.transition(j.id, 'running');
        const seen = (await s.getJob(j.id)) as NonNullable<Awaited<ReturnType<Store['getJob']>>>;
        // Another node took it over after this one read it as expired.
        assert.ok(await s.takeOver(j.id, 'a', 'b', now + 60_000));
        await assert.rejects(
          s.requeue(j.id, now, 'lost', { expect: { owner: seen.owner, leaseUntil: seen.leaseUntil } }),
          IllegalTransition,
        );
        const kept = await s.getJob(j.id);
        assert.deepEqual([kept?.state, kept?.owner], ['running', 'b'], 'the new owner keeps it');
        // The lost node comes back and writes its result: fenced off, nothing changes.
        await assert.rejects(
          s.transition(j.id, 'succeeded', { exitCode: 0 }, undefined, undefined, { owner: 'a', attempts: 0 }),
          (err: Error) => err instanceof Fenced && /claim is b \(attempt 1\), not a/.test(err.message),
        );
        assert.equal((await s.getJob(j.id))?.state, 'running');
        // A cancel asked while it ran: a requeue (its node lost) ends it cancelled, not queued for ever.
        await s.requestCancel(j.id, 'token:t');
        // What the store holds (its clock's times, not the caller's) is what a caller expects.
        const held = (await s.getJob(j.id)) as NonNullable<typeof kept>;
        const after = await s.requeue(j.id, now, 'node b lost', {
          expect: { owner: 'b', leaseUntil: held.leaseUntil },
        });
        assert.equal(after.state, 'cancelled');
        assert.equal(after.owner, null);
      }));

    test('admission within a quota is atomic: of jobs claimed at once against a one-pod quota, one is admitted', () =>
      withStore(async (s) => {
        const tenant = `quota-${name}-${n++}`;
        const jobs = await Promise.all([0, 1, 2, 3].map(() => job(s, tenant)));
        const onePod = (used: { pods: number }) => (used.pods < 1 ? undefined : 'exceeded quota: pods=1');
        const results = await Promise.all(
          jobs.map((j, i) => s.claimWithinQuota(j.id, `node-${i}`, Date.now() + 60_000, onePod)),
        );
        assert.equal(results.filter((r) => r && !('refused' in r)).length, 1, 'one admitted');
        assert.equal(
          results.filter((r) => r && 'refused' in r && r.refused === 'exceeded quota: pods=1').length,
          3,
          'the others refused with the check’s reason',
        );
        assert.equal((await s.admittedUsage()).get(tenant)?.pods, 1);
      }));

    test('claimable gives each tenant its first jobs by priority, then age', () =>
      withStore(async (s) => {
        const tenant = `fair-${n}`;
        const low = await job(s, tenant, { priority: -5 });
        const first = await job(s, tenant);
        await job(s, tenant);
        const high = await job(s, tenant, { priority: 7 });
        const mine = (await s.claimable(Date.now(), 2)).filter((j) => j.tenant === tenant);
        assert.deepEqual(
          mine.map((j) => j.id),
          [high.id, first.id],
        );
        assert.ok(!mine.some((j) => j.id === low.id));
      }));

    test('requeue counts the attempt and respects its backoff; leases are renewed and expire', () =>
      withStore(async (s) => {
        const j = await job(s);
        await s.claim(j.id, 'node-a', Date.now() + 60_000);
        await s.transition(j.id, 'starting');
        const again = await s.requeue(j.id, Date.now() + 60_000, 'infrastructure failure');
        assert.equal(again.state, 'queued');
        assert.equal(again.attempts, 1);
        assert.equal(again.owner, null);
        assert.ok(!(await s.claimable(Date.now(), 100)).some((x) => x.id === j.id), 'not before its backoff');
        const k = await job(s);
        await s.claim(k.id, 'node-b', Date.now() - 10);
        await s.transition(k.id, 'starting');
        await s.transition(k.id, 'running', { startedAt: Date.now() });
        assert.ok((await s.expiredLeases(Date.now(), 1000)).some((x) => x.id === k.id));
        await s.renewLeases('node-b', Date.now() + 60_000);
        assert.ok(!(await s.expiredLeases(Date.now(), 1000)).some((x) => x.id === k.id));
        assert.equal(await s.takeOver(k.id, 'someone-else', 'node-c', Date.now() + 1), false);
        assert.equal(await s.takeOver(k.id, 'node-b', 'node-c', Date.now() + 60_000), true);
        assert.equal((await s.getJob(k.id))?.owner, 'node-c');
      }));

    test('cancel: a queued job at once; a running one is flagged for its owner', () =>
      withStore(async (s) => {
        const q = await job(s);
        assert.equal((await s.requestCancel(q.id, 'token:canceller')).state, 'cancelled');
        const r = await job(s);
        await s.claim(r.id, 'node-x', Date.now() + 60_000);
        await s.transition(r.id, 'starting');
        const flagged = await s.requestCancel(r.id, 'token:canceller');
        assert.equal(flagged.state, 'starting');
        assert.equal(flagged.cancelRequested, true);
        assert.deepEqual(await s.cancelRequests('node-x'), [r.id]);
        await assert.rejects(s.transition(q.id, 'starting'), IllegalTransition);
      }));

    test('admitted usage sums requests and limits of claimed, starting and running jobs per tenant', () =>
      withStore(async (s) => {
        const tenant = `usage-${n}`;
        const res = { memory: '512Mi', cpus: '2', requests: { memory: '128Mi', cpus: '250m' } };
        const a = await job(s, tenant, { resources: res });
        const b = await job(s, tenant, { resources: res });
        await job(s, tenant, { resources: res }); // queued, unclaimed: not admitted
        await s.claim(a.id, 'n', Date.now() + 60_000);
        await s.claim(b.id, 'n', Date.now() + 60_000);
        await s.transition(b.id, 'starting');
        assert.deepEqual((await s.admittedUsage()).get(tenant), {
          pods: 2,
          requestsMemoryBytes: 256 * 2 ** 20,
          limitsMemoryBytes: 1024 * 2 ** 20,
          requestsCpuMillis: 500,
          limitsCpuMillis: 4000,
        });
      }));

    test('tokens map to their tenant and role by hash', () =>
      withStore(async (s) => {
        const hash = `h-${name}-${process.pid}`;
        await s.addToken({ hash, id: `id-${hash}`, tenant: 'team-z', role: 'tenant' }, 'operator:root');
        await s.addToken(
          { hash: `${hash}-op`, id: `op-${hash}`, tenant: null, role: 'operator' },
          'operator:root',
        );
        assert.deepEqual(await s.tokenByHash(hash), {
          hash,
          id: `id-${hash}`,
          tenant: 'team-z',
          role: 'tenant',
        });
        assert.equal((await s.tokenByHash(`${hash}-op`))?.role, 'operator');
        assert.equal((await s.tokenByHash(`${hash}-op`))?.tenant, null);
        assert.equal(await s.tokenByHash('nope'), undefined);
      }));

    test('secrets: scoped by tenant and repository, replaced in place, removed; only sealed values are kept', () =>
      withStore(async (s) => {
        const tenant = `sec-${n++}`;
        const sealed = (repository: string, name: string, ciphertext: string) => ({
          tenant,
          repository,
          name,
          keyId: 'k1',
          nonce: 'n',
          ciphertext,
        });
        await s.putSecret(sealed('', 'NPM_TOKEN', 'c1'), 'operator:root');
        await s.putSecret(sealed('', 'NPM_TOKEN', 'c2'), 'operator:root');
        await s.putSecret(sealed('org/app', 'DEPLOY', 'c3'), 'operator:root');
        await s.putSecret(
          { ...sealed('', 'NPM_TOKEN', 'other'), tenant: `${tenant}-other` },
          'operator:root',
        );
        assert.deepEqual(
          (await s.listSecrets(tenant)).map((x) => [x.repository, x.name]),
          [
            ['', 'NPM_TOKEN'],
            ['org/app', 'DEPLOY'],
          ],
        );
        const tenantWide = await s.secretsFor(tenant, [], ['NPM_TOKEN', 'DEPLOY']);
        assert.deepEqual(
          tenantWide.map((x) => [x.name, x.ciphertext]),
          [['NPM_TOKEN', 'c2']],
        );
        const forRepo = await s.secretsFor(tenant, ['org/app'], ['NPM_TOKEN', 'DEPLOY']);
        assert.deepEqual(forRepo.map((x) => x.name).sort(), ['DEPLOY', 'NPM_TOKEN']);
        assert.equal(
          await s.deleteSecret({ tenant, repository: '', name: 'NPM_TOKEN' }, 'operator:root'),
          true,
        );
        assert.equal(
          await s.deleteSecret({ tenant, repository: '', name: 'NPM_TOKEN' }, 'operator:root'),
          false,
        );
        assert.deepEqual(await s.secretsFor(tenant, [], ['NPM_TOKEN']), []);
      }));

    test('audit: every change is chained in order, in the same transaction, and the trail refuses edits', () =>
      withStore(async (s) => {
        const tenant = `audit-${n}`;
        // Concurrent writers (other nodes) still make one unbroken chain.
        const jobs = await Promise.all([...Array(20).keys()].map(() => job(s, tenant)));
        await s.requestCancel((jobs[0] as { id: string }).id, 'token:x');
        await s.audit({ tenant, actor: 'token:x', action: 'request.refused', subject: 'POST /v1/jobs' });
        const mine = await s.auditRecords({ tenant, limit: 1000 });
        assert.equal(mine.filter((r) => r.action === 'job.submitted').length, 20);
        assert.ok(mine.some((r) => r.action === 'job.cancel'));
        assert.deepEqual(JSON.parse((mine[0] as { detail: string }).detail).reasons, ['test']);
        const all = await s.auditRecords({ limit: 1_000_000 });
        assert.ok('last' in checkChain(undefined, all), 'the chain is whole');
        await assert.rejects(rawSql('UPDATE audit SET actor = 1'), /append-only/);
        await assert.rejects(rawSql('DELETE FROM audit'), /append-only/);
        const tampered = all.map((r, i) => (i === 5 ? { ...r, actor: 'someone-else' } : r));
        assert.deepEqual(checkChain(undefined, tampered), {
          broken: { seq: 6, why: 'its contents do not match its hash (changed after it was written)' },
        });
        assert.match(
          JSON.stringify(
            checkChain(
              undefined,
              all.filter((_, i) => i !== 3),
            ),
          ),
          /record 4 is missing/,
        );
      }));

    test('webhook deliveries: a replay is refused, one node claims each, outcomes and pruning', () =>
      withStore(async (s) => {
        const id = `delivery-${name}-${n++}`;
        const d = { id, forge: 'github', tenant: 't', event: { sha: 'abc' }, receivedAt: Date.now() };
        const added = await Promise.all([...Array(10).keys()].map(() => s.addDelivery(d)));
        assert.equal(added.filter(Boolean).length, 1, 'one of ten concurrent copies is new');
        const [a, b] = await Promise.all([
          s.claimDeliveries('node-a', Date.now() + 60_000, 100),
          s.claimDeliveries('node-b', Date.now() + 60_000, 100),
        ]);
        assert.equal([...(a ?? []), ...(b ?? [])].filter((x) => x.id === id).length, 1);
        assert.deepEqual([...(a ?? []), ...(b ?? [])].find((x) => x.id === id)?.event, { sha: 'abc' });
        await s.settleDelivery(id, 'done', { jobs: ['j1', 'j2'] });
        const settled = await s.getDelivery(id);
        assert.deepEqual([settled?.state, settled?.jobs, settled?.attempts], ['done', ['j1', 'j2'], 1]);
        assert.equal(await s.addDelivery(d), false, 'remembered after it was handled');
        assert.ok((await s.pruneDeliveries(Date.now() + 1)) >= 1);
        assert.equal(await s.getDelivery(id), undefined);
      }));

    test('only infrastructure failures count as failed starts; jobs of a pull request are found by group', () =>
      withStore(async (s) => {
        const group = `github:org/app#${n}`;
        const runtime = 'gvisor' as const;
        const d = { ...decision, runtime };
        const mk = (extra: Partial<JobOrigin> = {}) =>
          s.createJob({
            id: `${name}-${process.pid}-${n++}`,
            tenant: 'g',
            spec: spec(),
            decision: d,
            origin: { ...origin, ...extra },
            owner: null,
          });
        const before = (await s.recentStarts(runtime, 1000)).length;
        const refused = await mk();
        await s.transition(refused.id, 'error', { error: 'exceeds quota' });
        const broken = await mk({ group });
        await s.transition(broken.id, 'starting');
        await s.transition(broken.id, 'error', { error: 'runsc failed', infraFailure: true });
        const retried = await mk({ group });
        await s.transition(retried.id, 'starting');
        await s.requeue(retried.id, 0, 'runsc failed', { infraFailure: true });
        const starts = await s.recentStarts(runtime, 1000);
        assert.equal(starts.length - before, 2);
        assert.ok(starts.slice(-2).every((x) => !x.ok));
        assert.deepEqual(
          (await s.listJobs({ group })).map((j) => j.id).sort(),
          [broken.id, retried.id].sort(),
        );
        assert.equal(
          await s.countJobs('g', ['queued']),
          (await s.listJobs({ tenant: 'g', states: ['queued'] })).length,
        );
      }));

    test('pipelines: one of two racing updates wins, the other reads again; newest first, by tenant and state', () =>
      withStore(async (s) => {
        const tenant = `pipe-${name}-${n++}`;
        const plan = { name: 'ci', stages: ['test'], jobs: [] };
        const p = await s.createPipeline({
          id: `${tenant}-1`,
          tenant,
          name: 'ci',
          plan,
          origin: { ...origin, commit: 'c'.repeat(40) },
          classifier: { source: 'external_pr', evidence: ['a fork'] },
          createdAt: 1000,
        });
        assert.equal(p.state, 'running');
        assert.deepEqual(p.jobs, {});
        assert.equal(p.classifier?.source, 'external_pr');
        const [a, b] = await Promise.all([
          s.updatePipeline(p.id, p.version, { jobs: { x: { attempts: ['j1'] } } }),
          s.updatePipeline(p.id, p.version, { jobs: { x: { attempts: ['j2'] } } }),
        ]);
        assert.equal([a, b].filter(Boolean).length, 1, 'exactly one write from one read wins');
        const now = (await s.getPipeline(p.id)) as NonNullable<typeof a>;
        assert.equal(now.version, p.version + 1);
        const done = await s.updatePipeline(p.id, now.version, {
          state: 'succeeded',
          finishedAt: 2000,
          cancelRequested: true,
        });
        assert.equal(done?.state, 'succeeded');
        assert.equal(done?.finishedAt, 2000);
        assert.equal(done?.cancelRequested, true);
        assert.deepEqual(done?.jobs, now.jobs, 'what a patch leaves out stays');
        await s.createPipeline({ id: `${tenant}-2`, tenant, name: 'ci', plan, origin, createdAt: 3000 });
        assert.deepEqual(
          (await s.listPipelines({ tenant })).map((x) => x.id),
          [`${tenant}-2`, `${tenant}-1`],
        );
        assert.deepEqual(
          (await s.listPipelines({ tenant, states: ['running'] })).map((x) => x.id),
          [`${tenant}-2`],
        );
        // The queue by runtime, across every tenant and node (a gauge of the scheduler's).
        const before = (await s.queuedByRuntime()).get('runc') ?? 0;
        const q = await job(s, tenant);
        assert.equal((await s.queuedByRuntime()).get('runc'), before + 1);
        await s.requestCancel(q.id, 'test');
        assert.equal((await s.queuedByRuntime()).get('runc') ?? 0, before);
      }));

    test('popular images: those of queued jobs first, then the most used, registry images only', () =>
      withStore(async (s) => {
        const img = (c: string) => `127.0.0.1:5000/${name}/${c}@sha256:${c.repeat(64)}`;
        const make = async (image: string, cancel: boolean) => {
          const j = await job(s, 'pop', { image });
          if (cancel) await s.requestCancel(j.id, 'test');
        };
        for (let i = 0; i < 3; i++) await make(img('a'), true);
        await make(img('b'), false);
        for (let i = 0; i < 2; i++) await make(img('c'), true);
        await make(`127.0.0.1:5000/${name}/tagged:1`, false);
        const since = Date.now() - 60_000;
        const mine = (list: string[]) => list.filter((r) => r.includes(`/${name}/`));
        assert.deepEqual(mine(await s.popularImages(since, 1000)), [img('b'), img('a'), img('c')]);
        assert.deepEqual(mine(await s.popularImages(Date.now() + 60_000, 1000)), [img('b')]);
      }));

    test('peer directory: holders are live serving peers, one node wins a piece, a dead claimer loses it', () =>
      withStore(async (s) => {
        const now = Date.now();
        const digest = `sha256:${name}${'0'.repeat(58)}`.slice(0, 71);
        const peer = (node: string, url: string | null, aliveUntil = now + 10_000) =>
          s.announcePeer({ node, url, tokenHash: `hash-${node}`, aliveUntil });
        await peer(`${name}-a`, 'http://127.0.0.1:1');
        await peer(`${name}-b`, 'http://127.0.0.1:2');
        await peer(`${name}-fetch-only`, null);
        await peer(`${name}-dead`, 'http://127.0.0.1:3', now - 1);
        assert.equal((await s.livePeer(`${name}-a`, now))?.tokenHash, `hash-${name}-a`);
        assert.equal(await s.livePeer(`${name}-dead`, now), undefined);

        const hold = (node: string, complete: boolean, pieces = '') =>
          s.holdBlob({ node, digest, size: 10, complete, pieces });
        await hold(`${name}-a`, false, 'AQ==');
        await hold(`${name}-b`, true);
        await hold(`${name}-fetch-only`, true);
        await hold(`${name}-dead`, true);
        const holders = await s.blobHolders(digest, `${name}-b`, now);
        assert.deepEqual(
          holders.map((h) => [h.node, h.url, h.complete, h.pieces]),
          [[`${name}-a`, 'http://127.0.0.1:1', false, 'AQ==']],
        );
        await hold(`${name}-a`, true);
        assert.equal(
          (await s.blobHolders(digest, 'x', now)).find((h) => h.node === `${name}-a`)?.complete,
          true,
        );
        await s.dropBlob(`${name}-a`, digest);
        assert.deepEqual(
          (await s.blobHolders(digest, 'x', now)).map((h) => h.node),
          [`${name}-b`],
        );

        // Two nodes race for piece 0: one wins. The winner may claim again; the loser may not.
        const [x, y] = await Promise.all([
          s.claimPiece(digest, 0, `${name}-a`, now, 5000),
          s.claimPiece(digest, 0, `${name}-b`, now, 5000),
        ]);
        assert.equal(Number(x) + Number(y), 1);
        const winner = x ? `${name}-a` : `${name}-b`;
        const loser = x ? `${name}-b` : `${name}-a`;
        assert.equal(await s.claimPiece(digest, 0, winner, now, 5000), true);
        assert.equal(await s.claimPiece(digest, 0, loser, now + 1000, 5000), false);
        // An unfinished claim goes stale; a finished one stays with its live holder.
        assert.equal(await s.claimPiece(digest, 0, loser, now + 6000, 5000), true);
        await s.pieceFetched(digest, 0, loser, 'ab'.repeat(32));
        assert.equal(await s.claimPiece(digest, 0, winner, now + 9000, 5000), false);
        // The dead peer's claim is anyone's.
        assert.equal(await s.claimPiece(digest, 1, `${name}-dead`, now, 5000), true);
        assert.equal(await s.claimPiece(digest, 1, `${name}-a`, now, 5000), true);
        assert.deepEqual(
          (await s.pieceClaims(digest)).map((c) => [c.index, c.node, c.sha256]),
          [
            [0, loser, 'ab'.repeat(32)],
            [1, `${name}-a`, null],
          ],
        );
        // A node that leaves takes its holdings and unfinished claims with it.
        await s.withdrawPeer(`${name}-a`);
        assert.equal(await s.livePeer(`${name}-a`, now), undefined);
        assert.deepEqual(
          (await s.pieceClaims(digest)).map((c) => c.index),
          [0],
        );
      }));
  });
}
