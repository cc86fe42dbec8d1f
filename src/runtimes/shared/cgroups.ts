/**
 * Reads a sandbox's cgroup on either hierarchy: v1 (this project's hosts: a hybrid with one
 * directory per controller) or the unified v2. `cgroupsPath` is the OCI `linux.cgroupsPath`.
 */

import { existsSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ifExists, errnoCode } from '../../lib/errors.js';
import { sleep } from '../../lib/exec.js';

const ROOT = '/sys/fs/cgroup';
const V1_CONTROLLERS = [
  'memory',
  'cpu',
  'cpuacct',
  'cpuset',
  'pids',
  'devices',
  'freezer',
  'blkio',
  'net_cls',
  'net_prio',
  'perf_event',
  'hugetlb',
  'rdma',
  'misc',
  'systemd',
  // A hybrid host's v2 hierarchy, where runc makes the cgroup too (and, when its container was
  // killed with its node, does not always remove it).
  'unified',
];

export type CgroupMode = 'v1' | 'v2';

export function cgroupMode(): CgroupMode {
  return existsSync(path.join(ROOT, 'cgroup.controllers')) ? 'v2' : 'v1';
}

/** v1 only: whether `memory.memsw.*` exists, i.e. swap can be limited together with memory. */
export function swapAccounting(): boolean {
  return cgroupMode() === 'v2' || existsSync(path.join(ROOT, 'memory', 'memory.memsw.limit_in_bytes'));
}

export interface CgroupStats {
  memoryBytes: number;
  peakMemoryBytes: number;
  cpuUsageNs: number;
  pids: number;
  oomKills: number;
}

async function readNumber(file: string): Promise<number | undefined> {
  const text = await ifExists(readFile(file, 'utf8'));
  return text === undefined ? undefined : Number(text.trim());
}

async function readKeyed(file: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const line of ((await ifExists(readFile(file, 'utf8'))) ?? '').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined) out.set(k, Number(v));
  }
  return out;
}

/** Stats of a cgroup; zeros when it is already gone. */
export async function readCgroupStats(cgroupsPath: string): Promise<CgroupStats> {
  if (cgroupMode() === 'v2') {
    const dir = path.join(ROOT, cgroupsPath);
    const cpu = await readKeyed(path.join(dir, 'cpu.stat'));
    const events = await readKeyed(path.join(dir, 'memory.events'));
    const current = (await readNumber(path.join(dir, 'memory.current'))) ?? 0;
    return {
      memoryBytes: current,
      peakMemoryBytes: (await readNumber(path.join(dir, 'memory.peak'))) ?? current,
      cpuUsageNs: (cpu.get('usage_usec') ?? 0) * 1000,
      pids: (await readNumber(path.join(dir, 'pids.current'))) ?? 0,
      oomKills: events.get('oom_kill') ?? 0,
    };
  }
  const mem = path.join(ROOT, 'memory', cgroupsPath);
  const oom = await readKeyed(path.join(mem, 'memory.oom_control'));
  return {
    memoryBytes: (await readNumber(path.join(mem, 'memory.usage_in_bytes'))) ?? 0,
    peakMemoryBytes: (await readNumber(path.join(mem, 'memory.max_usage_in_bytes'))) ?? 0,
    cpuUsageNs: (await readNumber(path.join(ROOT, 'cpuacct', cgroupsPath, 'cpuacct.usage'))) ?? 0,
    pids: (await readNumber(path.join(ROOT, 'pids', cgroupsPath, 'pids.current'))) ?? 0,
    oomKills: oom.get('oom_kill') ?? 0,
  };
}

/** Every directory the cgroup occupies (one per v1 controller), existing or not. */
export function cgroupDirs(cgroupsPath: string): string[] {
  if (cgroupMode() === 'v2') return [path.join(ROOT, cgroupsPath)];
  return V1_CONTROLLERS.map((c) => path.join(ROOT, c, cgroupsPath));
}

/** Removes what the runtime left of a cgroup (it should have removed it; this is the safety net). */
export async function removeCgroup(cgroupsPath: string): Promise<string[]> {
  const left: string[] = [];
  for (const dir of cgroupDirs(cgroupsPath)) {
    try {
      await rmdir(dir);
    } catch (err) {
      const code = errnoCode(err);
      if (code !== 'ENOENT') left.push(`${dir}: ${code}`);
    }
  }
  return left;
}

export function existingCgroupDirs(cgroupsPath: string): string[] {
  return cgroupDirs(cgroupsPath).filter((d) => existsSync(d));
}

/**
 * Gives a container made ahead (a warm pool's) its job's limits, as runc would have set them at
 * creation, and zeroes its peak and CPU figures, so they count from the job's start.
 */
