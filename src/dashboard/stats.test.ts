import { test } from 'node:test';
import assert from 'node:assert/strict';
import { byRuntime, histogram, percentile, START_BUCKETS_MS } from './stats.js';
import { dagColumns } from './pages/pipeline.js';
import { escapeHtml, html } from './html.js';
import { Sessions, cookieValue } from './sessions.js';
import type { ApiToken } from '../store/store.js';

test('percentiles by nearest rank', () => {
  assert.equal(percentile([], 0.5), null);
  assert.equal(percentile([5, 1, 3, 2, 4], 0.5), 3);
  assert.equal(
    percentile(
      [...Array(100).keys()].map((i) => i + 1),
      0.95,
    ),
    95,
  );
});

test('histogram buckets count up to and including their bound, the last is open', () => {
  assert.deepEqual(histogram([10, 50, 51, 20_000], START_BUCKETS_MS), [2, 1, 0, 0, 0, 0, 0, 0, 1]);
});

test('figures per runtime: jobs, live, untrusted, start times, queue waits', () => {
  const job = (
    runtime: string,
    state: string,
    startupMs: number | null,
    wait: number | null,
    trust = 'trusted',
  ) => ({
    runtime,
    state,
    startupMs,
    createdAt: 1000,
    startedAt: wait === null ? null : 1000 + wait,
    decision: { trust },
  });
  const f = byRuntime([
    job('runc', 'succeeded', 120, 5),
    job('gvisor', 'running', 300, 40, 'untrusted'),
    job('runc', 'queued', null, null),
  ]);
  assert.deepEqual(
    f.map((r) => [r.runtime, r.jobs, r.live, r.untrusted, r.startupMs, r.queueWaitMs]),
    [
      ['runc', 2, 1, 0, [120], [5]],
      ['gvisor', 1, 1, 1, [300], [40]],
    ],
  );
});

test('DAG columns: one past the deepest need', () => {
  const cols = dagColumns([
    { name: 'a', needs: [] },
    { name: 'b', needs: ['a'] },
    { name: 'c', needs: ['a', 'b'] },
    { name: 'd', needs: [] },
  ]);
  assert.deepEqual(Object.fromEntries(cols), { a: 0, b: 1, c: 2, d: 0 });
});

test('html escapes every value that is not itself html', () => {
  const evil = `<img src=x onerror="alert('x')">&`;
  assert.equal(escapeHtml(evil), '&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt;&amp;');
  assert.equal(
    html`<p title="${evil}">${[evil, html`<b>ok</b>`]}</p>`.text,
    `<p title="${escapeHtml(evil)}">${escapeHtml(evil)}<b>ok</b></p>`,
  );
});

test('sessions: random ids, expiry, logout; the cookie read from its header', () => {
  const token: ApiToken = { hash: 'h', id: 'tok-1', tenant: 'team-a', role: 'tenant' };
  const s = new Sessions(1000);
  const a = s.create(token, 0);
  const b = s.create(token, 0);
  assert.notEqual(a.id, b.id);
  assert.ok(a.id.length >= 43, 'at least 256 bits');
  assert.equal(s.get(a.id, 999)?.tenant, 'team-a');
  assert.equal(s.get(a.id, 1000), undefined, 'expired');
  s.delete(b.id);
  assert.equal(s.get(b.id, 0), undefined, 'logged out');
  assert.equal(cookieValue(`x=1; boxcar_session=${a.id}; y=2`, 'boxcar_session'), a.id);
  assert.equal(cookieValue('x=1', 'boxcar_session'), undefined);
});
