import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { executeJob } from '../../jobs/execute.js';
import { currentOwner } from '../../jobs/owner.js';
import { JobSpec } from '../../jobs/spec.js';
import { CAPABILITIES } from '../shared/oci-spec.js';
import { leftovers, testBoxcar } from '../../testing/harness.js';

/**
 * The runc driver for real: every test runs a container through conmon and checks what the
 * job could and could not do, and that nothing of it is left on the host afterwards.
 */
type Box = Awaited<ReturnType<typeof testBoxcar>>;

describe('runc driver', () => {
  let box: Box;
  before(async () => {
    box = await testBoxcar();
  });
  after(async () => {
    const left = await leftovers(box.paths);
    await box.cleanup();
    assert.deepEqual(left, [], 'every sandbox was destroyed');
  });

  test('fingerprints as usable on this host', async () => {
    const fp = await box.runtimes.fingerprint('runc');
    assert.equal(fp.usable, true, fp.reason);
    assert.match(fp.details.runc ?? '', /runc version/);
  });

  test('exit code, output of both streams, startup, peak memory and cost', async () => {
    const { record, output } = await box.runJob({ command: ['sh', '-c', 'echo out; echo err >&2; exit 3'] });
    assert.equal(record.state, 'failed');
    assert.equal(record.exitCode, 3);
    assert.match(output, /out\n/);
    assert.match(output, /err\n/);
    assert.ok(
      record.startupMs !== null && record.startupMs > 0 && record.startupMs < 5000,
      `startupMs ${record.startupMs}`,
    );
    assert.ok((record.peakMemoryBytes ?? 0) > 0, 'peak memory read from the cgroup');
    assert.ok((record.costDollars ?? 0) > 0);
    assert.deepEqual(
      (await box.store.events(record.id)).map((e) => e.to),
      ['queued', 'starting', 'running', 'failed'],
    );
  });

  test('a job that allocates past its memory limit is OOM-killed and reported so', async () => {
    const { record } = await box.runJob({
      command: ['sh', '-c', 'x=$(head -c 100m /dev/zero | tr "\\0" a); echo ${#x}'],
      resources: { memory: '32Mi' },
    });
    assert.equal(record.state, 'oom');
    assert.equal(record.oomKilled, true);
    assert.equal(record.exitCode, 137);
    assert.ok((record.peakMemoryBytes ?? 0) <= 32 * 2 ** 20 + 2 ** 20);
  });

  test('a job past its timeout is killed and reported timed out', async () => {
    const t0 = Date.now();
    const { record } = await box.runJob({ command: ['sleep', '60'], timeout: '1s' });
    assert.equal(record.state, 'timeout');
    assert.equal(record.timedOut, true);
    assert.ok(Date.now() - t0 < 8000, 'stopped within a few seconds');
  });

  test('cancelling stops the job and records cancelled', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const { record } = await box.runJob({ command: ['sleep', '60'] }, { signal: ac.signal });
    assert.equal(record.state, 'cancelled');
  });

  test('the sandbox: read-only root, sized tmpfs, own hostname, loopback only, seccomp, few capabilities', async () => {
    const script = [
      'touch /etc/x 2>/dev/null && echo root=writable || echo root=readonly',
      'echo hi > /tmp/a && echo tmp=writable',
      'head -c 12m /dev/zero > /tmp/big 2>/dev/null && echo tmp=unbounded || echo tmp=full',
      'head -c 1m /dev/zero > /workspace/w && echo ws=writable',
      'echo host=$(hostname)',
      'echo ifaces=$(ls /sys/class/net | tr "\\n" ,)',
      'grep -E "^(Seccomp|NoNewPrivs|CapEff):" /proc/self/status | tr -d "\\t" | tr "\\n" " "; echo',
      'unshare -U true 2>/dev/null && echo userns=allowed || echo userns=blocked',
      'unshare -n true 2>/dev/null && echo netns=allowed || echo netns=blocked',
      'mount -t tmpfs t /mnt 2>/dev/null && echo mount=allowed || echo mount=blocked',
      'mknod /tmp/sda b 8 0 2>/dev/null && echo mknod=allowed || echo mknod=blocked',
      'echo 1 > /proc/sysrq-trigger 2>/dev/null && echo sysrq=writable || echo sysrq=blocked',
      'cat /proc/kcore 2>/dev/null | head -c 1 | wc -c | sed s/^/kcore=/',
      'echo cwd=$(pwd) user=$(id -u) ci=$CI job=$BOXCAR_JOB_NAME',
    ].join('\n');
    const { record, output } = await box.runJob({
      name: 'probe',
      command: ['sh', '-c', script],
      resources: { tmp: '8Mi' },
      env: { FOO: 'bar' },
    });
    assert.equal(record.state, 'succeeded', output);
    const has = (s: string) => assert.ok(output.includes(s), `expected "${s}" in:\n${output}`);
    has('root=readonly');
    has('tmp=writable');
    has('tmp=full');
    has('ws=writable');
    has(`host=probe-${record.id.slice(0, 8)}`);
    has('ifaces=lo,');
    has('Seccomp:2');
    has('NoNewPrivs:1');
    has('userns=blocked');
    has('netns=blocked');
    has('mount=blocked');
    has('mknod=blocked');
    has('sysrq=blocked');
    has('kcore=0');
    has('cwd=/workspace user=0 ci=true job=probe');
    const capEff = /CapEff:([0-9a-f]+)/.exec(output)?.[1];
    assert.equal(BigInt(`0x${capEff}`), expectedCapMask(), 'exactly the capability set we grant');
  });

  test('pids and CPU limits hold: a fork loop stops at the pids limit', async () => {
    // Only shell builtins after the loop: once the limit is reached, nothing can fork.
    const loop = Array.from({ length: 40 }, (_, i) => i + 1).join(' ');
    const script = [
      'read q < /sys/fs/cgroup/cpu/cpu.cfs_quota_us; echo quota=$q',
      `sh -c "for i in ${loop}; do sleep 5 & echo \\$i > /tmp/n; done" 2>/dev/null`,
      'read n < /tmp/n; echo started=$n',
    ].join('\n');
    const { record, output } = await box.runJob({
      command: ['sh', '-c', script],
      resources: { pids: 16, cpus: '500m' },
    });
    assert.equal(record.state, 'succeeded', output);
    const started = Number(/started=(\d+)/.exec(output)?.[1]);
    assert.ok(
      started > 1 && started < 16,
      `background processes capped by pids=16, started ${started}\n${output}`,
    );
    assert.match(output, /quota=50000\b/);
  });

  test('secrets reach trusted jobs only, and are never stored', async () => {
    process.env.BOXCAR_SECRET_DEPLOY_TOKEN = 's3cr3t-value';
    try {
      const trusted = await box.runJob({
        source: 'internal_repo',
        user_group: 'internal_team',
        secrets: ['DEPLOY_TOKEN'],
        command: ['sh', '-c', 'echo token=${DEPLOY_TOKEN:-none}'],
      });
      assert.match(trusted.output, /token=s3cr3t-value/);
      assert.doesNotMatch(JSON.stringify(await box.store.getJob(trusted.record.id)), /s3cr3t-value/);
      // The executor's own rule, whatever runtime an untrusted job got: no secrets.
      const spec = JobSpec.parse({
        secrets: ['DEPLOY_TOKEN'],
        command: ['sh', '-c', 'echo token=${DEPLOY_TOKEN:-none}'],
      });
      const job = await box.store.createJob({
        id: randomUUID(),
        tenant: 'test',
        spec,
        decision: { trust: 'untrusted', runtime: 'runc', fallback: null, reasons: ['test'] },
        owner: currentOwner(),
      });
      const untrusted = await executeJob(box, job);
      assert.match(untrusted.output, /token=none/);
    } finally {
      delete process.env.BOXCAR_SECRET_DEPLOY_TOKEN;
    }
    const missing = await box.runJob({
      source: 'internal_repo',
      user_group: 'internal_team',
      secrets: ['NOT_SET'],
      command: ['true'],
    });
    assert.equal(missing.record.state, 'error');
    assert.match(missing.record.error ?? '', /secret NOT_SET is not configured: set BOXCAR_SECRET_NOT_SET/);
  });

  test('a missing command fails the job with the reason, and still cleans up', async () => {
    const { record } = await box.runJob({ command: ['/no/such/binary'] });
    assert.equal(record.state, 'error');
    assert.match(record.error ?? '', /no such file|not found|executable file/i);
  });
});

const CAP_BITS: Record<string, number> = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_FOWNER: 3,
  CAP_FSETID: 4,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_NET_BIND_SERVICE: 10,
  CAP_AUDIT_WRITE: 29,
};

function expectedCapMask(): bigint {
  return CAPABILITIES.reduce((m, c) => m | (1n << BigInt(CAP_BITS[c] ?? 63)), 0n);
}
