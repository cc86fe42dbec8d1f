import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { openBoxcar } from '../boxcar.js';
import { JobSpec } from '../jobs/spec.js';
import { silentLogger } from '../observability/logger.js';
import { criLines, jobLogPath } from '../runner/job-log.js';
import { leftovers, tempState } from '../testing/harness.js';
import { boxcarSync, exited, startServe } from '../testing/serve-process.js';

/**
 * The dashboard in Chromium (Debian's, driven by playwright-core) against a real `boxcar serve`
 * running real runc jobs: a tenant logs in, watches its job go from queued to succeeded without
 * a reload, follows a live log (colours, sections, escaping, line links), sees none of another
 * tenant's jobs; an operator sees the fleet. Every page passes axe-core's serious and critical
 * rules. Screenshots are kept in dist/test-output/dashboard/ (the live log also as
 * docs/dashboard.png, the README's). Timings are printed as diagnostics, not asserted.
 */
const require = createRequire(import.meta.url);
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SHOTS = path.join(ROOT, 'dist/test-output/dashboard');
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const FLEET_JOBS = 1000;
const RUNTIMES = ['runc', 'gvisor', 'wasm', 'firecracker'] as const;
/** A 10 MB log: the page starts at its tail. */
const BIG_LOG_BYTES = 10 * 1024 * 1024;

const CONFIG = `tenants:
  team-a: { trust: trusted }
  team-b: { trust: trusted }
  team-c: { trust: trusted }
quotas:
  - apiVersion: v1
    kind: ResourceQuota
    metadata: { name: one-at-a-time, namespace: team-a }
    spec: { hard: { pods: "1" } }
`;

/**
 * Finished jobs of team-c straight into the store (before the node starts, so none runs): the
 * fleet's figures and the 1,000-job list; the first gets a 10 MB log.
 */
async function fabricateJobs(root: string, config: string): Promise<{ bigLogJob: string }> {
  const box = await openBoxcar({ state: root, config }, silentLogger());
  try {
    let bigLogJob = '';
    for (let i = 0; i < FLEET_JOBS; i++) {
      const runtime = RUNTIMES[i % RUNTIMES.length] as (typeof RUNTIMES)[number];
      const id = `fab-${String(i).padStart(4, '0')}-${runtime}`;
      const spec = JobSpec.parse({ name: `build-${i}`, command: 'make' });
      const job = await box.store.createJob({
        id,
        tenant: 'team-c',
        spec,
        decision: {
          trust: i % 3 ? 'trusted' : 'untrusted',
          runtime,
          fallback: null,
          reasons: ['made up for the dashboard test'],
        },
        origin: { via: 'api', actor: 'token:test' },
        owner: null,
      });
      const created = job.createdAt; // the store's clock: waits are measured from it
      const startupMs = ([120, 600, 15, 900][i % 4] as number) + (i % 7) * 40;
      await box.store.transition(id, 'starting', { owner: 'test' });
      await box.store.transition(id, 'running', { startedAt: created + (i % 11) * 150, startupMs });
      await box.store.transition(id, 'succeeded', {
        exitCode: 0,
        durationMs: 30_000 + i * 10,
        finishedAt: created + 40_000 + i * 10,
        peakMemoryBytes: 64 * 2 ** 20,
        cpuUsageNs: 2e9,
      });
      if (i === 0) bigLogJob = id;
    }
    const lines: string[] = [];
    for (let n = 1, size = 0; size < BIG_LOG_BYTES; n++) {
      const line = criLines({ stream: 'stdout', text: `\x1b[32mline ${n}\x1b[0m ${'x'.repeat(80)}\n` });
      lines.push(line);
      size += line.length; // ASCII: characters are bytes
    }
    mkdirSync(box.paths.logs, { recursive: true });
    writeFileSync(jobLogPath(box.paths, bigLogJob), lines.join(''));
    return { bigLogJob };
  } finally {
    await box.close();
  }
}

