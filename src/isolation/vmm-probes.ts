import { randomUUID } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Boxcar } from '../boxcar.js';
import type { TaskHandle } from '../jobs/handle.js';
import type { RuntimeName } from '../jobs/spec.js';
import { sleep } from '../lib/exec.js';
import type { ExecuteResult } from '../runner/execute.js';
import { oversizedFrameRefused } from '../runtimes/microvm/hostile-guest.js';
import { QmpClient } from '../runtimes/microvm/qemu/qmp.js';
import { VMM_UID_BASE } from '../runtimes/microvm/vmm-jail.js';
import { confinementProblems, processCgroup } from '../runtimes/shared/confinement.js';
import { processUid } from '../lib/proc.js';
import type { ProbeResult } from './verify.js';

type RunJob = (input: Record<string, unknown>) => Promise<ExecuteResult>;

/** The handle of the verifier's job once it runs. */
async function runningHandle(box: Boxcar): Promise<TaskHandle> {
  for (let i = 0; i < 600; i++) {
    const [job] = await box.store.listJobs({ tenant: 'verify-isolation', states: ['running'], limit: 1 });
    if (job?.handle) return job.handle;
    await sleep(50);
  }
  throw new Error('the probe job did not start within 30 s');
}

/**
 * The host side of a microVM, from outside, as a guest that broke out of its kernel into the
 * VMM would find it: the VMM's uid, capabilities and cgroup, its environment, the files it
 * sees, the disk it may grow, and the channel it may flood. Plus whether this host counts the
 * VM as a boundary at all (TCG is none).
 */
export async function vmmProbes(box: Boxcar, runtime: RuntimeName, runJob: RunJob): Promise<ProbeResult[]> {
  const out: ProbeResult[] = [];
  const push = (probe: string, ok: boolean, detail: string) =>
    out.push({ probe, runtime, verdict: ok ? 'blocked' : 'ESCAPED', detail });

  const fp = await box.runtimes.fingerprint(runtime);
  const tcg = fp.untrustedCode;
  out.push({
    probe: 'untrusted_on_tcg',
    runtime,
    verdict: 'blocked',
    detail: tcg
      ? `${tcg.allowed ? 'allowed by the operator' : 'refused'}: ${tcg.why}`
      : `a boundary here: ${fp.reason}`,
  });

  const canary = `BOXCAR_VERIFY_${randomUUID().slice(0, 8).toUpperCase()}`;
  process.env[canary] = 'must not reach the VMM';
  try {
    const job = runJob({ command: ['sleep', '3'] });
    const handle = await runningHandle(box);
    const pid = handle.attributes.hostPid as number;
    const uid = processUid(pid) ?? 0;
    // Its own uid from the VMM range, no capabilities, no_new_privs, seccomp (QEMU's), its own
    // cgroup and mount namespace.
    const problems = confinementProblems(pid, { cgroupPrefix: `/boxcar/vmm-${uid}`, namespaces: ['mnt'] });
    if (uid < VMM_UID_BASE) problems.push(`uid ${uid} is not a VMM uid`);
    push(
      'vmm_privileges',
      problems.length === 0,
      problems.join('; ') || `uid ${uid}, no capabilities, no_new_privs, seccomp`,
    );
    const memory = processCgroup(pid) ?? '?';
    const pidsMax = readFileSync(`/sys/fs/cgroup/pids${memory}/pids.max`, 'utf8').trim();
    const limit = Number(readFileSync(`/sys/fs/cgroup/memory${memory}/memory.limit_in_bytes`, 'utf8'));
    push(
      'vmm_cgroup',
      memory === `/boxcar/vmm-${uid}` && Number(pidsMax) <= 64 && limit < 2 ** 40,
      `cgroup ${memory}, memory limit ${limit} bytes, pids.max ${pidsMax}`,
    );
    const leaked = readFileSync(`/proc/${pid}/environ`, 'utf8')
      .split('\0')
      .filter((e) => e.startsWith('BOXCAR_'));
    push(
      'vmm_environment',
      leaked.length === 0,
      leaked.length ? `sees ${leaked.join(', ')}` : 'no BOXCAR_ variable',
    );
    const own = path.join(box.paths.sandboxes, handle.sandboxId);
    const mounts = readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ')[4] as string);
    const foreign = mounts.filter(
      (m) =>
        !['/', '/usr', '/proc'].includes(m) &&
        !m.startsWith('/dev/') &&
        !m.startsWith(own) &&
        m !== handle.logPath &&
        !m.startsWith(box.paths.vm),
    );
    const root = readlinkSync(`/proc/${pid}/root`);
    push(
      'vmm_files',
      foreign.length === 0 && root !== '/',
      foreign.length
        ? `sees ${foreign.join(', ')}`
        : `chrooted in ${root}: ${mounts.length} mounts, its own files only`,
    );
    await job;
  } finally {
    delete process.env[canary];
  }

  // Only a guest writing its block device directly grows the disk: QEMU's block layer does
  // the same from the host side here.
  const disk = runJob({ command: ['sleep', '30'], resources: { rootfs: '8Mi' } });
  const handle = await runningHandle(box);
  if (handle.attributes.vm?.vmm === 'qemu') {
    const qmp = await QmpClient.connect(path.join(box.paths.sandboxes, handle.sandboxId, 'api.sock'));
    try {
      await qmp
        .execute('human-monitor-command', { 'command-line': 'qemu-io root "write 0 256M"' })
        .catch(() => undefined); // the VM is stopped under it
    } finally {
      qmp.close();
    }
  }
  const d = await disk;
  if (handle.attributes.vm?.vmm !== 'qemu')
    out.push({
      probe: 'vmm_disk_limit',
      runtime,
      verdict: 'error',
      detail: `no host-side writer to its disk under ${handle.attributes.vm?.vmm}`,
    });
  else
    push(
      'vmm_disk_limit',
      d.record.exitCode === 128 + 25 && /wrote its disk up to the job's limit/.test(d.output),
      `job ${d.record.state} (exit ${d.record.exitCode}): ${d.output.trim().split('\n').at(-1) ?? ''}`,
    );

  const dir = await mkdtemp(path.join(os.tmpdir(), 'bx-frame-'));
  try {
    const frame = await oversizedFrameRefused(dir);
    push('vmm_frame_cap', frame.refused, frame.detail);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return out;
}
