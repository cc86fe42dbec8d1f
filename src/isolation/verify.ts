import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Boxcar } from '../boxcar.js';
import { decideLocally, operatorOrigin } from '../runner/local.js';
import { executeJob, type ExecuteResult } from '../runner/execute.js';
import { currentOwner } from '../lib/owner.js';
import { JobSpec, type RuntimeName } from '../jobs/spec.js';
import { sleep } from '../lib/exec.js';
import { errorMessage, ifExistsSync } from '../lib/errors.js';
import { leaseFor } from '../runtimes/shared/network.js';
import { ensureProbeImage } from './probe-image.js';
import type { Capabilities } from '../runtimes/runtime.js';
import { ensureWasiProbe } from './wasi-probe-module.js';
import { answerScript, createTestHost, waitForOutput } from './test-hosts.js';

export type Verdict = 'blocked' | 'ESCAPED' | 'error';

export interface ProbeResult {
  probe: string;
  runtime: RuntimeName;
  verdict: Verdict;
  detail: string;
}

type JobInput = Record<string, unknown>;

/** One shell line printing a probe's verdict. */
const verdict = (name: string, escapedIf: string) =>
  `if ${escapedIf}; then echo "${name} ESCAPED"; else echo "${name} blocked"; fi`;

/**
 * The job fields that make a job of the trust a runtime is for: trusted on a shared kernel,
 * untrusted in a sandbox.
 */
export function jobTrustFields(caps: Pick<Capabilities, 'sharedKernel'>): {
  source: string;
  user_group: string;
} {
  return caps.sharedKernel
    ? { source: 'internal_repo', user_group: 'internal_team' }
    : { source: 'external_pr', user_group: 'external_contributor' };
}

/** Runs a job on `runtime` with the trust that runtime is for (runc: trusted; sandboxes: untrusted). */
export async function runOn(
  box: Boxcar,
  runtime: RuntimeName,
  input: JobInput,
  signal?: AbortSignal,
): Promise<ExecuteResult> {
  const caps = box.runtimes.get(runtime).capabilities;
  const spec = JobSpec.parse({ timeout: '60s', ...input, ...jobTrustFields(caps), runtime });
  const id = randomUUID();
  const decision = await decideLocally(box, id, spec);
  const job = await box.store.createJob({
    id,
    tenant: 'verify-isolation',
    spec,
    decision,
    origin: operatorOrigin(),
    owner: currentOwner(),
  });
  return executeJob(box, job, { signal });
}

/** Lines `<probe> blocked|ESCAPED <detail>` printed by a probe job. */
function verdictLines(runtime: RuntimeName, r: ExecuteResult, expected: string[]): ProbeResult[] {
  const found = new Map<string, ProbeResult>();
  for (const line of r.output.split('\n')) {
    const m = /^([a-z0-9_]+) (blocked|ESCAPED)\s*(.*)$/.exec(line.trim());
    if (m)
      found.set(m[1] as string, {
        probe: m[1] as string,
        runtime,
        verdict: m[2] as Verdict,
        detail: m[3] ?? '',
      });
  }
  return expected.map(
    (p) =>
      found.get(p) ?? {
        probe: p,
        runtime,
        verdict: 'error',
        detail: `no verdict (job ${r.record.state}${r.record.error ? `: ${r.record.error}` : ''})`,
      },
  );
}

export const SYSCALL_PROBES = [
  'unshare_user', 'unshare_mount', 'unshare_net', 'setns', 'clone_newuser', 'mount_tmpfs', 'umount_mnt', 'fsopen',
  'open_tree', 'pivot_root', 'chroot', 'ptrace_attach', 'process_vm_readv', 'keyctl', 'add_key', 'bpf',
  'perf_event_open', 'userfaultfd', 'init_module', 'finit_module', 'delete_module', 'kexec_load', 'io_uring_setup',
  'mknod_block_device', 'open_by_handle_at', 'iopl', 'swapon', 'settimeofday', 'reboot',
]; // prettier-ignore

/** The seccomp filter must answer EPERM: any other refusal means the call got further than it should. */
async function syscallProbes(box: Boxcar, runtime: RuntimeName, image: string): Promise<ProbeResult[]> {
  const r = await runOn(box, runtime, { image, command: ['boxcar-probe'] });
  return verdictLines(runtime, r, SYSCALL_PROBES).map((p) =>
    p.verdict === 'blocked' && p.detail !== 'EPERM'
      ? {
          ...p,
          verdict: 'ESCAPED',
          detail: `refused with ${p.detail}, not EPERM: the call reached past the filter`,
        }
      : p,
  );
}

