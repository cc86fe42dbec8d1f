/**
 * Cost of one routing decision (webhook payload → trust → route, breaker state included) on
 * one core, over a realistic mix: 70% internal pull requests, 30% from forks, a tenth of them
 * GitLab merge requests, a few WASM jobs. Run: node dist/bench/policy-decisions.js [n]
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { JobSpec } from '../src/jobs/spec.js';
import { RuntimeHealthBook } from '../src/policy/health.js';
import { loadPolicy } from '../src/policy/load-policy.js';
import { route, trustFromSpec, webhookClaims } from '../src/policy/route.js';
import type { TrustInputs } from '../src/policy/trust.js';
import { githubPullRequestTrust, gitlabMergeRequestTrust } from '../src/policy/webhooks.js';
import { row } from './lib/stats.js';

const N = Number(process.argv[2] ?? 200_000);
const require = createRequire(import.meta.url);

type Payload = { pull_request: { author_association: string; head: { repo: { full_name: string } | null } } };

async function main() {
  const policy = await loadPolicy();
  const examples = require('@octokit/webhooks-examples/api.github.com/index.json') as Array<{
    name: string;
    examples: unknown[];
  }>;
  const prs = (examples.find((e) => e.name === 'pull_request')?.examples ?? []) as Payload[];
  const mr = JSON.parse(
    readFileSync(new URL('../../src/policy/testdata/gitlab-merge-request.json', import.meta.url), 'utf8'),
  ) as {
    object_attributes: { source_project_id: number };
  };
  const forks = prs.map((p) => {
    const f = structuredClone(p);
    f.pull_request.head.repo = { full_name: 'stranger/Hello-World' };
    f.pull_request.author_association = 'FIRST_TIME_CONTRIBUTOR';
    return f;
  });
  const mrFork = structuredClone(mr);
  mrFork.object_attributes.source_project_id = 999;

  // The breaker as the scheduler holds it: fed with 100 recent starts, views refreshed once.
  const book = new RuntimeHealthBook(policy, async (r) => ({
    runtime: r,
    usable: true,
    reason: 'ok',
    details: {},
  }));
  for (let i = 0; i < 100; i++) book.record('firecracker', i % 200 !== 0, Date.now() - 1000 + i);
  const views = await book.views(Date.now());

  const spec = JobSpec.parse({ command: ['make', 'test'] });
  // Every tenant trusted, so the payloads decide (the ceiling is one more comparison).
  const ceiling = { trust: 'trusted' as const, why: 'tenant bench is trusted' };
  const hook = (payload: TrustInputs) => webhookClaims(spec, payload, ceiling);
  const wasmSpec = JobSpec.parse({ command: ['lint'], image: 'lint.wasm', source: 'external_pr' });
  const mix: Array<() => unknown> = [];
  for (let i = 0; i < 100; i++) {
    const id = `job-${i}`;
    if (i < 3)
      mix.push(() =>
        route(
          policy,
          { jobId: id, spec: wasmSpec, trust: { ceiling, claim: trustFromSpec(wasmSpec) } },
          views,
        ),
      );
    else if (i < 10) {
      const p = i % 2 ? mr : mrFork;
      mix.push(() => route(policy, { jobId: id, spec, trust: hook(gitlabMergeRequestTrust(p)) }, views));
    } else if (i < 73) {
      const p = prs[i % prs.length];
      mix.push(() => route(policy, { jobId: id, spec, trust: hook(githubPullRequestTrust(p)) }, views));
    } else {
      const p = forks[i % forks.length];
      mix.push(() => route(policy, { jobId: id, spec, trust: hook(githubPullRequestTrust(p)) }, views));
    }
  }
  for (let i = 0; i < 20_000; i++) (mix[i % 100] as () => unknown)(); // warm-up (JIT)
  const t0 = performance.now();
  for (let i = 0; i < N; i++) (mix[i % 100] as () => unknown)();
  const ms = performance.now() - t0;
  const perUs = (ms * 1000) / N;
  console.log(`${N} routing decisions (payload → trust → route with breaker), one core`);
  console.log(row(['decisions per second', N / (ms / 1000)]));
  console.log(row(['µs per decision (target ≤ 10)', perUs]));
}

await main();
