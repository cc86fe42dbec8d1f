import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { readJsonCache } from '../../../lib/fs-util.js';

export type Accel = 'kvm' | 'tcg';

export interface AccelChoice {
  accel: Accel;
  why: string;
}

const CACHE = '/run/boxcar/accel.json';

function bootId(): string {
  return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
}

/**
 * What is known of the accelerator without a probe boot: forced, no /dev/kvm, or this boot's
 * cached verdict; undefined when only a probe could tell (`policy explain` without `--local`).
 */
export async function knownAccel(env = process.env): Promise<AccelChoice | undefined> {
  const forced = env.BOXCAR_VM_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return { accel: forced, why: 'set by BOXCAR_VM_ACCEL' };
  if (!existsSync('/dev/kvm')) return { accel: 'tcg', why: 'no /dev/kvm' };
  const cached = await readJsonCache<{ key: string; choice: AccelChoice }>(CACHE);
  return cached?.key.startsWith(`${bootId()}:`) ? cached.choice : undefined;
}

/**
 * KVM or TCG. `/dev/kvm` existing is not enough (nested KVM here opens it, then the guest hangs
 * in early boot), so a real boot decides: `probe` boots the guest under KVM and reports
 * whether its agent answered in time. The verdict is kept per host boot in /run.
 */
export async function chooseAccel(
  probeKey: string,
  probe: () => Promise<boolean>,
  env = process.env,
): Promise<AccelChoice> {
  const forced = env.BOXCAR_VM_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return { accel: forced, why: 'set by BOXCAR_VM_ACCEL' };
  if (!existsSync('/dev/kvm')) return { accel: 'tcg', why: 'no /dev/kvm' };
  const key = `${bootId()}:${probeKey}`;
  const cached = await readJsonCache<{ key: string; choice: AccelChoice }>(CACHE);
  if (cached?.key === key) return { ...cached.choice, why: `${cached.choice.why} (cached probe)` };
  const works = await probe();
  const choice: AccelChoice = works
    ? { accel: 'kvm', why: 'a guest booted under KVM' }
    : { accel: 'tcg', why: '/dev/kvm is present but a guest did not boot under it (nested KVM?)' };
  await mkdir('/run/boxcar', { recursive: true });
  await writeFile(CACHE, JSON.stringify({ key, choice }));
  return choice;
}
