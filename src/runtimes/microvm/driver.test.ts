import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { chmod, mkdir, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sandboxDriverSuite } from '../../testing/sandbox-suite.js';
import { sleep } from '../../lib/exec.js';
import { jobTrustFields } from '../../isolation/verify.js';
import { leftovers, TEST_CONFIG, testBoxcar } from '../../testing/harness.js';
import { GUEST_OVERHEAD_MIB, MicrovmDriver, vmShape } from './driver.js';
import { VMM_UID_BASE } from './vmm-jail.js';
import { QmpClient } from './qemu/qmp.js';
import { JobSpec } from '../../jobs/spec.js';
import type { TaskHandle, VmAttributes } from '../../jobs/handle.js';
import { jobLogPath } from '../../runner/job-log.js';
import { silentLogger } from '../../observability/logger.js';
import { metricsText, observeFinishedJob } from '../../observability/metrics.js';
import { UserError } from '../../lib/errors.js';
import { runWithWorkspace, withWorkspaceTmpfs, type WorkspaceJob } from './workspace-testing.js';

sandboxDriverSuite('firecracker');

type Box = Awaited<ReturnType<typeof testBoxcar>>;

describe('microVM driver (QEMU microvm, for real)', () => {
  let box: Box;
  let runJob: Box['runJob'];
  before(async () => {
    box = await testBoxcar();
    const trust = jobTrustFields(box.runtimes.get('firecracker').capabilities);
    runJob = (input, opts) => box.runJob({ runtime: 'firecracker', ...trust, ...input }, opts);
  });
  after(async () => {
    const left = await leftovers(box.paths);
    await box.cleanup();
    assert.deepEqual(left, [], 'every VM and its files were removed');
  });

  test('a cold boot and a restore both run the job on the guest kernel, the restore much faster', async () => {
    const cold = await runJob({ cold_boot: true, command: ['sh', '-c', 'uname -r; exit 5'] });
    assert.equal(cold.record.exitCode, 5);
    const guestKernel = cold.output.trim();
    assert.match(guestKernel, /cloud-amd64$/);
    assert.notEqual(guestKernel, readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim());
    assert.equal(vmOf(cold).restoredFromSnapshot, false);
    assert.equal(vmOf(cold).vmm, 'qemu');
    assert.match(vmOf(cold).accel, /^(kvm|tcg)$/);
    await runJob({ command: ['true'] }); // builds the snapshot for this VM shape
    const warm = await runJob({ command: ['sh', '-c', 'uname -r; exit 5'] });
    assert.equal(warm.record.exitCode, 5);
    assert.equal(warm.output.trim(), guestKernel);
    assert.equal(vmOf(warm).restoredFromSnapshot, true);
    assert.ok(
      vmOf(warm).bootMs * 3 < vmOf(cold).bootMs,
      `restore ${vmOf(warm).bootMs} ms vs cold boot ${vmOf(cold).bootMs} ms`,
    );
  });

  test('output that imitates the agent’s frames is only output; the ports are out of the job’s reach', async () => {
    // An exit frame ('x', length, "0 0 0 0") and a started reply, printed by the job itself.
    const forged = String.raw`printf 'x\000\000\000\0070 0 0 0S\000\000\000\0011'`;
    const script = `${forged}; printf '\\n'; ls /dev | tr '\\n' ' '; echo; cat /sys/class/virtio-ports/*/name 2>/dev/null | tr '\\n' ' '; echo; exit 7`;
    const { record, output } = await runJob({ command: ['sh', '-c', script] });
    assert.equal(record.exitCode, 7, 'the real exit, not the forged one');
    assert.ok(output.startsWith('x\0\0\0\x070 0 0 0S'), JSON.stringify(output.slice(0, 40)));
    assert.doesNotMatch(output, /vport|vda/, 'no virtio device nodes in the job’s /dev');
  });

  test('the guest clock and the job’s limits: date is now, pids stop a fork loop, memory is the guest cgroup’s', async () => {
    const loop = Array.from({ length: 100 }, (_, i) => i).join(' ');
    // At the limit every fork fails, so the count is taken with shell builtins only.
    const script = [
      'echo now=$(date +%s)',
      'echo cpus=$(grep -c ^processor /proc/cpuinfo)',
      'echo mem=$(grep MemTotal /proc/meminfo | tr -s " " | cut -d" " -f2)',
      `(for i in ${loop}; do sleep 5 & done) 2>/dev/null`,
      'set -- /proc/[0-9]*; echo procs=$#',
    ].join('\n');
    const { record, output } = await runJob({
      command: ['sh', '-c', script],
      resources: { pids: 16, cpus: '2', memory: '128Mi' },
    });
    assert.equal(record.state, 'succeeded', output);
    const num = (k: string) => Number(new RegExp(`^${k}=(\\d+)`, 'm').exec(output)?.[1]);
    assert.ok(Math.abs(num('now') - Date.now() / 1000) < 30, `guest clock ${num('now')}`);
    assert.ok(num('procs') <= 16, `${num('procs')} processes under pids 16`);
    assert.equal(num('cpus'), 2, 'two vCPUs for 2 cores');
    assert.ok(num('mem') * 1024 >= 128 * 2 ** 20, `guest memory ${num('mem')} kB holds the 128Mi limit`);
  });

  test('a job sees its workspace directory’s files, and what it leaves there is back once wait resolves', async () => {
    const driver = box.runtimes.get('firecracker');
    assert.equal(driver.capabilities.workspaceReturned, true);
    await withWorkspaceTmpfs(64 * 2 ** 20, async (ws) => {
      await seedWorkspace(ws);
      // A link to a host file outside the workspace arrives as a link, not as the file's content.
      const hostFile = path.join(path.dirname(ws), 'host-only');
      await writeFile(hostFile, 'host secret\n');
      await symlink(hostFile, path.join(ws, 'host-link'));
      const script = [
        'cat a/b/c.txt; readlink link; ./run.sh; test -d empty && echo empty-dir',
        'readlink host-link; cat host-link 2>/dev/null || echo not-followed',
        'echo new > new.txt; mkdir -p out/d; echo artifact > out/d/art; rm gone',
        // Links anywhere are the job's to make; coming back they stay links, never followed.
        'ln -s /etc etc-link; ln -s ../../ up; echo x > suid; chmod 4755 suid',
      ].join('\n');
      const before = readdirSync('/etc').sort();
      const job = await runWithWorkspace(
        driver,
        box,
        { command: ['sh', '-c', script], resources: { workspace: '64Mi' } },
        ws,
      );
      assert.deepEqual(job.exit, { exitCode: 0, oomKilled: false }, job.output);
      assert.equal(vmOfHandle(job).restoredFromSnapshot, true);
      assert.equal(
        job.output,
        `seeded\na/b/c.txt\nran\nempty-dir\n${hostFile}\nnot-followed\n`,
        'the seeded files, as they are on the host',
      );
      assert.equal(readFileSync(path.join(ws, 'new.txt'), 'utf8'), 'new\n');
      assert.equal(readFileSync(path.join(ws, 'out/d/art'), 'utf8'), 'artifact\n');
      assert.equal(existsSync(path.join(ws, 'gone')), false, 'what the job removed is gone');
      assert.equal(readFileSync(path.join(ws, 'a/b/c.txt'), 'utf8'), 'seeded\n');
      assert.equal(statSync(path.join(ws, 'run.sh')).mode & 0o777, 0o755, 'the executable bit');
      assert.equal(readlinkSync(path.join(ws, 'etc-link')), '/etc');
      assert.equal(readlinkSync(path.join(ws, 'up')), '../../');
      const suid = statSync(path.join(ws, 'suid'));
      assert.equal(suid.mode & 0o7777, 0o755, 'no setuid bit comes back');
      assert.equal(suid.uid, 0);
      assert.deepEqual(readdirSync('/etc').sort(), before, 'nothing written in /etc');
      assert.deepEqual(readdirSync(path.dirname(ws)).sort(), ['host-only', 'workspace'], 'nothing beside it');
      assert.equal(readFileSync(hostFile, 'utf8'), 'host secret\n');
    });
  });

  test('a guest leaving a file past its workspace size gets one clear error, and the host keeps nothing of it', async () => {
    const driver = box.runtimes.get('firecracker');
    await withWorkspaceTmpfs(32 * 2 ** 20, async (ws) => {
      await writeFile(path.join(ws, 'seeded'), 'x');
      const script = 'truncate -s 8G huge; ln -s /etc etc-link; echo kept > small';
      const job = await runWithWorkspace(
        driver,
        box,
        { command: ['sh', '-c', script], resources: { workspace: '32Mi' } },
        ws,
      );
      assert.ok(job.exit instanceof UserError, `refused: ${JSON.stringify(job.exit)}`);
      assert.match(
        job.exit.message,
        /^the job's workspace was not returned: a file in it is larger than its workspace size \(resources\.workspace: 33554432 bytes\)$/,
      );
      assert.deepEqual(readdirSync(ws), [], 'nothing half-returned, nor the seeded files');
      assert.deepEqual(readdirSync(path.dirname(ws)), ['workspace']);
    });
  });

  test('a job whose VM is killed returns no workspace: the seeded files do not pass for its own, and its log says so', async () => {
    const driver = box.runtimes.get('firecracker');
    await withWorkspaceTmpfs(32 * 2 ** 20, async (ws) => {
      await writeFile(path.join(ws, 'seeded'), 'x');
      const job = await runWithWorkspace(
        driver,
        box,
        { command: ['sh', '-c', 'echo left > out; sleep 30'], resources: { workspace: '32Mi' } },
        ws,
        (handle) => driver.stop(handle, 'SIGKILL'),
      );
      assert.deepEqual(job.exit, { exitCode: 128 + 9, oomKilled: false });
      assert.match(job.output, /the VM was killed: its workspace was not returned/);
      assert.deepEqual(readdirSync(ws), []);
    });
  });

  test('a guest writing its workspace disk past its end gets I/O errors; its VMM is not killed for it', async () => {
    const running = runJob({ command: ['sh', '-c', 'sleep 2; echo survived'] });
    const handle = await runningHandle();
    const dir = path.join(box.paths.sandboxes, handle.sandboxId);
    // Past the file, far below the disk's size the guest knows, as a guest kernel could write.
    const qmp = await QmpClient.connect(path.join(dir, 'api.sock'));
    try {
      await qmp.execute('human-monitor-command', {
        'command-line': 'qemu-io workspace "write 40G 64k"',
      });
    } finally {
      qmp.close();
    }
    // qemu-io reports on QEMU's own output, not the monitor's.
    assert.match(readFileSync(path.join(dir, 'vmm.log'), 'utf8'), /write failed: Input\/output error/);
    const disk = statSync(path.join(dir, 'workspace.img'));
    assert.ok(disk.size < 40 * 2 ** 30, `the file (${disk.size} bytes) ends below what the guest wrote at`);
    assert.equal(disk.blocks, 0, 'nothing written');
    const { record, output } = await running;
    assert.equal(record.state, 'succeeded', record.error ?? output);
    assert.match(output, /survived/);
  });

  test('a damaged snapshot is detected and rebuilt; the job still runs', async () => {
    await runJob({ command: ['true'] }); // the default shape's snapshot exists
    const dir = path.join(box.paths.vm, 'snapshots');
    const shape = vmShape(JobSpec.parse({ command: ['true'] }).limits);
    const [name] = readdirSync(dir).filter(
      (n) => n.startsWith(`m${shape.memoryMiB}-c${shape.vcpus}-`) && !n.includes('.'),
    );
    assert.ok(name, 'a snapshot exists');
    await truncate(path.join(dir, name, 'state'), 1000);
    const r1 = await runJob({ command: ['sh', '-c', 'echo after-truncate'] });
    assert.equal(r1.record.state, 'succeeded');
    assert.equal(vmOf(r1).restoredFromSnapshot, true, 'rebuilt, then restored');
    // Damage the middle of the state, keeping its size: QEMU refuses it; the job boots cold.
    const state = path.join(dir, name, 'state');
    const bytes = readFileSync(state);
    bytes.fill(0xa5, 4096, 4096 + 65536);
    await writeFile(state, bytes);
    const r2 = await runJob({ command: ['sh', '-c', 'echo after-damage'] });
    assert.equal(r2.record.state, 'succeeded', r2.record.error ?? '');
    assert.match(r2.output, /after-damage/);
    const r3 = await runJob({ command: ['true'] });
    assert.equal(vmOf(r3).restoredFromSnapshot, true, 'a good snapshot again');
  });

  test('a finished VM job feeds the seed’s firecracker_* metrics', async () => {
    const { record } = await runJob({ command: ['sh', '-c', 'echo hi'] });
    observeFinishedJob(record);
    const { text } = await metricsText();
    const count = (name: string) => Number(new RegExp(`^${name}_count (\\d+)`, 'm').exec(text)?.[1] ?? 0);
    assert.equal(count('firecracker_snapshot_restore_duration_seconds'), 1);
    for (const m of [
      'firecracker_vm_uptime_seconds',
      'firecracker_vm_memory_used_bytes',
      'firecracker_vm_cpu_usage_percent',
    ])
      assert.equal(count(m), 1, m);
    assert.match(text, /scheduler_job_startup_duration_seconds_count\{runtime="firecracker"\} 1/);
    assert.match(text, /boxcar_sandbox_start_seconds_count\{runtime="firecracker",start_path="restored"\} 1/);
  });

  test('a restarted Boxcar finds a running VM, then its exit', async () => {
    const driver = new MicrovmDriver({ paths: box.paths, logger: silentLogger() });
    const running = runJob({ command: ['sh', '-c', 'sleep 1.5; echo done; exit 3'] });
    let handle;
    for (let i = 0; i < 100 && !handle; i++) {
      await sleep(50);
      const [job] = await box.store.listJobs({ states: ['running'], limit: 1 });
      handle = job?.handle ?? undefined;
    }
    assert.ok(handle, 'the job runs');
    assert.deepEqual(await driver.recover(handle), { state: 'running' });
    const { record } = await running;
    assert.equal(record.exitCode, 3);
  });

  /** The handle of the one job running now, once it runs. */
  const runningHandle = async (): Promise<TaskHandle> => {
    for (let i = 0; i < 200; i++) {
      const [job] = await box.store.listJobs({ states: ['running'], limit: 1 });
      if (job?.handle) return job.handle;
      await sleep(50);
    }
    throw new Error('no job ran');
  };

  test('the VMM is jailed: its own uid and cgroup, no BOXCAR_ variable, a root holding only its files', async () => {
    process.env.BOXCAR_PROBE_SECRET = 'must-not-reach-the-vmm';
    try {
      const running = runJob({ command: ['sh', '-c', 'sleep 2; echo done'] });
      const handle = await runningHandle();
      const pid = handle.attributes.hostPid as number;
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
      assert.ok(uid >= VMM_UID_BASE, `the VMM runs as uid ${uid}`);
      assert.match(status, /^CapEff:\s+0+$/m, 'no capabilities');
      assert.match(status, /^NoNewPrivs:\s+1$/m);
      assert.match(status, /^Seccomp:\s+2$/m, 'QEMU’s own seccomp sandbox');
      const cgroups = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      assert.match(cgroups, new RegExp(`:memory:/boxcar/vmm-${uid}$`, 'm'));
      assert.match(cgroups, new RegExp(`:pids:/boxcar/vmm-${uid}$`, 'm'));
      const limit = Number(
        readFileSync(`/sys/fs/cgroup/memory/boxcar/vmm-${uid}/memory.limit_in_bytes`, 'utf8'),
      );
      const guest = vmShape(JobSpec.parse({ command: ['true'] }).limits).memoryMiB * 2 ** 20;
      assert.ok(
        limit > guest && limit <= guest + 256 * 2 ** 20,
        `memory limit ${limit} for a ${guest}-byte guest`,
      );
      const pids = Number(readFileSync(`/sys/fs/cgroup/pids/boxcar/vmm-${uid}/pids.max`, 'utf8'));
      assert.ok(pids <= 64, `pids.max ${pids}`);
      const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
      assert.deepEqual(
        environ.filter((e) => e.startsWith('BOXCAR_')),
        [],
      );
      assert.equal(readlinkSync(`/proc/${pid}/root`), '/run/boxcar/vmm-stage', 'chrooted');
      const mounts = readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(' ')[4] as string);
      const own = path.join(box.paths.sandboxes, handle.sandboxId);
      for (const m of mounts)
        assert.ok(
          ['/', '/usr', '/proc'].includes(m) ||
            m.startsWith('/dev/') ||
            m.startsWith(own) ||
            m === handle.logPath ||
            m.startsWith(box.paths.vm),
          `the VMM sees ${m}`,
        );
      assert.ok(!mounts.includes(box.paths.db), 'not the database');
      const { record } = await running;
      assert.equal(record.state, 'succeeded');
      // Untrusted code on TCG runs by the operator's opt-in only, and the audit trail says so.
      const started = (await box.store.auditRecords({ tenant: 'test', limit: 1000 })).find(
        (a) => a.action === 'job.started' && a.subject === record.id,
      );
      const detail = JSON.parse(started?.detail ?? '{}') as Record<string, string>;
      assert.equal(detail.trust, 'untrusted');
      if (vmOf({ record }).accel === 'tcg')
        assert.equal(detail.untrustedOnTcg, 'microvm.allow_tcg_for_untrusted');
    } finally {
      delete process.env.BOXCAR_PROBE_SECRET;
    }
  });

  test('a guest writing its disk past the job’s limit is stopped, and the job says why', async () => {
    const running = runJob({ command: ['sleep', '30'], resources: { rootfs: '8Mi' } });
    const handle = await runningHandle();
    const dir = path.join(box.paths.sandboxes, handle.sandboxId);
    // Writes through QEMU's block layer, as a guest kernel writing /dev/vda directly would.
    const qmp = await QmpClient.connect(path.join(dir, 'api.sock'));
    try {
      await qmp
        .execute('human-monitor-command', { 'command-line': 'qemu-io root "write 0 256M"' })
        .catch(() => undefined); // QEMU dies mid-write
    } finally {
      qmp.close();
    }
    const { record, output } = await running;
    assert.equal(record.state, 'failed', `${record.error ?? ''} ${output}`);
    assert.equal(record.exitCode, 128 + 25, 'as if killed by SIGXFSZ');
    assert.match(output, /wrote its disk up to the job's limit .*resources\.rootfs\): the VM was stopped/);
    const disk = path.join(dir, 'disk.qcow2');
    assert.ok(!existsSync(disk), 'the sandbox is gone');
  });
});