/** Host files, processes, devices, /proc and /sys writes, and services on the host's loopback. */
async function hostProbes(box: Boxcar, runtime: RuntimeName, image: string): Promise<ProbeResult[]> {
  const canaryName = `boxcar-canary-${randomBytes(6).toString('hex')}`;
  const canary = `/tmp/${canaryName}`;
  await writeFile(canary, 'host secret\n');
  let connections = 0;
  const server = net.createServer((s) => {
    connections++;
    s.end('host service\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const script = [
    verdict(
      'host_files',
      `cat ${canary} >/dev/null 2>&1 || find / -xdev -name ${canaryName} 2>/dev/null | grep -q . || ls /proc/*/root${canary} >/dev/null 2>&1`,
    ),
    verdict(
      'host_processes',
      `[ "$(ls -d /proc/[0-9]* | wc -l)" -gt 12 ] || grep -qsE "conmon|runsc|node|systemd|init" /proc/[0-9]*/comm`,
    ),
    verdict(
      'raw_devices',
      `ls /dev | grep -qE "^(sd|vd|nvme|xvd|hd|loop|mem|kmem|port|kvm|dm-|mapper)" || head -c1 /dev/vda >/dev/null 2>&1 || head -c1 /dev/sda >/dev/null 2>&1`,
    ),
    verdict('sysrq_trigger', `printf h 2>/dev/null > /proc/sysrq-trigger`),
    verdict(
      'proc_sys_write',
      `cat /proc/sys/kernel/core_pattern > /tmp/cp 2>/dev/null && cat /tmp/cp 2>/dev/null > /proc/sys/kernel/core_pattern`,
    ),
    verdict(
      'sys_write',
      `cat /sys/class/net/lo/mtu > /tmp/mtu 2>/dev/null && cat /tmp/mtu 2>/dev/null > /sys/class/net/lo/mtu`,
    ),
    verdict(
      'cgroup_limit_raise',
      `echo 9999999999 2>/dev/null > /sys/fs/cgroup/memory/memory.limit_in_bytes`,
    ),
    verdict(
      'host_loopback_service',
      `nc -w 2 127.0.0.1 ${port} </dev/null 2>/dev/null | grep -q "host service"`,
    ),
  ].join('\n');
  try {
    const r = await runOn(box, runtime, { image, command: ['sh', '-c', script] });
    const results = verdictLines(runtime, r, [
      'host_files',
      'host_processes',
      'raw_devices',
      'sysrq_trigger',
      'proc_sys_write',
      'sys_write',
      'cgroup_limit_raise',
      'host_loopback_service',
    ]);
    return results.map((p) =>
      p.probe === 'host_loopback_service' && connections > 0
        ? {
            ...p,
            verdict: 'ESCAPED',
            detail: `the host server on 127.0.0.1:${port} saw ${connections} connection(s)`,
          }
        : p,
    );
  } finally {
    server.close();
    await rm(canary, { force: true });
  }
}

/** The victim: a marked process, a secret file named by the mark, a port answering with the mark. */
export function victimScript(mark: string): string {
  return `: ${mark}; echo secret > /tmp/${mark}; nc -l -p 7777 -e echo ${mark} & sleep 60`;
}

export const CROSS_JOB_PROBES = ['other_job_processes', 'other_job_files', 'other_job_network'];

/**
 * The attacker's checks. Its own command line (PID 1's) must never contain the mark, or it would
 * find itself: the mark is joined from two halves by a shell builtin and used only through "$m".
 */
export function crossJobChecks(mark: string): string {
  return [
    `m=$(printf '%s%s' victim- ${mark.slice('victim-'.length)}); printf '%s' "$m" > /tmp/pattern`,
    // cmdline is NUL-separated and busybox grep stops at a NUL: translate first.
    verdict(
      'other_job_processes',
      `for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null | grep -qFf /tmp/pattern && echo hit; done | grep -q hit`,
    ),
    verdict(
      'other_job_files',
      `find / -xdev -name "$m" 2>/dev/null | grep -q . || cat /proc/*/root/tmp/"$m" >/dev/null 2>&1`,
    ),
    verdict('other_job_network', `nc -w 2 127.0.0.1 7777 </dev/null 2>/dev/null | grep -qF "$m"`),
  ].join('\n');
}

/** A victim job holds a secret file, a marked process and a listening port; a second job looks for them. */
async function crossJobProbes(box: Boxcar, runtime: RuntimeName, image: string): Promise<ProbeResult[]> {
  const mark = `victim-${randomBytes(6).toString('hex')}`;
  const stopVictim = new AbortController();
  const victim = runOn(box, runtime, { image, command: ['sh', '-c', victimScript(mark)] }, stopVictim.signal);
  try {
    for (let i = 0; i < 100; i++) {
      const running = await box.store.listJobs({ tenant: 'verify-isolation', states: ['running'], limit: 5 });
      if (running.some((j) => j.spec.command.join(' ').includes(mark))) break;
      await sleep(100);
    }
    await sleep(300); // the victim's listener is up
    const script = crossJobChecks(mark);
    const r = await runOn(box, runtime, { image, command: ['sh', '-c', script] });
    return verdictLines(runtime, r, CROSS_JOB_PROBES);
  } finally {
    stopVictim.abort();
    await victim;
  }
}

/**
 * For jobs with network: the host side of the job's own veth (a host service listening on every
 * address), an internal range (a target this verifier creates on 10.254.253.2), and another
 * network job's address. A public target (198.51.100.0/24) is the control: it must answer.
 */
async function networkProbes(box: Boxcar, runtime: RuntimeName, image: string): Promise<ProbeResult[]> {
  const suffix = randomBytes(2).toString('hex');
  const internal = await createTestHost(`vi${suffix}`, '10.254.253.1', '10.254.253.2', 30);
  const pub = await createTestHost(`vp${suffix}`, '198.51.100.129', '198.51.100.130', 25);
  let hostConnections = 0;
  const hostServer = net.createServer((s) => {
    hostConnections++;
    s.end('host service\n');
  });
  const stopVictim = new AbortController();
  let victim: Promise<ExecuteResult> | undefined;
  try {
    await waitForOutput(internal.serve(8080, answerScript('internal-ok')), /listening/);
    await waitForOutput(pub.serve(8080, answerScript('public-ok')), /listening/);
    await new Promise<void>((resolve) => hostServer.listen(0, '0.0.0.0', resolve));
    const hostPort = (hostServer.address() as net.AddressInfo).port;
    const mark = `victim-${randomBytes(6).toString('hex')}`;
    victim = runOn(
      box,
      runtime,
      { image, network: true, command: ['sh', '-c', `nc -l -p 7777 -e echo ${mark} & sleep 60`] },
      stopVictim.signal,
    );
    let victimIp: string | undefined;
    for (let i = 0; i < 100 && !victimIp; i++) {
      const running = await box.store.listJobs({ tenant: 'verify-isolation', states: ['running'], limit: 5 });
      const v = running.find((j) => j.spec.command.join(' ').includes(mark));
      const file = v?.handle ? path.join(box.paths.sandboxes, v.handle.sandboxId, 'network.json') : undefined;
      if (file && existsSync(file))
        victimIp = leaseFor((JSON.parse(readFileSync(file, 'utf8')) as { slot: number }).slot).jobIp;
      else await sleep(100);
    }
    await sleep(300);
    const script = [
      `gw=$(ip route | awk '/default/ {print $3}')`,
      `echo "control_public $(nc -w 3 ${pub.ip} 8080 </dev/null)"`,
      verdict(
        'host_veth_service',
        `nc -w 3 "$gw" ${hostPort} </dev/null 2>/dev/null | grep -q "host service"`,
      ),
      verdict('internal_network', `nc -w 3 ${internal.ip} 8080 </dev/null 2>/dev/null | grep -q internal-ok`),
      verdict(
        'other_job_ip',
        `nc -w 3 ${victimIp ?? '10.213.0.2'} 7777 </dev/null 2>/dev/null | grep -q victim-`,
      ),
    ].join('\n');
    const r = await runOn(box, runtime, { image, network: true, command: ['sh', '-c', script] });
    const results = verdictLines(runtime, r, ['host_veth_service', 'internal_network', 'other_job_ip']).map(
      (p) =>
        p.probe === 'host_veth_service' && hostConnections > 0
          ? {
              ...p,
              verdict: 'ESCAPED' as const,
              detail: `the host service saw ${hostConnections} connection(s)`,
            }
          : p,
    );
    // Without a working public path the blocked verdicts would prove nothing.
    const control = /control_public public-ok/.test(r.output);
    return results.map((p) =>
      control
        ? p
        : {
            ...p,
            verdict: 'error',
            detail: `the public control target did not answer, so this proves nothing (${r.output.trim().slice(0, 200)})`,
          },
    );
  } finally {
    stopVictim.abort();
    await victim;
    hostServer.close();
    await internal.remove();
    await pub.remove();
  }
}

/**
 * A microVM's fork bomb: its tasks live in the guest's kernel, out of the host's sight. The
 * guest's pids cgroup holds them, and the agent reports how many forks it refused.
 */
async function guestForkBomb(box: Boxcar, runtime: RuntimeName, image: string): Promise<ProbeResult> {
  const pids = 64;
  const b = await runOn(box, runtime, {
    image,
    command: ['sh', '-c', 'f() { f | f & }; f; sleep 5'],
    resources: { pids },
    timeout: '4s',
  });
  const refused = new RegExp(`process limit \\(pids ${pids}\\): (\\d+) forks refused`).exec(b.output)?.[1];
  return {
    probe: 'fork_bomb',
    runtime,
    verdict: ['timeout', 'failed', 'oom'].includes(b.record.state) && refused ? 'blocked' : 'ESCAPED',
    detail: `job ${b.record.state}, ${refused ?? 'no'} forks refused at the guest's limit of ${pids}`,
  };
}

/** Fork bomb, memory bomb and disk fill: each must end inside its limits. */
async function limitProbes(box: Boxcar, runtime: RuntimeName, image: string): Promise<ProbeResult[]> {
  const out: ProbeResult[] = [];
  // Where the job's tasks are in a host cgroup, it is watched from outside; a guest's, from inside.
  if (box.runtimes.get(runtime).capabilities.hostCgroup)
    out.push(await containerForkBomb(box, runtime, image));
  else out.push(await guestForkBomb(box, runtime, image));
  out.push(...(await memoryAndDiskProbes(box, runtime, image)));
  return out;
}

/** A container's fork bomb, watched from outside through its pids cgroup. */
async function containerForkBomb(box: Boxcar, runtime: RuntimeName, image: string): Promise<ProbeResult> {
  // Fork bomb: watch the job's cgroup from outside while it runs.
  let peakPids = 0;
  let pidsMax = Infinity;
  const watching = { on: true };
  const bomb = runOn(box, runtime, {
    image,
    command: ['sh', '-c', 'f() { f | f & }; f; sleep 5'],
    resources: { pids: 64 },
    timeout: '4s',
  });
  const watcher = (async () => {
    while (watching.on) {
      const [job] = await box.store.listJobs({ tenant: 'verify-isolation', states: ['running'], limit: 1 });
      const dir = job?.handle ? `/sys/fs/cgroup/pids/boxcar/${job.handle.sandboxId}` : undefined;
      if (dir && existsSync(dir)) {
        // Either read may find the job just ended.
        const current = ifExistsSync(() => readFileSync(`${dir}/pids.current`, 'utf8'));
        const max = ifExistsSync(() => readFileSync(`${dir}/pids.max`, 'utf8'));
        if (current !== undefined) peakPids = Math.max(peakPids, Number(current));
        if (max !== undefined) pidsMax = Number(max);
      }
      await sleep(100);
    }
  })();
  const b = await bomb;
  watching.on = false;
  await watcher;
  const bombContained = ['timeout', 'failed', 'oom'].includes(b.record.state) && peakPids <= pidsMax;
  return {
    probe: 'fork_bomb',
    runtime,
    verdict: bombContained ? 'blocked' : 'ESCAPED',
    detail: `job ${b.record.state}, peak ${peakPids} tasks of ${pidsMax}`,
  };
}

async function memoryAndDiskProbes(box: Boxcar, runtime: RuntimeName, image: string): Promise<ProbeResult[]> {
  const out: ProbeResult[] = [];

  const mem = await runOn(box, runtime, {
    image,
    command: ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=1G', 'count=1'],
    resources: { memory: '64Mi' },
  });
  // Measured in a cgroup, the peak stays at the limit; measured on a VMM, it may reach the
  // VM's size and the VMM's own, never more.
  const caps = box.runtimes.get(runtime).capabilities;
  const limits = JobSpec.parse({ command: ['dd'], resources: { memory: '64Mi' } }).limits;
  const memLimit = limits.memoryBytes + caps.memoryOverheadBytes(limits);
  const peak = mem.record.peakMemoryBytes ?? 0;
  const memContained =
    (mem.record.state === 'oom' && (caps.memoryMeasure === 'cgroup' || peak <= memLimit)) ||
    (mem.record.state === 'failed' && peak <= memLimit);
  out.push({
    probe: 'memory_bomb',
    runtime,
    verdict: memContained ? 'blocked' : 'ESCAPED',
    detail: `job ${mem.record.state}, peak ${peak} bytes of ${memLimit}${caps.memoryMeasure === 'vmm-process' ? ' (VM size and VMM)' : ''}`,
  });

  // Each writable place, the root included where the job may write over its image.
  const places = ['/tmp/fill', '/workspace/fill', ...(caps.writableRoot ? ['/fill'] : [])];
  const fill = await runOn(box, runtime, {
    image,
    command: [
      'sh',
      '-c',
      places.map((f) => `head -c 100m /dev/zero > ${f} 2>/dev/null; wc -c < ${f}`).join('; '),
    ],
    resources: { tmp: '16Mi', workspace: '16Mi', rootfs: '16Mi', memory: '256Mi' },
  });
  const written = fill.output.trim().split(/\s+/).map(Number);
  const fillContained =
    written.length === places.length && written.every((n) => Number.isFinite(n) && n <= 16 * 2 ** 20);
  out.push({
    probe: 'disk_fill',
    runtime,
    verdict: fillContained ? 'blocked' : 'ESCAPED',
    detail: `wrote ${places.map((f, i) => `${written[i]} bytes to ${path.dirname(f)}`).join(', ')}; limits 16 MiB each`,
  });
  return out;
}

/**
 * The wasm runtime's probes, as a WASI program: host files (directly, by path traversal, by
 * symlink), another job's workspace file, /proc, devices, sockets, then a disk fill and a
 * memory bomb that must stop at the job's limits; and a spinning module that must be stopped.
 */
async function wasmProbes(box: Boxcar, runtime: RuntimeName): Promise<ProbeResult[]> {
  const probe = await ensureWasiProbe(box.images);
  const otherJob = path.join(box.paths.sandboxes, randomUUID(), 'workspace');
  await mkdir(otherJob, { recursive: true });
  const secret = path.join(otherJob, 'secret.txt');
  await writeFile(secret, 'another job’s secret\n');
  try {
    const limits = { memory: '32Mi', workspace: '16Mi' };
    const r = await runOn(box, runtime, { image: probe, command: [secret], resources: limits });
    const results = verdictLines(runtime, r, [
      'host_files',
      'host_secret_file',
      'path_traversal',
      'host_processes',
      'raw_devices',
      'symlink_escape',
      'sockets',
    ]).map((p) => (p.probe === 'host_secret_file' ? { ...p, probe: 'other_job_files' } : p));
    const wrote = Number(/^disk_fill wrote (\d+)/m.exec(r.output)?.[1] ?? NaN);
    results.push({
      probe: 'disk_fill',
      runtime,
      verdict: wrote <= 16 * 2 ** 20 ? 'blocked' : 'ESCAPED',
      detail: `wrote ${wrote} bytes to /workspace, limit 16 MiB`,
    });
    const mib = Number(/^memory_bomb allocated (\d+)/m.exec(r.output)?.[1] ?? NaN);
    results.push({
      probe: 'memory_bomb',
      runtime,
      verdict: mib <= 32 ? 'blocked' : 'ESCAPED',
      detail: `allocated ${mib} MiB, limit 32 MiB`,
    });
    const spin = await runOn(box, runtime, { image: probe, command: ['spin'], timeout: '1s' });
    results.push({
      probe: 'cpu_bomb',
      runtime,
      verdict: spin.record.timedOut ? 'blocked' : 'ESCAPED',
      detail: `job ${spin.record.state} after ${spin.record.durationMs} ms, timeout 1 s`,
    });
    return results;
  } finally {
    await rm(path.dirname(otherJob), { recursive: true, force: true });
  }
}

/**
 * Attack probes run inside real jobs, per runtime: every one must come back blocked. Section
 * 8.1 of the seed: no escape to the host, no access to other jobs' resources, no access to the
 * internal network, the syscall filter stops malicious calls. Probes only ever aim at the job
 * itself, at files and servers this verifier creates on loopback, or at a victim job it starts.
 */
export async function verifyIsolation(
  box: Boxcar,
  runtimes: RuntimeName[],
  onResult?: (r: ProbeResult) => void,
): Promise<ProbeResult[]> {
  const runsModule = (r: RuntimeName) => box.runtimes.get(r).capabilities.workload === 'wasm-module';
  const image = runtimes.some((r) => !runsModule(r)) ? await ensureProbeImage(box.images) : '';
  const all: ProbeResult[] = [];
  for (const runtime of runtimes) {
    const groups = runsModule(runtime)
      ? [() => wasmProbes(box, runtime)]
      : [syscallProbes, hostProbes, crossJobProbes, networkProbes, limitProbes];
    for (const group of groups) {
      let results: ProbeResult[];
      try {
        results = await group(box, runtime, image);
      } catch (err) {
        results = [{ probe: group.name, runtime, verdict: 'error', detail: errorMessage(err) }];
      }
      for (const r of results) onResult?.(r);
      all.push(...results);
    }
  }
  return all;
}
