import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { jobTrustFields } from '../../isolation/verify.js';
import { jobHostname } from '../shared/oci-spec.js';
import {
  neutralView,
  poolFilled as filled,
  recoversMidTakeOver,
  SANDBOX_VIEW,
  warmPoolBoxcar,
} from '../../testing/warm-pool.js';

/**
 * gVisor's warm pool for real: sandboxes booted ahead (sentry, gofer, root), each taken over by
 * exactly one job. runsc passes a container no fds, so the pool's init sits in the sandbox's
 * root until it unlinks itself, and the job comes on its stdin; the job must not be able to
 * tell (its command is PID 1, its hostname, capabilities, environment and memory are its own).
 */
type Box = Awaited<ReturnType<typeof warmPoolBoxcar>>['box'];
let box: Box;
let runJob: Box['runJob'];

/** A gVisor job's view: the common one, its memory as the sentry reports it, and its stdin. */
const VIEW = [
  ...SANDBOX_VIEW,
  'echo "memtotal=$(grep MemTotal /proc/meminfo)"',
  'echo "stdin=$(timeout 5 cat | wc -c) $?"',
].join('; ');

/** Waits until the pool holds `idle` sandboxes (one per key: a test's earlier keys stay). */
const poolFilled = (idle = 1) => filled(box, 'gvisor', idle);

let pooled: Awaited<ReturnType<typeof warmPoolBoxcar>>;

before(async () => {
  pooled = await warmPoolBoxcar('gvisor');
  box = pooled.box;
  const trust = jobTrustFields(box.runtimes.get('gvisor').capabilities);
  runJob = (input, opts) => box.runJob({ runtime: 'gvisor', ...trust, ...input }, opts);
});

after(async () => assert.deepEqual(await pooled.finish(), [], 'closing the pool destroyed its sandboxes'));

test('a job takes over a pooled gVisor sandbox and cannot tell: the same view as a sandbox made for it', async () => {
  const spec = (name: string) => ({
    name,
    command: ['sh', '-c', VIEW],
    env: { GREETING: 'hello' },
    resources: { memory: '160Mi', cpus: '0.5', pids: 77 },
  });
  const cold = await runJob(spec('view'));
  assert.equal(cold.record.state, 'succeeded', cold.output);
  assert.notEqual(cold.record.handle?.attributes.fromWarmPool, true);
  await poolFilled();
  const warm = await runJob(spec('view'));
  assert.equal(warm.record.state, 'succeeded', warm.output);
  assert.equal(warm.record.handle?.attributes.fromWarmPool, true, 'the second took the pooled sandbox');
  assert.equal(neutralView(warm.output), neutralView(cold.output));
  assert.match(warm.output, new RegExp(`^host=${jobHostname('view', warm.record.id)}$`, 'm'));
  assert.match(warm.output, /^pid1=sh -c /m);
  assert.match(warm.output, /^root=(?!.*boxcar-pool-init)/m, 'the init left no file behind');
  assert.match(warm.output, /^memtotal=MemTotal:\s+163840 kB$/m);
  assert.match(warm.output, /^stdin=0 0$/m, 'stdin ends at once, as /dev/null does');
  assert.match(warm.output, /GREETING=hello/);
});

test('a pooled gVisor job: exit code, a large environment whole, a missing command, another memory limit', async () => {
  const shape = { resources: { memory: '128Mi' } };
  await runJob({ ...shape, command: ['true'] });
  await poolFilled(2);
  // Larger than any one packet of conmon's attach socket and than a pipe's buffer (in strings
  // of 100 kB: Linux takes none over 128 KiB).
  const env = Object.fromEntries([1, 2, 3].map((i) => [`BIG${i}`, String(i).repeat(100_000)]));
  const failed = await runJob({
    ...shape,
    command: ['sh', '-c', 'echo "len=$(echo "$BIG1$BIG2$BIG3" | wc -c)"; exit 3'],
    env,
  });
  assert.equal(failed.record.handle?.attributes.fromWarmPool, true);
  assert.equal(failed.record.exitCode, 3, failed.output);
  assert.match(failed.output, /^len=300001$/m);
  await poolFilled(2);
  const missing = await runJob({ ...shape, command: ['no-such-command'] });
  assert.equal(missing.record.handle?.attributes.fromWarmPool, true);
  assert.equal(missing.record.exitCode, 127);
  assert.match(missing.output, /cannot run the job's command: no-such-command/);
  // Another limit is another pool key: the sentry sized itself for the first.
  const other = await runJob({
    resources: { memory: '96Mi' },
    command: ['grep', 'MemTotal', '/proc/meminfo'],
  });
  assert.notEqual(other.record.handle?.attributes.fromWarmPool, true);
  assert.match(other.output, /MemTotal:\s+98304 kB/);
});

test('a crash between a pooled take-over and its start: recovery finds it created, and its start runs the job', async () => {
  // The keys of the tests above: 160Mi, 128Mi and 96Mi.
  await poolFilled(3);
  await recoversMidTakeOver(box, 'gvisor', { resources: { memory: '128Mi' } });
});
