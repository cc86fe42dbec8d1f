import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { JobSpec, RUNTIME_NAMES, type RuntimeName } from '../jobs/spec.js';
import { Breaker } from './breaker.js';
import { canaryBucket, inCanary } from './canary.js';
import { loadPolicy } from './load-policy.js';
import type { RoutingPolicy } from './policy-schema.js';
import {
  PolicyRefusal,
  route,
  trustFromSpec,
  webhookClaims,
  type RuntimeView,
  type RuntimeViews,
} from './route.js';

const healthy: RuntimeView = {
  usable: true,
  reason: 'ok',
  health: { failureRate: 0, available: 1, samples: 0 },
  breaker: 'closed',
  breakerReason: '',
  untrustedCode: { allowed: true },
};
const allHealthy: RuntimeViews = () => healthy;
/** A tenant whose ceiling lets its jobs' own claims decide. */
const TRUSTED_TENANT = { trust: 'trusted' as const, why: 'tenant team-a is trusted (tenants.team-a.trust)' };
const spec = (fields: Record<string, unknown>) => JobSpec.parse({ command: ['true'], ...fields });
const decide = (
  policy: RoutingPolicy,
  fields: Record<string, unknown>,
  views: RuntimeViews = allHealthy,
  jobId: string = randomUUID(),
) => {
  const s = spec(fields);
  return route(
    policy,
    { jobId, spec: s, trust: { ceiling: TRUSTED_TENANT, claim: trustFromSpec(s) } },
    views,
  );
};

test('trusted → runc, untrusted → firecracker with fallback gvisor, wasm modules → wasm', async () => {
  const p = await loadPolicy();
  const t = decide(p, { source: 'internal_repo', user_group: 'internal_team' });
  assert.deepEqual([t.trust, t.runtime, t.fallback], ['trusted', 'runc', null]);
  const u = decide(p, { source: 'external_pr', user_group: 'external_contributor' });
  assert.deepEqual([u.trust, u.runtime, u.fallback], ['untrusted', 'firecracker', 'gvisor']);
  const w = decide(p, { source: 'external_pr', image: 'lint.wasm' });
  assert.deepEqual([w.trust, w.runtime], ['untrusted', 'wasm']);
  // Half the trusted conditions is not trusted.
  assert.equal(decide(p, { source: 'internal_repo', user_group: 'external_contributor' }).trust, 'untrusted');
  assert.equal(decide(p, {}).trust, 'untrusted', 'no inputs at all: untrusted');
});

