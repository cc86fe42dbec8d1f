import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { exited } from '../../testing/serve-process.js';
import { startThroughExecFifo } from './exec-fifo.js';

/** runc's exec FIFO, played by a shell in the init's place: what `runc start` would see. */
let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'bx-fifo-'));
});
after(() => rm(dir, { recursive: true, force: true }));

function fifo(name: string): string {
  const p = path.join(dir, name);
  assert.equal(spawnSync('mkfifo', [p]).status, 0);
  return p;
}

test('an init that writes its byte and execs: the start returns, and the FIFO is gone', async () => {
  const f = fifo('ok');
  // As runc init: blocks opening the FIFO for writing until the start reads, writes, then execs.
  const init = spawn('sh', ['-c', 'exec 3>"$1"; printf 0 >&3; exec 3>&-; sleep 0.2', 'init', f]);
  await startThroughExecFifo(f, init.pid as number);
  assert.equal(existsSync(f), false);
  await exited(init);
});

test('an init that died before its start fails it, and holds nothing', async () => {
  const f = fifo('dead');
  const init = spawn('true');
  await exited(init);
  await assert.rejects(startThroughExecFifo(f, init.pid as number), /died before its process started/);
});

test('a FIFO opened and closed with nothing written: the container had already started', async () => {
  const f = fifo('started');
  const init = spawn('sh', ['-c', 'exec 3>"$1"; exec 3>&-; sleep 0.5', 'init', f]);
  await assert.rejects(startThroughExecFifo(f, init.pid as number), /already running/);
  init.kill();
  await exited(init);
});
