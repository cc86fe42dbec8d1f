import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { readFileNoFollow, writeFileAtomic, writeFileNoFollow } from './fs-util.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'bx-fsutil-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('a marker in a directory another process writes to is never written or read through a link or a fifo', async () => {
  const victim = path.join(dir, 'victim');
  writeFileSync(victim, 'precious');
  symlinkSync(victim, path.join(dir, 'killed'));
  await assert.rejects(writeFileNoFollow(path.join(dir, 'killed'), ''), { code: 'ELOOP' });
  await assert.rejects(readFileNoFollow(path.join(dir, 'killed')), { code: 'ELOOP' });
  assert.equal(readFileSync(victim, 'utf8'), 'precious');
  execFileSync('mkfifo', [path.join(dir, 'fifo')]);
  await assert.rejects(
    writeFileNoFollow(path.join(dir, 'fifo'), 'x'),
    { code: 'ENXIO' },
    'no reader: refused, not blocked',
  );
  await writeFileNoFollow(path.join(dir, 'started'), 'ok');
  assert.equal(await readFileNoFollow(path.join(dir, 'started')), 'ok');
  assert.equal(await readFileNoFollow(path.join(dir, 'absent')), undefined);
});

test('writeFileAtomic replaces a file whole, durable or not, and leaves no temporary file', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-atomic-'));
  try {
    const file = path.join(dir, 'sub', 'meta.json');
    await writeFileAtomic(file, 'first\n');
    await writeFileAtomic(file, 'second\n', { durable: false });
    assert.equal(readFileSync(file, 'utf8'), 'second\n');
    await writeFileAtomic(file, 'third\n');
    assert.equal(readFileSync(file, 'utf8'), 'third\n');
    assert.deepEqual(readdirSync(path.dirname(file)), ['meta.json']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
