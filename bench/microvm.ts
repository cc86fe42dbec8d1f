/**
 * MicroVM jobs (runtime `firecracker`) on this node's VMM: cold boot vs snapshot restore vs the
 * warm pool (`startupMs` medians, beside QEMU alone booting and restoring the same guest), the
 * VMM's memory per running VM against what its guest uses, and VMs per minute.
 * Run: node dist/bench/microvm.js [runs] [concurrent-vms]   (root)
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { openBoxcar, type Boxcar } from '../src/boxcar.js';
import { runLocalJob } from '../src/runner/local.js';
import { JobSpec } from '../src/jobs/spec.js';
import { silentLogger } from '../src/observability/logger.js';
import { AgentChannel } from '../src/runtimes/microvm/agent-channel.js';
import { createJobDisk } from '../src/runtimes/microvm/disk.js';
import { vmShape } from '../src/runtimes/microvm/driver.js';
import { ensureGuest } from '../src/runtimes/microvm/guest/guest.js';
import { QmpClient } from '../src/runtimes/microvm/qemu/qmp.js';
import { QemuVmm } from '../src/runtimes/microvm/qemu/vmm.js';
import { vmFiles } from '../src/runtimes/microvm/vmm.js';
import { sleep } from '../src/lib/exec.js';
import type { TaskHandle, VmAttributes } from '../src/jobs/handle.js';
import { pss, rss } from '../src/lib/proc.js';
import { median, row } from './lib/stats.js';
import { removeScratch } from './lib/scratch.js';

const RUNS = Number(process.argv[2] ?? 7);
const CONCURRENT = Number(process.argv[3] ?? 6);
const UNTRUSTED = { runtime: 'firecracker', source: 'external_pr', user_group: 'external_contributor' };

async function job(box: Boxcar, input: Record<string, unknown>, signal?: AbortSignal) {
  const r = await runLocalJob(box, JobSpec.parse({ ...UNTRUSTED, ...input }), { signal });
  if (!['succeeded', 'cancelled'].includes(r.record.state))
    throw new Error(`job ${r.record.state}: ${r.record.error ?? r.output}`);
  return { record: r.record, vm: r.record.handle?.attributes.vm as VmAttributes };
}

async function main() {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-bench-vm-'));
  // Untrusted jobs in microVMs on a TCG host need the operator's opt-in (TCG is no boundary):
  // this measures the VM's start, whatever the accelerator.
  const config = path.join(root, 'config.yaml');
  const poolConfig = path.join(root, 'pool.yaml');
  const optIn = 'microvm:\n  allow_tcg_for_untrusted: true\n';
  await writeFile(config, optIn);
  await writeFile(poolConfig, `${optIn}  warm_pool: 1\n`);
  const box = await openBoxcar({ state: path.join(root, 'state'), config }, silentLogger());
  try {
    const fp = await box.runtimes.fingerprint('firecracker');
    if (!fp.usable) throw new Error(`firecracker is not usable here: ${fp.reason}`);
    const accel = fp.details.accel as 'kvm' | 'tcg';
    console.log(
      `VMM ${fp.details.vmm}, accelerator ${accel} (${fp.details.accelReason}); guest ${fp.details.guestKernel}`,
    );
    console.log(`${os.availableParallelism()} cores, ${RUNS} runs each; medians in ms\n`);

    // Boxcar: the same job booted cold, restored, and taken from the warm pool.
    await job(box, { command: ['true'] }); // builds the guest and the snapshot
    const cold = [];
    const restored = [];
    for (let i = 0; i < RUNS; i++) cold.push(await job(box, { command: ['true'], cold_boot: true }));
    for (let i = 0; i < RUNS; i++) restored.push(await job(box, { command: ['true'] }));
    const pooledBox = await openBoxcar(
      { state: path.join(root, 'state'), config: poolConfig },
      silentLogger(),
    );
    const pooled = [];
    try {
      const driver = pooledBox.runtimes.get('firecracker');
      await driver.warm?.();
      for (let i = 0; i < RUNS; i++) {
        pooled.push(await job(pooledBox, { command: ['true'] }));
        // Steady state: the next job finds a refilled, warmed pool.
        for (let t = 0; t < 200; t++) {
          const idle = ((await driver.status?.())?.warmPool as { idle: unknown[] }).idle.length;
          if (idle > 0) break;
          await sleep(50);
        }
        await sleep(1500); // and its balloon has settled
      }
    } finally {
      await pooledBox.close();
    }

    // QEMU alone, same guest and devices: cold boot to the agent's hello; restore to running.
    const vmm = new QemuVmm(accel);
    const guest = await ensureGuest(box.paths.vm);
    const shape = vmShape(JobSpec.parse({ command: ['true'] }).limits);
    const snapshotDir = path.join(box.paths.vm, 'snapshots');
    const snapshot = (await readdir(snapshotDir)).find(
      (n) => n.startsWith(`m${shape.memoryMiB}-c${shape.vcpus}-`) && !n.includes('.'),
    );
    const rawBoot: number[] = [];
    const rawRestore: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      for (const mode of ['boot', 'restore'] as const) {
        const dir = await mkdtemp(path.join(root, 'raw-'));
        const files = vmFiles(dir);
        await createJobDisk('qcow2', files.disk);
        const launch = { shape, files, guest };
        const t0 = performance.now();
        let pid: number;
        let ch: AgentChannel | undefined;
        if (mode === 'boot') {
          pid = await vmm.boot(launch);
          ch = await AgentChannel.connect(files.ctl);
          await ch.hello(30_000);
          rawBoot.push(performance.now() - t0);
        } else {
          pid = await vmm.restore(launch, path.join(snapshotDir, snapshot ?? ''), async () => {
            ch = await AgentChannel.connect(files.ctl);
          });
          rawRestore.push(performance.now() - t0);
        }
        ch?.close();
        process.kill(pid, 'SIGKILL');
        await sleep(50);
        await rm(dir, { recursive: true, force: true });
      }
    }

    const m = (xs: number[]) => median(xs);
    const startup = (xs: Array<{ record: { startupMs: number | null } }>) =>
      m(xs.map((x) => x.record.startupMs ?? 0));
    const boot = (xs: Array<{ vm: VmAttributes }>) => m(xs.map((x) => x.vm.bootMs));
    console.log(row(['', 'startupMs', 'VM up (ms)']));
    console.log(row(['QEMU alone: cold boot to agent hello', '-', m(rawBoot)]));
    console.log(row(['QEMU alone: restore from snapshot', '-', m(rawRestore)]));
    console.log(row(['boxcar: cold boot (--cold)', startup(cold), boot(cold)]));
    console.log(row(['boxcar: snapshot restore', startup(restored), boot(restored)]));
    console.log(row(['boxcar: warm pool (restored, warmed, ballooned)', startup(pooled), boot(pooled)]));
    console.log(
      `\nrestore vs cold: ${(startup(cold) / startup(restored)).toFixed(1)}x on startupMs, ${(boot(cold) / boot(restored)).toFixed(1)}x on VM up; ` +
        `warm pool ${startup(pooled)} ms vs the seed's 125 ms (${accel})`,
    );

    // Memory: CONCURRENT VMs running `sleep`, each VMM's RSS and PSS against what its guest uses.
    const stop = new AbortController();
    const running = Array.from({ length: CONCURRENT }, () =>
      job(box, { command: ['sleep', '60'] }, stop.signal),
    );
    let handles: TaskHandle[] = [];
    for (let t = 0; t < 600 && handles.length < CONCURRENT; t++) {
      await sleep(100);
      handles = (await box.store.listJobs({ states: ['running'], limit: 100 })).flatMap((j) =>
        j.handle ? [j.handle] : [],
      );
    }
    await sleep(2000); // guest stats refresh every second
    const figures = [];
    for (const h of handles) {
      const pid = h.attributes.hostPid as number;
      const qmp = await QmpClient.connect(path.join(box.paths.sandboxes, h.sandboxId, 'api.sock'));
      try {
        await qmp.execute('qom-set', {
          path: '/machine/peripheral/balloon0',
          property: 'guest-stats-polling-interval',
          value: 1,
        });
        await sleep(1200);
        const g = await qmp.execute<{ stats: Record<string, number> }>('qom-get', {
          path: '/machine/peripheral/balloon0',
          property: 'guest-stats',
        });
        const used = (g.stats['stat-total-memory'] ?? 0) - (g.stats['stat-available-memory'] ?? 0);
        figures.push({ rss: rss(pid), pss: pss(pid) ?? 0, used });
      } finally {
        qmp.close();
      }
    }
    stop.abort();
    await Promise.allSettled(running);
    const mib = (b: number) => b / 2 ** 20;
    console.log(`\n${figures.length} VMs running (guest ${shape.memoryMiB} MiB each):`);
    console.log(row(['', 'MiB (median)']));
    console.log(row(['VMM RSS per VM', mib(m(figures.map((f) => f.rss)))]));
    console.log(row(['VMM PSS per VM (shared pages split)', mib(m(figures.map((f) => f.pss)))]));
    console.log(row(['guest memory in use (total - available)', mib(m(figures.map((f) => f.used)))]));
    console.log(row(['VMM overhead: RSS above guest in use', mib(m(figures.map((f) => f.rss - f.used)))]));

    // Throughput: short jobs back to back, as many at once as cores.
    const n = 4 * os.availableParallelism() * 2;
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: os.availableParallelism() }, async () => {
        while (next++ < n) await job(box, { command: ['true'] });
      }),
    );
    const perMinute = (n / (performance.now() - t0)) * 60_000;
    console.log(
      `\nVMs per minute (${n} restored jobs, ${os.availableParallelism()} at a time): ${perMinute.toFixed(0)}`,
    );
  } finally {
    await box.close();
    await removeScratch(root);
  }
}

await main();
