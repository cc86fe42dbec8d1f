import { after, before, describe, test } from 'node:test';
import { operatorOrigin } from '../runner/local.js';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { executeJob } from '../runner/execute.js';
import { jobLogPath } from '../runner/job-log.js';
import { currentOwner } from '../lib/owner.js';
import { JobSpec } from '../jobs/spec.js';
import { sleep } from '../lib/exec.js';
import { capabilityMask } from '../runtimes/shared/oci-spec.js';
import { jobTrustFields } from '../isolation/verify.js';
import type { Capabilities } from '../runtimes/runtime.js';
import { leftovers, testBoxcar } from './harness.js';

type Box = Awaited<ReturnType<typeof testBoxcar>>;

/**
 * What every driver that runs commands in an image (runc, gVisor, microVMs) must do, checked for
 * real: each test runs a sandbox and checks what the job could and could not do, and that
 * nothing of it is left on the host afterwards. Each driver's test file runs this suite.
 */
export function sandboxDriverSuite(runtime: 'runc' | 'gvisor' | 'firecracker'): void {
  describe(`${runtime} driver`, () => {
    let box: Box;
    let caps: Capabilities;
    let runJob: Box['runJob'];
    before(async () => {
      box = await testBoxcar();
      caps = box.runtimes.get(runtime).capabilities;
      // Jobs run as the trust their runtime is for; the runtime is asked for explicitly.
      const trust = jobTrustFields(caps);
      runJob = (input, opts) => box.runJob({ runtime, ...trust, ...input }, opts);
    });
    after(async () => {
      const left = await leftovers(box.paths);
      await box.cleanup();
      assert.deepEqual(left, [], 'every sandbox was destroyed');
    });

    test('fingerprints as usable on this host', async () => {
      const fp = await box.runtimes.fingerprint(runtime);
      assert.equal(fp.usable, true, fp.reason);
    });

    test('exit code, output of both streams, startup, peak memory and cost', async () => {
      const { record, output } = await runJob({ command: ['sh', '-c', 'echo out; echo err >&2; exit 3'] });
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
      const { record } = await runJob({
        command: ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=100M', 'count=1'], // one 100 MB buffer, touched at once
        resources: { memory: '64Mi' },
      });
      assert.equal(record.state, 'oom');
      assert.equal(record.oomKilled, true);
      assert.equal(record.exitCode, 137);
      // A container's peak is its cgroup's (a page or so past the limit); a VM's is its VMM's
      // RSS: the guest plus the VMM itself.
      const limits = JobSpec.parse({ resources: { memory: '64Mi' }, command: ['x'] }).limits;
      const cap =
        limits.memoryBytes +
        caps.memoryOverheadBytes(limits) +
        (caps.memoryMeasure === 'cgroup' ? 2 ** 20 : 0);
      assert.ok(
        (record.peakMemoryBytes ?? 0) <= cap,
        `peak memory ${record.peakMemoryBytes} stays under ${cap}`,
      );
    });

    test('a job past its timeout is killed and reported timed out', async () => {
      const t0 = Date.now();
      const { record } = await runJob({ command: ['sleep', '60'], timeout: '1s' });
      assert.equal(record.state, 'timeout');
      assert.equal(record.timedOut, true);
      assert.ok(Date.now() - t0 < 8000, 'stopped within a few seconds');
    });

    test('cancelling stops the job and records cancelled', async () => {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 300);
      const { record } = await runJob({ command: ['sleep', '60'] }, { signal: ac.signal });
      assert.equal(record.state, 'cancelled');
    });

    test('the sandbox: its own root, sized tmpfs, own hostname, loopback only, seccomp, few capabilities', async () => {
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
      const { record, output } = await runJob({
        name: 'probe',
        command: ['sh', '-c', script],
        resources: { tmp: '8Mi' },
        env: { FOO: 'bar' },
      });
      assert.equal(record.state, 'succeeded', output);
      const has = (s: string) => assert.ok(output.includes(s), `expected "${s}" in:\n${output}`);
      has(caps.writableRoot ? 'root=writable' : 'root=readonly');
      has('tmp=writable');
      has('tmp=full');
      has('ws=writable');
      has(`host=probe-${record.id.slice(0, 8)}`);
      has('ifaces=lo,');
      has('Seccomp:2');
      if (runtime !== 'gvisor') has('NoNewPrivs:1'); // gVisor's procfs has no such line
      has('userns=blocked');
      has('netns=blocked');
      has('mount=blocked');
      has('mknod=blocked');
      has('sysrq=blocked');
      has('kcore=0');
      has('cwd=/workspace user=0 ci=true job=probe');
      const capEff = /CapEff:([0-9a-f]+)/.exec(output)?.[1];
      assert.equal(BigInt(`0x${capEff}`), capabilityMask(), 'exactly the capability set we grant');
    });

    test('a job’s writes over its image are its own: within resources.rootfs, gone for the next job, never in the image', async (t) => {
      if (!caps.writableRoot) return t.skip('its root is read-only (checked above)');
      const first = await runJob({
        command: [
          'sh',
          '-c',
          [
            'echo x > /etc/x && cat /etc/x',
            'echo intruder:x:0:0::/:/bin/sh >> /etc/passwd',
            'rm /bin/ls',
            'head -c 12m /dev/zero > /big 2>/dev/null && echo root=unbounded || echo root=full',
          ].join('\n'),
        ],
        resources: { rootfs: '8Mi' },
      });
      assert.equal(first.record.state, 'succeeded', first.output);
      assert.equal(first.output, 'x\nroot=full\n');
      const next = await runJob({
        command: [
          'sh',
          '-c',
          'cat /etc/x 2>/dev/null || echo no-x; grep -c intruder /etc/passwd; ls /bin/ls',
        ],
      });
      assert.equal(next.output, 'no-x\n0\n/bin/ls\n', 'the next job has the image as it is');
      for (const key of readdirSync(box.paths.layers)) {
        const fs = path.join(box.paths.layers, key, 'fs');
        assert.ok(!existsSync(path.join(fs, 'etc/x')), fs);
        assert.doesNotMatch(readFileSync(path.join(fs, 'etc/passwd'), 'utf8'), /intruder/);
        assert.ok(lstatSync(path.join(fs, 'bin/ls')).isSymbolicLink());
      }
    });

    test('CPU, memory and pids limits are set on the job’s cgroup, and a fork loop cannot pass them', async (t) => {
      if (!caps.hostCgroup)
        return t.skip(
          'its limits are not a host cgroup (a VM’s are its size and a guest cgroup): see its own tests',
        );
      const ac = new AbortController();
      const loop = Array.from({ length: 300 }, (_, i) => i + 1).join(' ');
      const script = `sleep 2; sh -c "for i in ${loop}; do sleep 30 & done" 2>/dev/null; sleep 30`;
      const running = runJob(
        { command: ['sh', '-c', script], resources: { pids: 16, cpus: '500m', memory: '96Mi' } },
        { signal: ac.signal },
      );
      let sandboxId: string | undefined;
      for (let i = 0; i < 100 && !sandboxId; i++) {
        await sleep(50);
        const [job] = await box.store.listJobs({ states: ['running'], limit: 1 });
        sandboxId = job?.handle?.sandboxId;
      }
      assert.ok(sandboxId, 'the job is running');
      const cg = (ctrl: string, file: string) =>
        Number(readFileSync(`/sys/fs/cgroup/${ctrl}/boxcar/${sandboxId}/${file}`, 'utf8'));
      assert.equal(cg('cpu', 'cpu.cfs_quota_us'), 50_000);
      assert.equal(cg('memory', 'memory.limit_in_bytes'), 96 * 2 ** 20);
      const pidsMax = cg('pids', 'pids.max');
      assert.ok(pidsMax >= 16 && pidsMax <= 16 + 128, `pids.max ${pidsMax}`);
      await sleep(3000); // the fork loop has run
      // Under gVisor the loop may take the job down with it; either way it never passed the limit.
      const { record } = await (async () => {
        if (existsSync(`/sys/fs/cgroup/pids/boxcar/${sandboxId}`)) {
          assert.ok(cg('pids', 'pids.current') <= pidsMax, 'the fork loop stopped at the limit');
          assert.ok(cg('pids', 'pids.max') === pidsMax);
        }
        ac.abort();
        return running;
      })();
      assert.ok(['cancelled', 'failed'].includes(record.state), record.state);
    });

    test('secrets reach trusted jobs only, and are never stored', async () => {
      process.env.BOXCAR_SECRET_DEPLOY_TOKEN = 's3cr3t-value';
      try {
        const trusted = await runJob({
          source: 'internal_repo',
          user_group: 'internal_team',
          secrets: ['DEPLOY_TOKEN'],
          command: ['sh', '-c', 'echo token=${DEPLOY_TOKEN:-none}; printf %s "$DEPLOY_TOKEN" | sha256sum'],
        });
        // It got the value (its digest) and printed it, which its output shows masked.
        const digest = createHash('sha256').update('s3cr3t-value').digest('hex');
        assert.equal(trusted.output, `token=***\n${digest}  -\n`);
        assert.doesNotMatch(readFileSync(jobLogPath(box.paths, trusted.record.id), 'utf8'), /s3cr3t-value/);
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
          decision: { trust: 'untrusted', runtime, fallback: null, reasons: ['test'] },
          origin: operatorOrigin(),
          owner: currentOwner(box.paths.root),
        });
        const untrusted = await executeJob(box, job);
        assert.match(untrusted.output, /token=none/);
      } finally {
        delete process.env.BOXCAR_SECRET_DEPLOY_TOKEN;
      }
      const missing = await runJob({
        source: 'internal_repo',
        user_group: 'internal_team',
        secrets: ['NOT_SET'],
        command: ['true'],
      });
      assert.equal(missing.record.state, 'error');
      assert.match(missing.record.error ?? '', /secret NOT_SET is not configured: set BOXCAR_SECRET_NOT_SET/);
      assert.equal(missing.record.infraFailure, false, "the job's own input: not the runtime's failure");
    });

    test('a missing command fails the job with the reason, and still cleans up', async () => {
      const { record } = await runJob({ command: ['/no/such/binary'] });
      assert.equal(record.state, 'error');
      assert.match(record.error ?? '', /no such file|not found|executable file/i);
    });
  });
}