test('trust is the lowest of the tenant’s ceiling, the job’s claim and the webhook payload; the reasons name what lowered it', async () => {
  const p = await loadPolicy();
  const selfTrust = { source: 'internal_repo', user_group: 'internal_team', secrets: ['TOKEN'] };
  const claimsTrusted = spec(selfTrust);
  const partners = {
    trust: 'untrusted' as const,
    why: 'tenant partners is untrusted (tenants.partners.trust)',
  };
  const byCeiling = route(
    p,
    { jobId: 'j', spec: claimsTrusted, trust: { ceiling: partners, claim: trustFromSpec(claimsTrusted) } },
    allHealthy,
  );
  assert.equal(byCeiling.trust, 'untrusted');
  assert.notEqual(byCeiling.runtime, 'runc');
  assert.ok(
    byCeiling.reasons.includes(
      "untrusted, lowered by the tenant's ceiling: tenant partners is untrusted (tenants.partners.trust)",
    ),
    byCeiling.reasons.join(' | '),
  );
  assert.ok(byCeiling.reasons.includes('secrets withheld from an untrusted job: TOKEN'));
  assert.throws(
    () =>
      route(
        p,
        {
          jobId: 'j',
          spec: spec({ ...selfTrust, runtime: 'runc' }),
          trust: { ceiling: partners, claim: trustFromSpec(claimsTrusted) },
        },
        allHealthy,
      ),
    /untrusted \(tenant partners is untrusted/,
  );

  // A webhook job: a fork's file claiming internal code is lowered by the payload; an internal
  // pull request's file saying it is external lowers itself.
  const fork = {
    source: 'external_pr',
    userGroup: 'external_contributor',
    repository: 'org/app',
    evidence: ['a fork'],
  };
  const internal = {
    source: 'internal_repo',
    userGroup: 'internal_team',
    repository: 'org/app',
    evidence: ['same repository'],
  };
  const hooked = (file: Record<string, unknown>, payload: typeof fork) => {
    const s = spec(file);
    return route(p, { jobId: 'j', spec: s, trust: webhookClaims(s, payload, TRUSTED_TENANT) }, allHealthy);
  };
  const fromFork = hooked({ source: 'internal_repo', user_group: 'internal_team' }, fork);
  assert.equal(fromFork.trust, 'untrusted');
  assert.match(
    fromFork.reasons.join(' | '),
    /lowered by the webhook payload: source is external_pr, not internal_repo/,
  );
  assert.doesNotMatch(fromFork.reasons.join(' | '), /job's own claim/);
  const selfLowered = hooked({ source: 'external_pr' }, internal);
  assert.equal(selfLowered.trust, 'untrusted');
  assert.match(selfLowered.reasons.join(' | '), /lowered by the job's own claim: source is external_pr/);
  const agreed = hooked({}, internal);
  assert.equal(agreed.trust, 'trusted');
  assert.match(
    agreed.reasons.at(-2) ?? '',
    /^trusted: .* for the job and the webhook payload; ceiling: tenant team-a is trusted/,
  );
});

test('property: a tenant whose ceiling is untrusted never gets trust, whatever its jobs and payloads say', async () => {
  const p = await loadPolicy();
  const input = fc.record({
    source: fc.option(fc.constantFrom('internal_repo', 'external_pr'), { nil: undefined }),
    userGroup: fc.option(fc.constantFrom('internal_team', 'external_contributor'), { nil: undefined }),
    repository: fc.option(fc.constantFrom('org/app', 'stranger/fork'), { nil: undefined }),
  });
  fc.assert(
    fc.property(input, fc.option(input, { nil: undefined }), (own, payload) => {
      const s = spec(
        Object.fromEntries(
          Object.entries({
            source: own.source,
            user_group: own.userGroup,
            repository: own.repository,
          }).filter(([, v]) => v !== undefined),
        ),
      );
      const ceiling = { trust: 'untrusted' as const, why: 'not listed' };
      const trust = payload
        ? webhookClaims(s, { ...payload, evidence: [] }, ceiling)
        : { ceiling, claim: trustFromSpec(s) };
      const d = route(p, { jobId: 'j', spec: s, trust }, allHealthy);
      return d.trust === 'untrusted' && d.runtime !== 'runc';
    }),
    { numRuns: 2000 },
  );
});

test('an untrusted job asking for runc is refused; other sandboxes may be asked for', async () => {
  const p = await loadPolicy();
  assert.throws(
    () => decide(p, { source: 'external_pr', runtime: 'runc' }),
    (e: unknown) => e instanceof PolicyRefusal && /may not run on runc/.test(e.message),
  );
  assert.equal(decide(p, { source: 'external_pr', runtime: 'gvisor' }).runtime, 'gvisor');
});

test('secrets are withheld from untrusted jobs, and the decision says so', async () => {
  const p = await loadPolicy();
  const u = decide(p, { source: 'external_pr', secrets: ['NPM_TOKEN'] });
  assert.ok(u.reasons.some((r) => r === 'secrets withheld from an untrusted job: NPM_TOKEN'));
  const t = decide(p, { source: 'internal_repo', user_group: 'internal_team', secrets: ['NPM_TOKEN'] });
  assert.ok(!t.reasons.some((r) => r.includes('withheld')));
});

test('property: whatever the job and the runtimes’ health, untrusted code never lands on runc', async () => {
  const p = await loadPolicy();
  const runtime = fc.option(fc.constantFrom(...RUNTIME_NAMES), { nil: undefined });
  const view = fc.record({
    usable: fc.boolean(),
    reason: fc.constant('x'),
    health: fc.record({
      failureRate: fc.double({ min: 0, max: 1, noNaN: true }),
      available: fc.double({ min: 0, max: 1, noNaN: true }),
      samples: fc.nat(),
    }),
    breaker: fc.constantFrom('closed' as const, 'open' as const, 'half-open' as const),
    breakerReason: fc.constant(''),
    untrustedCode: fc.record({ allowed: fc.boolean(), why: fc.constant('TCG') }),
  });
  fc.assert(
    fc.property(
      fc.record({
        source: fc.option(fc.constantFrom('internal_repo', 'external_pr'), { nil: undefined }),
        user_group: fc.option(fc.constantFrom('internal_team', 'external_contributor', 'contractors'), {
          nil: undefined,
        }),
        image: fc.option(fc.constantFrom('x.wasm', 'boxcar/base'), { nil: undefined }),
        runtime,
      }),
      fc.dictionary(fc.constantFrom(...RUNTIME_NAMES), view),
      fc.uuid(),
      (fields, views, id) => {
        const clean = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
        const v = (r: RuntimeName) => views[r] ?? healthy;
        try {
          const d = decide(p, clean, v, id);
          // Neither runc nor a runtime that is no boundary here (a microVM on TCG).
          const holds = (r: RuntimeName | null) => r !== 'runc' && (r === null || v(r).untrustedCode.allowed);
          return d.trust === 'trusted' || (holds(d.runtime) && holds(d.fallback));
        } catch (err) {
          return (
            err instanceof PolicyRefusal &&
            (clean.runtime === 'runc' ||
              (clean.runtime !== undefined && !v(clean.runtime as RuntimeName).untrustedCode.allowed) ||
              !v('gvisor').untrustedCode.allowed)
          );
        }
      },
    ),
    { numRuns: 5000 },
  );
});

test('canary: 10,000 job ids split within ±2% of the percentage, the same way every time', async () => {
  const ids: string[] = Array.from({ length: 10_000 }, () => randomUUID());
  for (const pct of [10, 50, 90]) {
    const share = (ids.filter((id) => inCanary(id, pct)).length / ids.length) * 100;
    assert.ok(Math.abs(share - pct) <= 2, `${pct}%: got ${share.toFixed(2)}%`);
  }
  for (const id of ids.slice(0, 100)) assert.equal(canaryBucket(id), canaryBucket(id));
  const p = await loadPolicy();
  const stage2: RoutingPolicy = { ...p, untrusted_code: { ...p.untrusted_code, canary_percent: 50 } };
  const id = ids[0] as string;
  const first = decide(stage2, { source: 'external_pr' }, allHealthy, id).runtime;
  for (let i = 0; i < 5; i++)
    assert.equal(
      decide(stage2, { source: 'external_pr' }, allHealthy, id).runtime,
      first,
      'a retry keeps its side of the split',
    );
});

test('fallback: an unusable primary, low availability or an open breaker send untrusted jobs to gvisor', async () => {
  const p = await loadPolicy();
  const views = (over: Partial<RuntimeView>) => (r: RuntimeName) =>
    r === 'firecracker' ? { ...healthy, ...over } : healthy;
  const gone = decide(p, { source: 'external_pr' }, views({ usable: false, reason: 'no /dev/kvm' }));
  assert.equal(gone.runtime, 'gvisor');
  assert.match(gone.reasons.at(-1) ?? '', /firecracker is not usable on this node \(no \/dev\/kvm\)/);
  const scarce = decide(
    p,
    { source: 'external_pr' },
    views({ health: { failureRate: 0, available: 0.4, samples: 0 } }),
  );
  assert.equal(scarce.runtime, 'gvisor');
  assert.match(scarce.reasons.at(-1) ?? '', /firecracker_available < 0\.5/);
  const open = decide(
    p,
    { source: 'external_pr' },
    views({ breaker: 'open', breakerReason: 'firecracker_failure_rate > 0.01 (failure_rate is 0.020)' }),
  );
  assert.equal(open.runtime, 'gvisor');
  // Each says why, in a word the fallback metric counts (boxcar_fallbacks_total{from,to,reason}).
  assert.deepEqual(
    [gone, scarce, open].map((d) => d.fellBack),
    [
      { from: 'firecracker', reason: 'unusable' },
      { from: 'firecracker', reason: 'unavailable' },
      { from: 'firecracker', reason: 'breaker_open' },
    ],
  );
  const probe = decide(p, { source: 'external_pr' }, views({ breaker: 'half-open' }));
  assert.equal(probe.fellBack, undefined, 'the primary, not a fallback');
  assert.equal(probe.runtime, 'firecracker');
  assert.ok(probe.reasons.some((r) => r.includes('probe')));
});

test('a microVM on TCG is no boundary: untrusted jobs go to gvisor and say why, unless the operator opted in', async () => {
  const p = await loadPolicy();
  const tcg = 'QEMU runs guests with TCG here (no KVM), and TCG is no security boundary';
  const views =
    (untrustedCode: RuntimeView['untrustedCode']): RuntimeViews =>
    (r) =>
      r === 'firecracker' ? { ...healthy, untrustedCode } : healthy;
  const refused = views({ allowed: false, why: tcg });
  const moved = decide(p, { source: 'external_pr' }, refused);
  assert.deepEqual([moved.runtime, moved.fallback], ['gvisor', null]);
  assert.match(moved.reasons.at(-1) ?? '', /falling back to gvisor: firecracker is no boundary .*TCG/);
  assert.deepEqual(moved.fellBack, { from: 'firecracker', reason: 'no_boundary' });
  assert.throws(
    () => decide(p, { source: 'external_pr', runtime: 'firecracker' }, refused),
    (err: Error) =>
      err instanceof PolicyRefusal && /no boundary for untrusted code on this node: .*TCG/.test(err.message),
  );
  const trusted = decide(
    p,
    { source: 'internal_repo', user_group: 'internal_team', runtime: 'firecracker' },
    refused,
  );
  assert.equal(trusted.runtime, 'firecracker', 'trusted jobs may ask for a microVM on TCG');
  const optIn = 'firecracker runs untrusted code on TCG: microvm.allow_tcg_for_untrusted is set';
  const allowed = decide(p, { source: 'external_pr' }, views({ allowed: true, why: optIn }));
  assert.deepEqual([allowed.runtime, allowed.fallback], ['firecracker', 'gvisor']);
  assert.ok(allowed.reasons.includes(optIn), 'the opt-in is written in the decision');
});

test('breaker: trips past 1% failures, half-opens after the cool-down, closes after good probes, reopens on a bad one', async () => {
  const p = await loadPolicy();
  const trips = p.untrusted_code.fallback_conditions.filter((c) => c.metric === 'failure_rate');
  const b = new Breaker({ window: 100, minSamples: 20, cooldownMs: 1000, probes: 3 }, trips);
  let t = 0;
  for (let i = 0; i < 99; i++) b.record(true, t++);
  b.record(false, t++);
  assert.equal(b.stateAt(t), 'closed', 'exactly 1% is not more than 1%');
  const trippedAt = t;
  b.record(false, trippedAt);
  assert.equal(b.stateAt(trippedAt + 1), 'open');
  assert.match(b.reason(), /firecracker_failure_rate > 0\.01 \(failure_rate is 0\.020\)/);
  assert.equal(b.stateAt(trippedAt + 999), 'open');
  assert.equal(b.stateAt(trippedAt + 1000), 'half-open');
  b.record(false, trippedAt + 1001);
  assert.equal(b.stateAt(trippedAt + 1002), 'open', 'a failed probe reopens it');
  const later = trippedAt + 3001;
  assert.equal(b.stateAt(later), 'half-open');
  for (let i = 0; i < 3; i++) b.record(true, later + i);
  assert.equal(b.stateAt(later + 10), 'closed');
  assert.equal(b.health(1).samples, 0, 'closing starts a fresh window');

  const few = new Breaker({ window: 100, minSamples: 20, cooldownMs: 1000, probes: 3 }, trips);
  for (let i = 0; i < 5; i++) few.record(false, i);
  assert.equal(few.stateAt(10), 'closed', 'fewer starts than min_samples never trip it');
});
