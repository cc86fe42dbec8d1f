import { readFileSync } from 'node:fs';

/** Memory figures from /proc, in bytes. */
const kB = (file: string, field: string): number =>
  Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(file, 'utf8'))?.[1]) * 1024;

/** What the host could still give: the drop across a run is everything the run holds. */
export const memAvailable = () => kB('/proc/meminfo', 'MemAvailable');
export const rss = (pid: number) => kB(`/proc/${pid}/status`, 'VmRSS');
export const pss = (pid: number) => kB(`/proc/${pid}/smaps_rollup`, 'Pss');
