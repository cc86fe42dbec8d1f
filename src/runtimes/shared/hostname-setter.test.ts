import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { leftovers, tempState } from '../../testing/harness.js';
import { exited } from '../../testing/serve-process.js';
import { HostnameSetter } from './hostname-setter.js';

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
    .filter((e) => /^\d+$/.test(e))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        return (
          ppid === process.pid &&
          path.basename(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).startsWith('uts-setter')
        );
      } catch {
        return false; // gone between the listing and the read
      }
    })
    .map(Number);
}

async function noHelperWithin(ms: number): Promise<number[]> {
  for (let i = 0; i < ms / 20 && helpers().length; i++) await new Promise((r) => setTimeout(r, 20));
  return helpers();
}

const hostnameOf = (pid: number) =>
  spawnSync('nsenter', ['-t', String(pid), '-u', 'hostname'], { encoding: 'utf8' }).stdout.trim();

test('concurrent first calls share one helper, and close ends it', async () => {
  const setter = new HostnameSetter(path.join(state.root, 'bin'));
  const pid = holder.pid as number;
  await Promise.all(['job-a', 'job-b', 'job-c', 'job-d'].map((name) => setter.set(pid, name)));
  assert.equal(helpers().length, 1, 'one helper for every call');
  assert.match(hostnameOf(pid), /^job-[a-d]$/);
  await setter.set(pid, 'job-e');
  assert.equal(hostnameOf(pid), 'job-e');
  assert.notEqual(
    readFileSync('/proc/sys/kernel/hostname', 'utf8').trim(),
    'job-e',
    'the host keeps its name',
  );
  setter.close();
  assert.deepEqual(await noHelperWithin(2000), []);
  await assert.rejects(setter.set(pid, 'job-f'), /closed/);
});

test('a close while the helper is still starting ends it too', async () => {
  const setter = new HostnameSetter(path.join(state.root, 'bin'));
  const call = setter.set(holder.pid as number, 'job-g');
  setter.close();
  // The call either landed before the helper read its end of input, or failed with the close.
  await call.catch((err: Error) => assert.match(err.message, /ended|closed|EPIPE/));
  assert.deepEqual(await noHelperWithin(2000), [], 'no helper left to hold the process up');
});