export async function setContainerLimits(
  cgroupsPath: string,
  limits: { memoryBytes: number; pids: number; cpuQuotaUs: number; cpuPeriodUs: number; cpuShares: number },
): Promise<void> {
  const set = (dir: string, file: string, value: number | string) =>
    writeFile(path.join(dir, file), String(value));
  if (cgroupMode() === 'v2') {
    const dir = path.join(ROOT, cgroupsPath);
    await set(dir, 'memory.max', limits.memoryBytes);
    await set(dir, 'memory.swap.max', 0);
    await set(dir, 'pids.max', limits.pids);
    await set(dir, 'cpu.max', `${limits.cpuQuotaUs} ${limits.cpuPeriodUs}`);
    // runc's conversion of shares to a weight.
    await set(dir, 'cpu.weight', 1 + Math.floor(((limits.cpuShares - 2) * 9999) / 262142));
    // memory.peak takes a reset only from Linux 6.12; older kernels count from the pool's start.
    await set(dir, 'memory.peak', 'reset').catch((err: unknown) => {
      if (!['EINVAL', 'EACCES', 'EPERM'].includes(errnoCode(err) ?? '')) throw err;
    });
    return;
  }
  await setMemoryLimitV1(path.join(ROOT, 'memory', cgroupsPath), limits.memoryBytes);
  await set(path.join(ROOT, 'memory', cgroupsPath), 'memory.max_usage_in_bytes', 0);
  await set(path.join(ROOT, 'pids', cgroupsPath), 'pids.max', limits.pids);
  const cpu = path.join(ROOT, 'cpu', cgroupsPath);
  await set(cpu, 'cpu.cfs_period_us', limits.cpuPeriodUs);
  await set(cpu, 'cpu.cfs_quota_us', limits.cpuQuotaUs);
  await set(cpu, 'cpu.shares', limits.cpuShares);
  await set(path.join(ROOT, 'cpuacct', cgroupsPath), 'cpuacct.usage', 0);
}

/** memsw is memory plus swap, and may never be below memory: lower it last, raise it first. */
async function setMemoryLimitV1(dir: string, bytes: number): Promise<void> {
  const memsw = swapAccounting();
  const current = Number((await readFile(path.join(dir, 'memory.limit_in_bytes'), 'utf8')).trim());
  if (memsw && bytes > current) await writeFile(path.join(dir, 'memory.memsw.limit_in_bytes'), String(bytes));
  await writeFile(path.join(dir, 'memory.limit_in_bytes'), String(bytes));
  if (memsw) await writeFile(path.join(dir, 'memory.memsw.limit_in_bytes'), String(bytes));
}

export interface CgroupLimits {
  memoryBytes: number;
  pids: number;
}

/**
 * A cgroup with a memory limit (no swap beyond it where swap is accounted) and a pids limit, for
 * a process Boxcar starts itself rather than through an OCI runtime (a VMM). Created, or reused
 * with fresh limits when a previous holder left it. Returns the `cgroup.procs` files the process
 * writes its pid to before it execs (one per controller on v1), so all its memory is counted.
 */
export async function createLimitedCgroup(cgroupsPath: string, limits: CgroupLimits): Promise<string[]> {
  const set = (dir: string, file: string, value: number | string) =>
    writeFile(path.join(dir, file), String(value));
  if (cgroupMode() === 'v2') {
    const dir = path.join(ROOT, cgroupsPath);
    // Controllers are handed down level by level in v2.
    let parent = ROOT;
    for (const part of path.dirname(cgroupsPath).split('/').filter(Boolean)) {
      await set(parent, 'cgroup.subtree_control', '+memory +pids');
      parent = path.join(parent, part);
      await mkdir(parent, { recursive: true });
    }
    await set(parent, 'cgroup.subtree_control', '+memory +pids');
    await mkdir(dir, { recursive: true });
    await set(dir, 'memory.max', limits.memoryBytes);
    await set(dir, 'memory.swap.max', 0);
    await set(dir, 'pids.max', limits.pids);
    return [path.join(dir, 'cgroup.procs')];
  }
  const memory = path.join(ROOT, 'memory', cgroupsPath);
  const pids = path.join(ROOT, 'pids', cgroupsPath);
  const cpuacct = path.join(ROOT, 'cpuacct', cgroupsPath);
  for (const dir of [memory, pids, cpuacct]) await mkdir(dir, { recursive: true });
  await setMemoryLimitV1(memory, limits.memoryBytes);
  await set(pids, 'pids.max', limits.pids);
  return [memory, pids, cpuacct].map((d) => path.join(d, 'cgroup.procs'));
}

/** Removes a cgroup whose process was just killed: an exiting process holds it for a moment. */
export async function removeCgroupOfKilled(cgroupsPath: string): Promise<void> {
  for (let i = 0; ; i++) {
    const left = await removeCgroup(cgroupsPath);
    if (!left.length) return;
    if (i >= 200 || !left.every((l) => l.endsWith('EBUSY')))
      throw new Error(`cannot remove cgroup ${cgroupsPath}: ${left.join(', ')}`);
    await sleep(10);
  }
}