describe('the dashboard in Chromium', () => {
  let state: Awaited<ReturnType<typeof tempState>>;
  let serve: { child: ChildProcess; url: string } | undefined;
  let browser: Browser | undefined;
  const token: Record<string, string> = {};
  let bigLogJob: string;
  let otherTenantJob: string;

  const api = async <T>(who: string, url: string, init: RequestInit = {}) => {
    const res = await fetch(`${serve?.url}${url}`, {
      ...init,
      headers: { authorization: `Bearer ${token[who]}`, 'content-type': 'application/json', ...init.headers },
    });
    const body = (await res.json()) as T;
    assert.ok(res.ok, `${url}: ${res.status} ${JSON.stringify(body)}`);
    return body;
  };
  const submit = (who: string, name: string, command: string) =>
    api<{ id: string }>(who, '/v1/jobs', {
      method: 'POST',
      body: JSON.stringify({ name, command, source: 'internal_repo', user_group: 'internal_team' }),
    }).then((j) => j.id);
  /** A logged-in browser context of its own (its own cookie jar). */
  const loginAs = async (who: string): Promise<{ context: BrowserContext; page: Page }> => {
    const context = await (browser as Browser).newContext({ viewport: { width: 1280, height: 860 } });
    const page = await context.newPage();
    await page.goto(`${serve?.url}/`);
    await page.waitForURL(/\/ui\/login$/);
    await page.fill('#token', token[who] as string);
    await page.click('button[type=submit]');
    await page.waitForURL(`${serve?.url}/`);
    return { context, page };
  };
  const shot = async (page: Page, name: string) => {
    const file = path.join(SHOTS, `${name}.png`);
    await page.screenshot({ path: file, fullPage: false });
    return file;
  };
  /** axe-core's serious and critical findings on the page as it is now. */
  const axeProblems = async (page: Page) => {
    await page.evaluate(AXE); // through the debugger protocol: the page's CSP does not apply
    const found = await page.evaluate(async () => {
      const w = window as unknown as {
        axe: {
          run: () => Promise<{
            violations: Array<{ id: string; impact: string; nodes: Array<{ target: unknown }> }>;
          }>;
        };
      };
      return (await w.axe.run()).violations;
    });
    return found
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${JSON.stringify(v.nodes.map((n) => n.target))}`);
  };

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    state = await tempState('bx-dashboard-');
    const config = path.join(state.root, 'config.yaml');
    writeFileSync(config, CONFIG);
    ({ bigLogJob } = await fabricateJobs(state.root, config));
    serve = await startServe(['--state', state.root, '--config', config, '--drain', '5s']);
    const cli = ['--state', state.root, '--config', config, 'token', 'create'];
    token.a = boxcarSync([...cli, '--tenant', 'team-a']);
    token.b = boxcarSync([...cli, '--tenant', 'team-b']);
    token.operator = boxcarSync([...cli, '--operator']);
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
    otherTenantJob = await submit('b', 'team-b-private-job', 'echo b');
  });

  after(async () => {
    await browser?.close();
    if (serve) {
      serve.child.kill('SIGTERM');
      await exited(serve.child);
    }
    const left = state ? await leftovers(state) : [];
    await state?.cleanup();
    assert.deepEqual(left, []);
  });

  test('a page needs a login: a wrong token is refused; the session cookie is HttpOnly and SameSite=Strict', async () => {
    const res = await fetch(`${serve?.url}/`, { redirect: 'manual' });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), '/ui/login');
    const context = await (browser as Browser).newContext();
    try {
      const page = await context.newPage();
      const login = await page.goto(`${serve?.url}/ui/login`);
      assert.match(login?.headers()['content-security-policy'] ?? '', /script-src 'self'/);
      assert.deepEqual(await axeProblems(page), [], 'login page');
      await page.fill('#token', 'bxc_not-a-token');
      await page.click('button[type=submit]');
      assert.match((await page.textContent('[role=alert]')) ?? '', /Unknown API token/);
      await page.fill('#token', token.a as string);
      await page.click('button[type=submit]');
      await page.waitForURL(`${serve?.url}/`);
      const [cookie] = await context.cookies();
      assert.equal(cookie?.name, 'boxcar_session');
      assert.equal(cookie?.httpOnly, true);
      assert.equal(cookie?.sameSite, 'Strict');
      assert.ok(!cookie?.value.includes(token.a as string), 'the browser never holds the token');
      const badLimit = await page.request.get(`${serve?.url}/?limit=lots`);
      assert.equal(badLimit.status(), 400);
      assert.match(await badLimit.text(), /limit: use a whole number/);
      const crossSite = await fetch(`${serve?.url}/ui/login`, {
        method: 'POST',
        headers: { origin: 'https://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: token.a as string }),
        redirect: 'manual',
      });
      assert.equal(crossSite.status, 403, 'a login form posted from another site');
      assert.equal(crossSite.headers.get('set-cookie'), null);
      await page.click('text=Log out');
      await page.waitForURL(/\/ui\/login$/);
      await page.goto(`${serve?.url}/`);
      assert.match(page.url(), /\/ui\/login$/, 'logged out');
    } finally {
      await context.close();
    }
  });

  test('a tenant watches its job go from queued to succeeded without a reload, and sees no other tenant’s', async () => {
    const { context, page } = await loginAs('a');
    try {
      // Records every state each row shows, and marks the document: a reload would lose both.
      await page.evaluate(() => {
        const w = window as unknown as { seen: Record<string, string[]>; sameDocument: boolean };
        w.seen = {};
        w.sameDocument = true;
        const record = () => {
          for (const row of Array.from(document.querySelectorAll<HTMLElement>('tr[data-job]'))) {
            const id = row.dataset.job as string;
            const state = row.querySelector('.state')?.textContent ?? '';
            const list = (w.seen[id] ??= []);
            if (list.at(-1) !== state) list.push(state);
          }
        };
        new MutationObserver(record).observe(document.body, { childList: true, subtree: true });
      });
      // team-a runs one job at a time: the second waits in the queue while the first sleeps.
      const first = await submit('a', 'warm-up', 'sleep 3');
      const second = await submit('a', 'unit-tests', 'echo tests pass');
      await page.waitForFunction(
        (id) => document.querySelector(`tr[data-job="${id}"] .state`)?.textContent === 'succeeded',
        second,
        { timeout: 60_000 },
      );
      const seen = await page.evaluate(() => {
        const w = window as unknown as { seen: Record<string, string[]>; sameDocument?: boolean };
        return { seen: w.seen, sameDocument: w.sameDocument };
      });
      assert.equal(seen.sameDocument, true, 'no reload');
      assert.equal(seen.seen[second]?.[0], 'queued', JSON.stringify(seen.seen));
      assert.equal(seen.seen[second]?.at(-1), 'succeeded');
      assert.ok(seen.seen[first]?.length, 'the first job is listed too');
      const text = (await page.textContent('main')) ?? '';
      assert.ok(!text.includes('team-b-private-job'), 'another tenant’s job is not listed');
      assert.ok(!text.includes('build-1'), 'nor a third’s');
      assert.deepEqual(await axeProblems(page), [], 'jobs page');
      await shot(page, 'jobs-tenant');

      // Another tenant's job does not exist for this one, its log neither.
      const other = await page.goto(`${serve?.url}/ui/jobs/${otherTenantJob}`);
      assert.equal(other?.status(), 404);
      const stream = await page.evaluate(
        (id) => fetch(`/ui/jobs/${id}/log`).then((r) => r.status),
        otherTenantJob,
      );
      assert.equal(stream, 404);
    } finally {
      await context.close();
    }
  });

  test('a live log: lines as printed, ANSI colours, sections, line links; markup in the output stays text', async () => {
    const { context, page } = await loginAs('a');
    try {
      const command = [
        `printf '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">\\n'`,
        `printf '\\033[1;31mred alert\\033[0m plain \\033]0;title\\007\\n'`,
        `echo '::group::Install'`,
        `echo inside the group`,
        `echo '::endgroup::'`,
        `printf 'progress 10%%\\rprogress 50%%\\rprogress 100%%\\n'`,
        // A stamp per line, to time its way to the page.
        // busybox's date has no sub-second field: /proc/uptime's clock (10 ms), mapped to the wall clock below.
        `for i in $(seq 1 20); do read up rest < /proc/uptime; echo "stamp $up"; sleep 0.2; done`,
      ].join('; ');
      const uptimeToWall = Date.now() - Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1000;
      const id = await submit('a', 'live-log', command);
      await page.goto(`${serve?.url}/ui/jobs/${id}`);
      await page.evaluate(() => {
        const w = window as unknown as { arrivals: Array<[string, number]> };
        w.arrivals = [];
        new MutationObserver((records) => {
          for (const r of records)
            for (const n of Array.from(r.addedNodes))
              if (n instanceof HTMLElement && n.classList.contains('line'))
                w.arrivals.push([n.textContent ?? '', Date.now()]);
        }).observe(document.getElementById('log') as HTMLElement, { childList: true, subtree: true });
      });
      await page.waitForSelector('#log[data-ended="succeeded"]', { timeout: 60_000 });
      const log = page.locator('#log');
      assert.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined);
      assert.equal(await log.locator('script, img').count(), 0, 'no element from the output');
      assert.match((await log.textContent()) ?? '', /<script>window\.pwned=1<\/script><img src=x/);
      assert.ok(!((await log.textContent()) ?? '').includes('\x1b'), 'no escape byte left');
      assert.equal(await log.locator('span.b.f1').textContent(), 'red alert');
      const group = log.locator('details.section');
      assert.equal(await group.locator('summary').textContent(), '3Install');
      assert.equal(
        await group.evaluate((d) => (d as HTMLDetailsElement).open),
        false,
        'a group starts folded',
      );
      assert.equal(await group.locator('div.line').textContent(), '4inside the group');
      assert.equal(await log.locator('#L5 .t').textContent(), 'progress 100%', '\\r lines collapsed');
      assert.equal(await page.textContent('#job-state'), 'succeeded');
      assert.match(
        (await page.textContent('#job-facts')) ?? '',
        /Exit code\s*0/,
        'the facts as the job ended',
      );

      const arrivals = await page.evaluate(
        () => (window as unknown as { arrivals: Array<[string, number]> }).arrivals,
      );
      const delays = arrivals
        .map(([text, at]) => [/^\d+stamp ([\d.]+)$/.exec(text)?.[1], at] as const)
        .filter(([stamp], i, all) => stamp !== undefined && all.findIndex(([s]) => s === stamp) === i) // first sight
        .map(([stamp, at]) => at - (Number(stamp) * 1000 + uptimeToWall));
      const sorted = [...delays].sort((x, y) => x - y);
      diagnostic(
        `printed line → on the page: ${delays.length} lines, p50 ${sorted[Math.floor(sorted.length / 2)]} ms, p95 ${sorted[Math.ceil(sorted.length * 0.95) - 1]} ms, max ${sorted.at(-1)} ms`,
      );
      assert.ok(delays.length >= 15, `most stamps were seen arriving live (${delays.length})`);
      assert.deepEqual(await axeProblems(page), [], 'job page');
      const file = await shot(page, 'job-live-log');
      // The README's screenshot is this one, refreshed on demand (a run would dirty the tree).
      if (process.env.BOXCAR_UPDATE_SCREENSHOT === '1')
        copyFileSync(file, path.join(ROOT, 'docs/dashboard.png'));
      diagnostic(
        `screenshots in ${SHOTS}; BOXCAR_UPDATE_SCREENSHOT=1 copies the live log to docs/dashboard.png`,
      );

      // A link to a line: the page scrolls to it and marks it.
      await page.goto(`${serve?.url}/ui/jobs/${id}#L2`); // the same document: a hash change
      await page.waitForSelector('#L2.hl');
      await page.goto('about:blank');
      await page.goto(`${serve?.url}/ui/jobs/${id}#L4`); // a fresh load
      await page.waitForSelector('#L4.hl');
      assert.equal(await page.locator('.hl').count(), 1);
    } finally {
      await context.close();
    }
  });

  test('the tail of a 10 MB log, and 1,000 jobs in the list (timings printed)', async () => {
    const { context, page } = await loginAs('operator');
    try {
      const t0 = Date.now();
      await page.goto(`${serve?.url}/ui/jobs/${bigLogJob}`);
      await page.waitForSelector('#log[data-ended="succeeded"]');
      const tail = Date.now() - t0;
      const last = await page.locator('#log .line').last().textContent();
      assert.match(last ?? '', /line \d+ x+$/);
      assert.match((await page.textContent('#log .note')) ?? '', /earlier lines \(9\.\d MB\) not shown/);
      const lastNumber = Number(/^(\d+)line (\d+)/.exec(last ?? '')?.[1]);
      assert.equal(
        lastNumber,
        Number(/line (\d+)/.exec(last ?? '')?.[1]),
        'lines keep their numbers in the whole log',
      );
      await shot(page, 'job-10mb-log');

      const t1 = Date.now();
      await page.goto(`${serve?.url}/?limit=1000`);
      const list = Date.now() - t1;
      const timing = await page.evaluate(() => {
        const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming;
        return { response: nav.responseEnd - nav.requestStart, loaded: nav.loadEventEnd - nav.startTime };
      });
      assert.ok((await page.locator('tr[data-job]').count()) >= FLEET_JOBS);
      const node = await api<{ memory: { rss: number } }>('operator', '/v1/node');
      diagnostic(
        `serve's RSS with ${FLEET_JOBS}+ jobs stored and this list open: ${Math.round(node.memory.rss / 2 ** 20)} MiB`,
      );
      diagnostic(
        `10 MB log: tail on the page in ${tail} ms; 1,000-job list: page loaded in ${list} ms (server ${Math.round(timing.response)} ms, load event ${Math.round(timing.loaded)} ms)`,
      );
    } finally {
      await context.close();
    }
  });

  test('an operator sees every tenant, the fleet, the cost, and a pipeline’s DAG', async () => {
    const pipeline = await api<{ id: string }>('a', '/v1/pipelines', {
      method: 'POST',
      headers: { 'content-type': 'application/yaml' },
      body: `name: ci
stages: [build, test]
jobs:
  - { name: compile, stage: build, command: "echo compiled" }
  - { name: lint, stage: build, command: "echo linted" }
  - { name: unit, stage: test, needs: [compile], command: "echo unit" }
`,
    });
    await api(`a`, `/v1/pipelines/${pipeline.id}?wait=60s`);
    const { context, page } = await loginAs('operator');
    try {
      const text = (await page.textContent('main')) ?? '';
      for (const seen of ['team-a', 'team-b', 'team-c']) assert.ok(text.includes(seen), seen);
      await page.goto(`${serve?.url}/ui/fleet`);
      assert.equal(await page.locator('svg.chart').first().isVisible(), true);
      assert.match(
        (await page.textContent('main')) ?? '',
        /Sandbox start time per runtime[\s\S]*gvisor[\s\S]*queue and breakers[\s\S]*runc\s*0\s*closed[\s\S]*Node /,
      );
      assert.deepEqual(await axeProblems(page), [], 'fleet page');
      await shot(page, 'fleet');
      await page.goto(`${serve?.url}/ui/cost`);
      assert.match((await page.textContent('main')) ?? '', /By runtime[\s\S]*runc/);
      assert.deepEqual(await axeProblems(page), [], 'cost page');
      await shot(page, 'cost');
      await page.goto(`${serve?.url}/`);
      await page.click(`a[href="/ui/pipelines/${pipeline.id}"] >> nth=0`); // from a job of it in the list
      await page.waitForURL(`${serve?.url}/ui/pipelines/${pipeline.id}`);
      assert.equal(await page.locator('svg.dag rect.node').count(), 3);
      assert.equal(await page.locator('svg.dag path.edge').count(), 1, 'unit needs compile (and not lint)');
      assert.deepEqual(await axeProblems(page), [], 'pipeline page');
      await shot(page, 'pipeline');
    } finally {
      await context.close();
    }
  });

  test('a node stops promptly while dashboards hold live streams open', async () => {
    const { context, page } = await loginAs('a');
    try {
      const id = await submit('a', 'long-log', 'for i in $(seq 1 30); do echo $i; sleep 0.1; done');
      const job = await context.newPage();
      await job.goto(`${serve?.url}/ui/jobs/${id}`);
      await job.waitForSelector('#L3');
      const stopped = Date.now();
      serve?.child.kill('SIGTERM');
      await exited(serve?.child as ChildProcess);
      // The job ends within the drain (--drain 5s); the open streams hold nothing up.
      assert.ok(Date.now() - stopped < 15_000, `stopped in ${Date.now() - stopped} ms`);
      assert.equal(await page.locator('h1').textContent(), 'Jobs');
    } finally {
      await context.close();
    }
  });
});

/** A figure for the test's output (node:test prints diagnostics at the end of the run). */
function diagnostic(message: string): void {
  process.stdout.write(`# ${message}\n`);
}
