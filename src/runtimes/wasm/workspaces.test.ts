import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { leftovers, tempState } from '../../testing/harness.js';
import { run } from '../../lib/exec.js';
import { Workspaces } from './workspaces.js';

const MiB = 2 ** 20;
const tmpfsSize = (dir: string) =>
  readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[1] === dir)
    ?.match(/size=(\d+)k/)?.[1];

let state: Awaited<ReturnType<typeof tempState>>;
before(async () => {
  state = await tempState();
});
after(async () => {
  const left = await leftovers(state);
  await state.cleanup();
  assert.deepEqual(left, []);
});

test('a spare of the default size moves into the job by rename, mount and all; other sizes mount fresh', async () => {
  const ws = new Workspaces(state.sandboxes, 8 * MiB);
  try {
    await ws.fill(1);
    const [spare] = readdirSync(state.sandboxes);
    assert.match(spare ?? '', /^\.wasm-spare@/);
    const a = await ws.take(path.join(state.sandboxes, 'job-a'), 8 * MiB);
    assert.deepEqual(readdirSync(state.sandboxes), ['job-a'], 'the spare became the job’s directory');
    assert.equal(tmpfsSize(a), String(8 * 1024));
    const b = await ws.take(path.join(state.sandboxes, 'job-b'), 4 * MiB);
    assert.equal(tmpfsSize(b), String(4 * 1024));
    writeFileSync(path.join(b, 'f'), 'x');
    await ws.remove(path.join(state.sandboxes, 'job-a'));
    await ws.remove(path.join(state.sandboxes, 'job-b'));
    await ws.remove(path.join(state.sandboxes, 'job-b')); // idempotent
    assert.deepEqual(readdirSync(state.sandboxes), []);
  } finally {
    await ws.close();
  }
});

test('close unmounts the spares; spares of a dead owner are swept by the next one', async () => {
  const ws = new Workspaces(state.sandboxes, 8 * MiB);
  await ws.fill(2);
  assert.equal(readdirSync(state.sandboxes).length, 2);
  await ws.close();
  assert.deepEqual(readdirSync(state.sandboxes), []);

  const dead = spawnSync('true').pid as number; // exited: its pid names a dead owner
  const orphan = path.join(state.sandboxes, `.wasm-spare@${hostname()}:${dead}:1@x`);
  await run('mkdir', ['-p', path.join(orphan, 'workspace')]);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', path.join(orphan, 'workspace')]);
  const next = new Workspaces(state.sandboxes, 8 * MiB);
  try {
    await next.fill(1);
    assert.equal(existsSync(orphan), false, 'the dead owner’s spare is gone');
    assert.equal(readdirSync(state.sandboxes).length, 1);
  } finally {
    await next.close();
  }
});
