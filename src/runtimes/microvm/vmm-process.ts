import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { sleep } from '../../lib/exec.js';
import { processAlive, processUid } from '../../lib/proc.js';
import type { VmFiles } from './vmm.js';
import { recordedJail, releaseJail, type VmmJail } from './vmm-jail.js';
import { ifExistsSync, errnoCode } from '../../lib/errors.js';

/** The VMM process of a VM, seen from the host: where its pid is, ending it, what it leaves. */

/**
 * The pid a VMM wrote to its pid file, if it got that far and it still runs as its jail's uid:
 * the VMM writes that file itself, so a broken-into one could name any process.
 */
export function pidFromFile(file: string, jail: VmmJail | undefined): number | undefined {
  const pid = Number(ifExistsSync(() => readFileSync(file, 'utf8'))?.trim()) || undefined;
  if (pid === undefined || !jail) return pid;
  return processUid(pid) === jail.uid ? pid : undefined;
}

/** Ends a VM: its VMM (`pid`, or the one its pid file names), then its jail goes back. */
export async function endVm(files: VmFiles, pid?: number): Promise<void> {
  const jail = recordedJail(files.dir);
  const vmm = pid ?? pidFromFile(files.pidFile, jail);
  if (vmm !== undefined) await killVmm(vmm);
  await releaseJail(files.dir);
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
