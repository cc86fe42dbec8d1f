/**
 * Everything Boxcar reads of processes, memory and mounts from /proc, in one place: whether a
 * process lives, when it started, its footprint, the host's and a process's memory in bytes,
 * and what is mounted where.
 */

import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { errnoCode } from './errors.js';

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** `/proc/PID/stat`'s fields after the command name (which may hold spaces), or undefined if gone. */
function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

function readIfAlive(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw err;
  }
}

/** `readIfAlive` without blocking the event loop. */
async function readIfAliveAsync(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw err;
  }
}

/**
 * Whether a process is alive. A zombie counts as dead: monitors we start are reparented to
 * init, which may be slow to reap them.
 */
export function processAlive(pid: number): boolean {
  const stat = readIfAlive(`/proc/${pid}/stat`);
  return stat !== undefined && statFields(stat)[0] !== 'Z';
}

/** A process's parent; undefined once it is gone. */
export function parentPid(pid: number): number | undefined {
  const stat = readIfAlive(`/proc/${pid}/stat`);
  return stat === undefined ? undefined : Number(statFields(stat)[1]);
}

/** The start time of a process in clock ticks since boot: tells a pid from a reused one. */
export function processStartTicks(pid: number): number | undefined {
  const stat = readIfAlive(`/proc/${pid}/stat`);
  return stat === undefined ? undefined : Number(statFields(stat)[19]);
}

export interface Footprint {
  rssBytes: number;
  peakRssBytes: number;
  cpuNs: number;
}

/** A process's resident memory now and at its peak, and the CPU it used; undefined once it is gone. */
export async function processFootprint(pid: number): Promise<Footprint | undefined> {
  // A process that is exiting answers ESRCH rather than ENOENT: gone either way.
  const status = await readIfAliveAsync(`/proc/${pid}/status`);
  const stat = await readIfAliveAsync(`/proc/${pid}/stat`);
  if (status === undefined || stat === undefined) return undefined;
  const fields = statFields(stat);
  const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime
  return {
    rssBytes: kBField(status, 'VmRSS'),
    peakRssBytes: kBField(status, 'VmHWM'),
    cpuNs: (ticks * 1e9) / CLOCK_TICKS,
  };
}

/** The CPU this process's children used, those that have ended and been waited for. */
export function endedChildrenCpuNs(): number {
  const fields = statFields(readFileSync('/proc/self/stat', 'utf8'));
  return ((Number(fields[13]) + Number(fields[14])) * 1e9) / CLOCK_TICKS; // cutime + cstime
}

const kBField = (text: string, field: string): number =>
  Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;

/**
 * CPU time every process and the kernel have used since boot, split into user and system
 * (/proc/stat's first line): a run's difference is what it cost the host, all processes in.
 */
export function hostCpuNs(): { userNs: number; systemNs: number } {
  const [, user, nice, system, , , irq, softirq] = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '')
    .trim()
    .split(/\s+/)
    .map(Number);
  const ns = (ticks: number) => (ticks * 1e9) / CLOCK_TICKS;
  return { userNs: ns((user ?? 0) + (nice ?? 0)), systemNs: ns((system ?? 0) + (irq ?? 0) + (softirq ?? 0)) };
}

/** What the host could still give: the drop across a run is everything the run holds. */
export const memAvailable = () => kBField(readFileSync('/proc/meminfo', 'utf8'), 'MemAvailable');
export const rss = (pid: number) => kBField(readFileSync(`/proc/${pid}/status`, 'utf8'), 'VmRSS');
/** A process's proportional share of the memory it maps; undefined once it is gone. */
export function pss(pid: number): number | undefined {
  const text = readIfAlive(`/proc/${pid}/smaps_rollup`);
  return text === undefined ? undefined : kBField(text, 'Pss');
}

export interface MountEntry {
  source: string;
  target: string;
  type: string;
}

/** `\040` and the like: how /proc/self/mounts writes a space, tab, newline or backslash in a path. */
const unescapeMountField = (field: string) =>
  field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));

/** This process's umask (from /proc: asking process.umask() means setting it, for a moment). */
export function processUmask(): number {
  const m = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? parseInt(m[1] as string, 8) : 0o022;
}

/** The mounts this process sees, in the order they were made. */
export function mountTable(): MountEntry[] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [source = '', target = '', type = ''] = line.split(' ').map(unescapeMountField);
      return { source, target, type };
    });
}

/** The uid a process runs as (its real uid); undefined when it is gone. */
export function processUid(pid: number): number | undefined {
  try {
    return Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ESRCH') return undefined;
    throw err;
  }
}
