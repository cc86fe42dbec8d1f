import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { sleep } from '../lib/exec.js';
import { leftovers, tempState } from '../testing/harness.js';
import { boxcarSync, exited, startServe } from '../testing/serve-process.js';

/**
 * Log streams wait for slow clients instead of buffering for them: 50 clients that follow a
 * job's log and never read, while the job prints control bytes as fast as it can, leave the
 * server's memory where it was (within a fixed bound), and the server keeps answering.
 */
const FOLLOWERS = 50;
/**
 * Buffering each follower's copy of the 16 MiB stored log would cost 800 MiB; the bound is
 * 15% of that, above what the server's own work on the job (its heap growing, a GC or two
 * late) takes by itself: 60 to 80 MiB here alone, 83 MiB once in the suite beside other tests.
 */
const RSS_BOUND = 0.15 * FOLLOWERS * 16 * 2 ** 20;

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1]) * 1024;
}

test('50 log followers that never read cost the server a bounded amount of memory', async (t) => {
  const state = await tempState();
  const config = path.join(state.root, 'config.yaml');
  writeFileSync(config, 'tenants:\n  t: { trust: trusted }\napi: { max_follows_per_tenant: 64 }\n');
  const global = ['--state', state.root, '--config', config];
  const token = boxcarSync([...global, 'token', 'create', '--tenant', 't']);
  const { child, url } = await startServe(global);
  const sockets: net.Socket[] = [];
  t.after(async () => {
    for (const s of sockets) s.destroy();
    child.kill('SIGTERM');
    await exited(child);
    const left = await leftovers(state);
    await state.cleanup();
    assert.deepEqual(left, []);
  });
  const api = async (p: string, init: RequestInit = {}) => {
    const res = await fetch(`${url}${p}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...init.headers },
    });
    return (await res.json()) as Record<string, unknown>;
  };
  const job = await api('/v1/jobs', {
    method: 'POST',
    body: JSON.stringify({
      source: 'internal_repo',
      user_group: 'internal_team',
      resources: { memory: '64Mi' },
      command: `yes "$(printf '\\001\\002\\033[31mX\\r')" | head -c 48000000`,
    }),
  });
  const before = rssOf(child.pid as number);
  const { port } = new URL(url);
  for (let i = 0; i < FOLLOWERS; i++) {
    const s = net.connect(Number(port), '127.0.0.1');
    s.write(
      `GET /v1/jobs/${String(job.id)}/logs?follow=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`,
    );
    s.pause(); // never read: the kernel's buffers fill, then the server's writes must wait
    s.on('error', () => undefined);
    sockets.push(s);
  }
  let peak = before;
  let done: Record<string, unknown> = {};
  for (let i = 0; i < 600; i++) {
    peak = Math.max(peak, rssOf(child.pid as number));
    done = await api(`/v1/jobs/${String(job.id)}`);
    if (done.finishedAt) break;
    await sleep(100);
  }
  assert.equal(done.state, 'succeeded', String(done.error));
  // The followers now have the whole 16 MiB stored log to send; they still cannot.
  for (let i = 0; i < 20; i++) {
    peak = Math.max(peak, rssOf(child.pid as number));
    await sleep(100);
  }
  const grew = peak - before;
  assert.ok(
    grew < RSS_BOUND,
    `the server grew by ${(grew / 2 ** 20).toFixed(1)} MiB with ${FOLLOWERS} stalled followers`,
  );
  t.diagnostic(`server RSS ${(before / 2 ** 20).toFixed(0)} MiB → peak ${(peak / 2 ** 20).toFixed(0)} MiB`);
  assert.equal((await fetch(`${url}/healthz`)).status, 200, 'still serving');
});
