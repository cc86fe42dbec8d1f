import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sleep } from '../lib/exec.js';
import type { Boxcar } from '../boxcar.js';
import { resolveImage } from '../images/resolve.js';
import { destroySandbox } from '../runner/sandbox-cleanup.js';
import { leftovers, tempState, testBoxcar, TEST_CONFIG } from './harness.js';
import { JobSpec, type RuntimeName } from '../jobs/spec.js';

/**
 * A test Boxcar whose `runtime` keeps one idle sandbox per pool key, in a state directory of its
 * own. `finish` closes its pools, returns what they left on the host, and removes everything.
 */
export async function warmPoolBoxcar(runtime: 'runc' | 'gvisor'): Promise<{
  box: Awaited<ReturnType<typeof testBoxcar>>;
  finish: () => Promise<string[]>;
}> {
  const state = await tempState();
  const config = path.join(state.root, 'config.yaml');
  await writeFile(config, `${TEST_CONFIG}\nwarm_pools:\n  ${runtime}: 1\n`);
  const box = await testBoxcar({ config });
  return {
    box,
    finish: async () => {
      try {
        await box.runtimes.close();
        return await leftovers(box.paths);
      } finally {
        await box.cleanup();
        await state.cleanup();
      }
    },
  };
}

/**
 * What a job sees of its own sandbox, with what differs between any two jobs left out: the
 * lines a pooled job's output must share with those of a job in a sandbox made for it.
 */
export const SANDBOX_VIEW = [
  'echo "pid1=$(tr "\\0" " " </proc/1/cmdline)"',
  'echo "fds=$(ls /proc/self/fd | tr "\\n" " ")"',
  'echo "host=$(hostname)"',
  'echo "env=$(env | grep -v -e ^BOXCAR_JOB_ID= -e ^HOSTNAME= | sort | tr "\\n" " ")"',
  'echo "caps=$(grep -E "^(Cap|NoNewPrivs|Seccomp)" /proc/self/status | tr "\\n\\t" "  ")"',
  // Mount points and their options; the ids and host paths differ by sandbox.
  'echo "mounts=$(cut -d" " -f5,6,9 /proc/self/mountinfo | tr "\\n" ";")"',
  'echo "root=$(ls -a / | tr "\\n" " ")"',
  'echo "tmp=$(ls -a /tmp /workspace | tr "\\n" " ")"',
];

/** Each job has a hostname and a trace of its own: its view without them. */
export const neutralView = (out: string): string =>
  out.replace(/^host=.*$/m, 'host=').replace(/TRACEPARENT=\S+/, '');

/** How many idle sandboxes `runtime`'s warm pool holds now. */
export async function idleMembers(box: Boxcar, runtime: string): Promise<number> {
  const status = (await box.runtimes.status())[runtime] as { warmPool: { idle: unknown[] } };
  return status.warmPool.idle.length;
}

/** Waits (up to 20 s) until `runtime`'s pool holds `idle` idle sandboxes. */
export async function poolFilled(box: Boxcar, runtime: string, idle = 1): Promise<void> {
  for (let i = 0; i < 400 && (await idleMembers(box, runtime)) < idle; i++) await sleep(50);
  assert.equal(await idleMembers(box, runtime), idle, `the ${runtime} pool holds ${idle} idle sandbox(es)`);
}

/**
 * A crash between a job's take-over of a pooled sandbox and its start, as the next start-up
 * sees it: `recover` says `created` (the init still waits), and `start` then runs the job.
 * `input` must have the shape of a job that already ran, so that the pool holds its sandbox.
 */
export async function recoversMidTakeOver(
  box: Boxcar,
  runtime: RuntimeName,
  input: Record<string, unknown>,
): Promise<void> {
  const driver = box.runtimes.get(runtime);
  const spec = JobSpec.parse({ ...input, runtime, command: ['sh', '-c', 'exit 5'] });
  const sandboxId = randomUUID();
  const handle = await driver.prepare({
    jobId: randomUUID(),
    sandboxId,
    spec,
    image: await resolveImage(box.images, spec.image),
    tenant: 'test',
    trust: driver.capabilities.sharedKernel ? 'trusted' : 'untrusted',
    secrets: {},
    logPath: path.join(box.paths.sandboxes, `${sandboxId}.log`),
  });
  try {
    assert.equal(handle.attributes.fromWarmPool, true, 'the job took a pooled sandbox');
    assert.deepEqual(await driver.recover(handle), { state: 'created' }, 'its init still waits');
    await driver.start(handle);
    assert.equal((await driver.wait(handle)).exitCode, 5);
    assert.equal((await driver.recover(handle)).state, 'exited');
  } finally {
    assert.ok(await destroySandbox(box, driver, handle), 'its sandbox was destroyed');
  }
}
