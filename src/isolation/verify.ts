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
import { run, sleep } from '../lib/exec.js';
import { errorMessage, ifExistsSync } from '../lib/errors.js';
import { FIREWALL_TABLE, ensureFirewall, readTableHash } from '../runtimes/shared/firewall.js';
import { leaseFor, recordedSlot, type NetworkLease } from '../runtimes/shared/network.js';
import { ensureProbeImage } from './probe-image.js';
import type { Capabilities } from '../runtimes/runtime.js';
import { ensureTableProbe, ensureWasiProbe } from './wasi-probe-module.js';
import { workerConfinementProblems } from '../runtimes/wasm/inspect.js';
import { processCgroup } from '../runtimes/shared/confinement.js';
import { vmmProbes } from './vmm-probes.js';
import {
  answerScript,
  createTestHost,
  datagramScript,
  sendDatagramsFrom,
  waitForOutput,
} from './test-hosts.js';

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

/** The jobs that give a warm pool the shape of a probe job before it runs (see `runOn`). */
export const PRIMING_JOB = 'verify-isolation-priming';

/**
 * Runs a job on `runtime` with the trust that runtime is for (runc: trusted; sandboxes: untrusted).
 * With a warm pool on the runtime, a job that can take a pooled sandbox (no network, no
 * workspace) gets one: a job of its shape runs first, and the pool is let fill, so the probes
 * run in sandboxes made before their job, as a busy node's jobs do.
 */
export async function runOn(
  box: Boxcar,
  runtime: RuntimeName,
  input: JobInput,
  signal?: AbortSignal,
): Promise<ExecuteResult> {
  const caps = box.runtimes.get(runtime).capabilities;
  // A runtime that is no boundary for untrusted code here (a microVM on TCG) is probed with
  // trusted jobs: the sandbox is the same, only the routing differs (the untrusted_on_tcg probe).
  const untrusted = (await box.runtimes.fingerprint(runtime)).untrustedCode?.allowed ?? true;
  const trust = jobTrustFields(untrusted ? caps : { sharedKernel: true });
  const spec = JobSpec.parse({ timeout: '60s', ...input, ...trust, runtime });
  if (!spec.network.enabled && (await poolFilling(box, runtime)) !== undefined) {
    await runJob(
      box,
      JobSpec.parse({ timeout: '60s', ...input, ...trust, runtime, name: PRIMING_JOB, command: ['true'] }),
    );
    for (let i = 0; i < 400 && ((await poolFilling(box, runtime)) ?? 0) > 0; i++) await sleep(25);
  }
  return runJob(box, spec, signal);
}

/** How many pool keys of the runtime are being filled; undefined: it keeps no warm pool. */
async function poolFilling(box: Boxcar, runtime: RuntimeName): Promise<number | undefined> {
  const pool = (await box.runtimes.status())[runtime]?.warmPool as
    { size?: number; filling?: number } | undefined;
  return pool?.size ? (pool.filling ?? 0) : undefined;
}

