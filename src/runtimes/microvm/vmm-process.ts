import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { sleep } from '../../lib/exec.js';
import { processAlive } from '../../lib/proc.js';
import type { VmFiles } from './vmm.js';
import { ifExistsSync, errnoCode } from '../../lib/errors.js';

/** The VMM process of a VM, seen from the host: where its pid is, ending it, what it leaves. */

/** The pid a VMM wrote to its pid file, if it got that far. */
export function pidFromFile(file: string): number | undefined {
  return Number(ifExistsSync(() => readFileSync(file, 'utf8'))?.trim()) || undefined;
}

/** Kills a VMM and waits (2 s at most) until it is gone. */
export async function killVmm(pid: number): Promise<void> {
  if (!processAlive(pid)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch (err) {
    if (errnoCode(err) !== 'ESRCH') throw err;
  }
  for (let i = 0; i < 200 && processAlive(pid); i++) await sleep(10);
}

/** The sockets and pid file a VM left, so the next VM in the same directory starts clean. */
export async function cleanVmFiles(f: VmFiles): Promise<void> {
  for (const file of [f.api, f.ctl, f.pidFile]) await rm(file, { force: true });
}