describe('microVM warm pool', () => {
  let box: Box;
  before(async () => {
    const config = path.join(os.tmpdir(), `bx-pool-${process.pid}.yaml`);
    await writeFile(config, `${TEST_CONFIG}\n  warm_pool: 1\n`);
    box = await testBoxcar({ config });
    await rm(config);
  });
  after(async () => {
    await box.close(); // the pool's idle VMs go with it
    const left = await leftovers(box.paths);
    await box.cleanup();
    assert.deepEqual(left, [], 'no pooled VM left behind');
  });

  test('a pooled VM is warmed, ballooned down while idle, and taken over by a job instead of a restore', async () => {
    const driver = box.runtimes.get('firecracker');
    await driver.warm?.();
    type Idle = { guestMiB: number; memoryBytes: number; balloon: { actualBytes: number } };
    const idle = async () => ((await driver.status?.())?.warmPool as { idle: Idle[] }).idle;
    assert.equal((await idle()).length, 1, 'one idle VM of the base image');
    // The balloon gives back all but the idle allowance (it settles within seconds).
    let vm = (await idle())[0] as Idle;
    for (let i = 0; i < 50 && vm.balloon.actualBytes > (GUEST_OVERHEAD_MIB + 32) * 2 ** 20; i++) {
      await sleep(200);
      vm = (await idle())[0] as Idle;
    }
    assert.ok(
      vm.balloon.actualBytes <= (GUEST_OVERHEAD_MIB + 32) * 2 ** 20,
      `guest keeps ${vm.balloon.actualBytes}`,
    );
    const r = await box.runJob({
      runtime: 'firecracker',
      ...jobTrustFields(box.runtimes.get('firecracker').capabilities),
      command: ['sh', '-c', 'echo pooled; exit 4'],
    });
    assert.equal(r.record.exitCode, 4);
    assert.match(r.output, /pooled/);
    assert.equal(vmOf(r).fromWarmPool, true);
    // The figure against the seed's 125 ms is bench/microvm's; here only that no restore happened.
    assert.ok(vmOf(r).bootMs < 1000, `taken over in ${vmOf(r).bootMs} ms`);
    // The job's stored log holds what it printed; the VM's own output file went with the sandbox.
    assert.match(readFileSync(jobLogPath(box.paths, r.record.id), 'utf8'), /pooled/);
    assert.equal(existsSync(r.record.handle?.logPath ?? ''), false);
  });

  test('a pooled VM takes a job with a workspace: its files are made in place on the running VM’s disk', async () => {
    const driver = box.runtimes.get('firecracker');
    await driver.warm?.();
    await withWorkspaceTmpfs(64 * 2 ** 20, async (ws) => {
      await seedWorkspace(ws);
      const job = await runWithWorkspace(
        driver,
        box,
        { command: ['sh', '-c', 'cat a/b/c.txt; ./run.sh; echo pooled > new.txt'] },
        ws,
      );
      assert.deepEqual(job.exit, { exitCode: 0, oomKilled: false }, job.output);
      assert.equal(vmOfHandle(job).fromWarmPool, true);
      assert.match(job.output, /^seeded\nran\n/);
      assert.equal(readFileSync(path.join(ws, 'new.txt'), 'utf8'), 'pooled\n');
    });
  });
});

/** A workspace as a checkout leaves one: a nested file, a symlink, an executable, an empty directory. */
async function seedWorkspace(ws: string): Promise<void> {
  await mkdir(path.join(ws, 'a/b'), { recursive: true });
  await writeFile(path.join(ws, 'a/b/c.txt'), 'seeded\n');
  await symlink('a/b/c.txt', path.join(ws, 'link'));
  await writeFile(path.join(ws, 'run.sh'), '#!/bin/sh\necho ran\n');
  await chmod(path.join(ws, 'run.sh'), 0o755);
  await mkdir(path.join(ws, 'empty'));
  await writeFile(path.join(ws, 'gone'), 'the job removes this\n');
  assert.ok(lstatSync(path.join(ws, 'link')).isSymbolicLink());
}

function vmOfHandle(job: WorkspaceJob): VmAttributes {
  return job.handle.attributes.vm as VmAttributes;
}

function vmOf(r: { record: { handle: TaskHandle | null } }): VmAttributes {
  return r.record.handle?.attributes.vm as VmAttributes;
}