async function runJob(box: Boxcar, spec: JobSpec, signal?: AbortSignal): Promise<ExecuteResult> {
  const id = randomUUID();
  const decision = await decideLocally(box, id, spec);
  const job = await box.store.createJob({
    id,
    tenant: 'verify-isolation',
    spec,
    decision,
    origin: operatorOrigin(),
    owner: currentOwner(box.paths.root),
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

/** The network of the verifier's running job whose command holds `mark`, once it has one. */
async function runningJobLease(box: Boxcar, mark: string): Promise<NetworkLease | undefined> {
  for (let i = 0; i < 100; i++) {
    const running = await box.store.listJobs({ tenant: 'verify-isolation', states: ['running'], limit: 5 });
    const job = running.find((j) => j.spec.command.join(' ').includes(mark));
    // A container's network is recorded beside its bundle, a microVM's in its directory.
    let slot: number | undefined;
    for (const dir of [box.paths.containers, box.paths.sandboxes])
      if (job?.handle && slot === undefined)
        slot = await recordedSlot(path.join(dir, job.handle.sandboxId, 'network.json'));
    if (slot !== undefined) return leaseFor(slot);
    await sleep(100);
  }
  return undefined;
}

/**
 * For jobs with network: the host side of the job's own veth (a host service listening on every
 * address), an internal range (a target this verifier creates on 10.254.253.2), the link-local
 * range of cloud metadata services (169.254.169.254 itself, and a target of the verifier's on
 * 169.254.253.2 so that a missing rule shows even where no metadata service answers), and
 * another network job's address. A public target (198.51.100.0/24) is the control: it must answer.
 */
async function networkProbes(box: Boxcar, runtime: RuntimeName, image: string): Promise<ProbeResult[]> {
  const suffix = randomBytes(2).toString('hex');
  const internal = await createTestHost(`vi${suffix}`, '10.254.253.1', '10.254.253.2', 30);
  const pub = await createTestHost(`vp${suffix}`, '198.51.100.129', '198.51.100.130', 25);
  const linkLocal = await createTestHost(`vl${suffix}`, '169.254.253.1', '169.254.253.2', 30);
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
    await waitForOutput(linkLocal.serve(80, answerScript('metadata-ok')), /listening/);
    await new Promise<void>((resolve) => hostServer.listen(0, '0.0.0.0', resolve));
    const hostPort = (hostServer.address() as net.AddressInfo).port;
    const mark = `victim-${randomBytes(6).toString('hex')}`;
    victim = runOn(
      box,
      runtime,
      { image, network: true, command: ['sh', '-c', `nc -l -p 7777 -e echo ${mark} & sleep 60`] },
      stopVictim.signal,
    );
    const victimIp = (await runningJobLease(box, mark))?.jobIp;
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
        'metadata_address',
        `nc -w 3 169.254.169.254 80 </dev/null 2>/dev/null | grep -q . || nc -w 3 ${linkLocal.ip} 80 </dev/null 2>/dev/null | grep -q metadata-ok`,
      ),
      verdict(
        'other_job_ip',
        `nc -w 3 ${victimIp ?? '10.213.0.2'} 7777 </dev/null 2>/dev/null | grep -q victim-`,
      ),
    ].join('\n');
    const r = await runOn(box, runtime, { image, network: true, command: ['sh', '-c', script] });
    const expected = ['host_veth_service', 'internal_network', 'metadata_address', 'other_job_ip'];
    const results = verdictLines(runtime, r, expected).map((p) =>
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
    await linkLocal.remove();
  }
}

/**
 * The node's firewall changed behind its back: a rule letting jobs reach an internal target
 * (the verifier's own, 10.254.252.2) is slipped into Boxcar's table. The next network job must
 * be refused, or start only once the table is back as installed; either way it reaches nothing.
 * (Deleting the whole table, as the tests do, would leave the node's running jobs unguarded
 * until that job starts; this change opens only the verifier's own target.)
 */
async function firewallProbe(box: Boxcar, runtime: RuntimeName, image: string): Promise<ProbeResult[]> {
  const internal = await createTestHost(
    `vf${randomBytes(2).toString('hex')}`,
    '10.254.252.1',
    '10.254.252.2',
    30,
  );
  const result = (verdict: Verdict, detail: string): ProbeResult[] => [
    { probe: 'firewall_tampered', runtime, verdict, detail },
  ];
  try {
    await waitForOutput(internal.serve(8080, answerScript('internal-ok')), /listening/);
    await ensureFirewall(box.logger);
    const installed = await readTableHash();
    await run('nft', ['insert', 'rule', ...FIREWALL_TABLE, 'forward', 'ip', 'daddr', internal.ip, 'accept']);
    const r = await runOn(box, runtime, {
      image,
      network: true,
      command: ['sh', '-c', `echo "reached=$(nc -w 3 ${internal.ip} 8080 </dev/null 2>/dev/null)"`],
    });
    const restored = (await readTableHash()) === installed;
    if (/reached=internal-ok/.test(r.output))
      return result('ESCAPED', 'the job reached the target the changed table let through');
    if (!restored) return result('ESCAPED', 'the changed table was still in place after the job started');
    if (r.record.state !== 'succeeded')
      return result('blocked', `the job was refused (${r.record.state}: ${r.record.error ?? ''})`);
    return result('blocked', 'the change was found and the table reinstalled before the job started');
  } finally {
    await ensureFirewall(box.logger); // never leave the change behind, whatever happened above
    await internal.remove();
  }
}

/**
 * Forged source addresses, from the job's own position: the job tries to take another address
 * itself (it needs CAP_NET_ADMIN in its stack: a container's, gVisor's netstack or a microVM
 * guest's kernel), then the verifier sends a datagram from that address out of the job's
 * namespace, onto its veth, as a job that could would. The target logs each datagram's source;
 * the forged address is outside the job subnet, so no NAT hides it: whatever arrives from it got
 * through. (Another job's address is dropped by the same rules; the tests cover that one.) The
 * job's own address is the control.
 */
async function spoofingProbe(box: Boxcar, runtime: RuntimeName, image: string): Promise<ProbeResult[]> {
  const pub = await createTestHost(
    `vs${randomBytes(2).toString('hex')}`,
    '198.51.100.65',
    '198.51.100.66',
    26,
  );
  const mark = `spoof-${randomBytes(6).toString('hex')}`;
  const forged = '203.0.113.77';
  const result = (verdict: Verdict, detail: string): ProbeResult[] => [
    { probe: 'spoofed_source', runtime, verdict, detail },
  ];
  try {
    const server = pub.serve(53, datagramScript);
    let seen = '';
    server.stdout?.on('data', (d: Buffer) => (seen += d.toString()));
    await waitForOutput(server, /listening/);
    const script = [
      `dev=$(ip -o -4 addr | awk '$2 != "lo" {print $2; exit}'); gw=$(ip route | awk '/default/ {print $3}')`,
      `nslookup own-${mark} ${pub.ip} >/dev/null 2>&1 & sleep 1`,
      `if ip addr add ${forged}/32 dev $dev 2>/dev/null && ip route replace default via $gw dev $dev src ${forged} 2>/dev/null; then`,
      `  echo spoof_by_job; nslookup forged-job-${mark} ${pub.ip} >/dev/null 2>&1 &`,
      'fi',
      'sleep 4',
    ].join('\n');
    const job = runOn(box, runtime, { image, network: true, command: ['sh', '-c', script] });
    let injected: string | undefined;
    try {
      const lease = await runningJobLease(box, mark);
      for (let i = 0; i < 50 && !seen.includes(`own-${mark}`); i++) await sleep(100);
      if (!lease) injected = 'the job had no network namespace to send from';
      else if ((await sendFromJobNamespace(lease, forged, pub.ip, `forged-ns-${mark}`)) === 0)
        injected = `the datagram from ${forged} never reached the host's veth`;
    } catch (err) {
      injected = `could not send from the job's namespace: ${errorMessage(err)}`;
    }
    const r = await job;
    await sleep(500);
    const byJob = /spoof_by_job/.test(r.output)
      ? 'the job took the address itself'
      : 'the job could not take another address';
    if (seen.split('\n').some((l) => l.includes(`forged-`) && l.endsWith(` from ${forged}`)))
      return result('ESCAPED', `a datagram from the forged source ${forged} reached ${pub.ip} (${byJob})`);
    if (!seen.includes(`own-${mark}`))
      return result(
        'error',
        `the control from the job's own address never arrived (${r.output.trim().slice(0, 200)})`,
      );
    if (injected) return result('error', `${byJob}; ${injected}`);
    return result(
      'blocked',
      `${byJob}; a datagram from ${forged} sent out of its namespace reached the host's veth and was dropped`,
    );
  } finally {
    await pub.remove();
  }
}

/**
 * One datagram from `forged`, out of the job's namespace onto its veth (or the bridge a VM's
 * veth is a port of); a host route to `target` only, so the job's own traffic is untouched.
 */
async function sendFromJobNamespace(
  lease: NetworkLease,
  forged: string,
  target: string,
  label: string,
): Promise<number> {
  const inNs = (...args: string[]) => run('ip', ['-n', lease.netns, ...args]);
  const { stdout } = await inNs('-j', 'link', 'show', lease.jobIf);
  const dev = (JSON.parse(stdout) as { master?: string }[])[0]?.master ?? lease.jobIf;
  await inNs('addr', 'add', `${forged}/32`, 'dev', dev);
  await inNs('route', 'add', `${target}/32`, 'via', lease.hostIp, 'dev', dev, 'onlink', 'src', forged);
  // A table of the verifier's own (Boxcar's is left as it is) counts what reaches the host's
  // veth before Boxcar's rules see it: a datagram that never left would prove nothing.
  const table = ['inet', `boxcar_verify_${lease.slot}`];
  const counter = `iifname "${lease.hostIf}" ip saddr ${forged} counter`;
  await run('nft', ['-f', '-'], {
    input: `table ${table.join(' ')} {\n chain seen { type filter hook prerouting priority -400; ${counter}; }\n}\n`,
  });
  try {
    await sendDatagramsFrom(lease.netns, target, 53, [`${label}=${forged}`]);
    let seen = 0;
    // It may wait for ARP to resolve the gateway first.
    for (let i = 0; i < 20 && seen === 0; i++) {
      const { stdout } = await run('nft', ['list', 'table', ...table]);
      seen = Number(/counter packets (\d+)/.exec(stdout)?.[1] ?? 0);
      if (seen === 0) await sleep(100);
    }
    return seen;
  } finally {
    await run('nft', ['delete', 'table', ...table]);
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
 * symlink, through a symlink to ".."), another job's workspace file, /proc, devices, sockets,
 * then a disk fill and a memory bomb that must stop at the job's limits; a table that must
 * stop growing at the job's limit; and a spinning module that must be stopped, whose process,
 * seen from the host meanwhile, must be a confined worker and not boxcar itself.
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
      'symlink_dotdot',
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
    const table = await runOn(box, runtime, {
      image: await ensureTableProbe(box.images),
      resources: { memory: '16Mi' },
    });
    const batches = table.record.exitCode ?? NaN;
    results.push({
      probe: 'table_growth',
      runtime,
      verdict: batches <= 64 ? 'blocked' : 'ESCAPED',
      detail: `a table of no maximum grew to ${batches >= 255 ? '255 or more' : batches} × 1024 elements; limit 64 × 1024 (16 MiB)`,
    });
    // While the module spins: the process running it, seen from the host.
    const spinning = runOn(box, runtime, { image: probe, command: ['spin'], timeout: '1s' });
    results.push(await wasmWorkerProbe(box, runtime));
    const spin = await spinning;
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

/** The process running a wasm job (the one running now) must be a confined worker, not boxcar. */
async function wasmWorkerProbe(box: Boxcar, runtime: RuntimeName): Promise<ProbeResult> {
  const driver = box.runtimes.get(runtime);
  for (let i = 0; i < 50; i++) {
    const status = (await driver.status?.()) as { running?: Array<{ pid: number }> } | undefined;
    const pid = status?.running?.[0]?.pid;
    if (pid !== undefined) {
      let problems: string[];
      try {
        problems = workerConfinementProblems(pid);
      } catch (err) {
        return {
          probe: 'worker_process',
          runtime,
          verdict: 'error',
          detail: `worker ${pid}: ${errorMessage(err)}`,
        };
      }
      return {
        probe: 'worker_process',
        runtime,
        verdict: problems.length ? 'ESCAPED' : 'blocked',
        detail: problems.length
          ? `worker ${pid} ${problems.join('; ')}`
          : `pid ${pid} (boxcar ${process.pid}): not root, no capabilities, seccomp, cgroup ${processCgroup(pid)}, own mount/network/IPC/UTS namespaces`,
      };
    }
    await sleep(20);
  }
  return {
    probe: 'worker_process',
    runtime,
    verdict: 'error',
    detail: 'no worker process was seen running the job',
  };
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
    // A runtime whose jobs' memory is their VMM's has a VMM to probe from the host side.
    const vmm = box.runtimes.get(runtime).capabilities.memoryMeasure === 'vmm-process';
    const vmmGroup = (b: Boxcar, r: RuntimeName, i: string) =>
      vmmProbes(b, r, (input) => runOn(b, r, { image: i, ...input }));
    const groups = runsModule(runtime)
      ? [() => wasmProbes(box, runtime)]
      : [
          syscallProbes,
          hostProbes,
          crossJobProbes,
          networkProbes,
          firewallProbe,
          spoofingProbe,
          limitProbes,
          ...(vmm ? [vmmGroup] : []),
        ];
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
