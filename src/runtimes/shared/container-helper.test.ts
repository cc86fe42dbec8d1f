import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { leftovers, tempState } from '../../testing/harness.js';
import { exited } from '../../testing/serve-process.js';
import { ContainerHelper } from './container-helper.js';
import { parentPid } from '../../lib/proc.js';

let state: Awaited<ReturnType<typeof tempState>>;
/** A process in a UTS namespace of its own: where the helper sets hostnames. */
let holder: ChildProcess;

before(async () => {
  state = await tempState();
  holder = spawn('unshare', ['--uts', 'sleep', '600'], { stdio: 'ignore' });
  // Its own namespace once `unshare` has exec'd sleep.
  for (let i = 0; i < 100 && !readFileSync(`/proc/${holder.pid}/cmdline`, 'utf8').startsWith('sleep'); i++)
    await new Promise((r) => setTimeout(r, 10));
});
after(async () => {
  holder.kill('SIGKILL');
  await exited(holder);
  const left = await leftovers(state);
  await state.cleanup();
  assert.deepEqual(left, []);
});

/** This process's children running the helper binary. */
function helpers(): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e) && parentPid(Number(e)) === process.pid)
    .filter((pid) => {
      try {
        return path.basename(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).startsWith('container-helper');
      } catch {
        return false; // gone between the listing and the read
      }
    })
    .map(Number);
}

const hostnameOf = (pid: number) =>
  spawnSync('nsenter', ['-t', String(pid), '-u', 'hostname'], { encoding: 'utf8' }).stdout.trim();

test('concurrent first calls share one helper, and close ends it', async () => {
  const helper = new ContainerHelper(path.join(state.root, 'bin'));
  const pid = holder.pid as number;
  await Promise.all(['job-a', 'job-b', 'job-c', 'job-d'].map((name) => helper.setHostname(pid, name)));
  assert.equal(helpers().length, 1, 'one helper for every call');
  assert.match(hostnameOf(pid), /^job-[a-d]$/);
  await helper.setHostname(pid, 'job-e');
  assert.equal(hostnameOf(pid), 'job-e');
  assert.notEqual(
    readFileSync('/proc/sys/kernel/hostname', 'utf8').trim(),
    'job-e',
    'the host keeps its name',
  );
  await helper.close();
  assert.deepEqual(helpers(), []);
  await assert.rejects(helper.setHostname(pid, 'job-f'), /closed/);
});

test('a close while the helper is still starting ends it too', async () => {
  const helper = new ContainerHelper(path.join(state.root, 'bin'));
  const call = helper.setHostname(holder.pid as number, 'job-g');
  const closed = helper.close();
  // The call either landed before the helper read its end of input, or failed with the close.
  await call.catch((err: Error) => assert.match(err.message, /ended|closed|EPIPE/));
  await closed;
  assert.deepEqual(helpers(), [], 'no helper left to hold the process up');
});

test('a send to a socket that is not there fails with the path, and the helper carries on', async () => {
  const helper = new ContainerHelper(path.join(state.root, 'bin'));
  try {
    const missing = path.join(state.root, 'no-such-sandbox', 'attach');
    await assert.rejects(
      helper.send(missing, '/dev/null'),
      new RegExp(`connecting to ${missing}: No such file`),
    );
    await assert.rejects(helper.send(missing, path.join(state.root, 'no-file')), /no-file: No such file/);
    await assert.rejects(helper.setHostname(holder.pid as number, 'bad name'), /not a valid host name/);
    await helper.setHostname(holder.pid as number, 'job-h');
    assert.equal(hostnameOf(holder.pid as number), 'job-h');
  } finally {
    await helper.close();
  }
  assert.deepEqual(helpers(), []);
});

/** A stand-in for runc's init: a shell named as runc names it, running `script` (FIFO: $1). */
function runcInit(fifo: string, script: string) {
  return spawn('sh', ['-c', `printf 'runc:[2:INIT]' > /proc/$$/comm; ${script}`, 'init', fifo]);
}

function makeFifo(name: string): string {
  const p = path.join(state.root, name);
  assert.equal(spawnSync('mkfifo', [p]).status, 0);
  return p;
}

test('start: an init that writes its byte and execs is started, and its FIFO is gone', async () => {
  const helper = new ContainerHelper(path.join(state.root, 'bin'));
  try {
    const fifo = makeFifo('exec-ok');
    // As runc init: blocks opening the FIFO for writing until a reader comes, writes, then its exec closes it.
    const init = runcInit(fifo, 'exec 3>"$1"; printf 0 >&3; exec 3>&-; sleep 0.3');
    for (let i = 0; i < 100 && !readFileSync(`/proc/${init.pid}/comm`, 'utf8').startsWith('runc'); i++)
      await new Promise((r) => setTimeout(r, 10));
    await helper.startContainer(fifo, init.pid as number);
    assert.equal(existsSync(fifo), false);
    await exited(init);

    // A start cut off after the init's exec, before the FIFO went: finished, the FIFO removed.
    const late = makeFifo('exec-late');
    const running = spawn('sleep', ['5']);
    await helper.startContainer(late, running.pid as number);
    assert.equal(existsSync(late), false);
    running.kill();
    await exited(running);

    // An init that died first: the start fails, and the helper is not held.
    const dead = spawn('true');
    await exited(dead);
    await assert.rejects(
      helper.startContainer(makeFifo('exec-dead'), dead.pid as number),
      /died before its process started/,
    );

    // A FIFO opened and closed with nothing written: runc's "already running".
    const empty = makeFifo('exec-empty');
    const quiet = runcInit(empty, 'exec 3>"$1"; exec 3>&-; sleep 1');
    for (let i = 0; i < 100 && !readFileSync(`/proc/${quiet.pid}/comm`, 'utf8').startsWith('runc'); i++)
      await new Promise((r) => setTimeout(r, 10));
    await assert.rejects(helper.startContainer(empty, quiet.pid as number), /already running/);
    quiet.kill();
    await exited(quiet);
  } finally {
    await helper.close();
  }
});
