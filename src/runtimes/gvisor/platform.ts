import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { writeFileAtomic, readJsonCache } from '../../lib/fs-util.js';
import { removeCgroup } from '../shared/cgroups.js';
import { run, scrubbedEnv } from '../../lib/exec.js';

export type Platform = 'systrap' | 'kvm' | 'ptrace';

export interface PlatformChoice {
  platform: Platform;
  why: string;
}

const PROBE_TIMEOUT_MS = 5000;

/** Platforms this runsc build offers, read from its own flag help. */
export async function offeredPlatforms(runsc: string): Promise<Platform[]> {
  const { stdout, stderr } = await run(runsc, ['flags'], { timeoutMs: 10_000 });
  const line = `${stdout}\n${stderr}`.split('\n').find((l) => l.includes('which platform to use')) ?? '';
  return (['systrap', 'kvm', 'ptrace'] as const).filter((p) => line.includes(p));
}

/** Runs `runsc do true` on KVM in a throw-away root, killed after a few seconds if it hangs. */
async function kvmWorks(runsc: string): Promise<{ ok: boolean; why: string }> {
  if (!existsSync('/dev/kvm')) return { ok: false, why: 'no /dev/kvm' };
  const root = await mkdtemp(path.join(os.tmpdir(), 'bx-kvm-probe-'));
  const cgroup = `/boxcar-kvm-probe-${process.pid}`;
  try {
    const child = spawn(
      runsc,
      ['--root', root, '--platform=kvm', '--network=none', `--ignore-cgroups`, 'do', '/bin/true'],
      { stdio: 'ignore', detached: true, env: scrubbedEnv() },
    );
    const code = await new Promise<number | null | 'timeout'>((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), PROBE_TIMEOUT_MS);
      child.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
      child.on('error', () => {
        clearTimeout(timer);
        resolve(null);
      });
    });
    if (code === 'timeout') {
      process.kill(-(child.pid as number), 'SIGKILL'); // the whole probe sandbox
      return { ok: false, why: `kvm platform hung for ${PROBE_TIMEOUT_MS / 1000} s (nested KVM)` };
    }
    return code === 0
      ? { ok: true, why: 'kvm platform ran a probe process' }
      : { ok: false, why: `kvm probe exited ${code}` };
  } finally {
    await removeCgroup(cgroup);
    await rm(root, { recursive: true, force: true });
  }
}

/** The probe's answer belongs to the host (its KVM, its runsc), not to one state directory. */
export const PLATFORM_CACHE_DIR = '/var/cache/boxcar';

/**
 * Which gVisor platform to use. Preference: systrap (fast, no KVM needed; newer runsc), then
 * kvm when a bounded probe shows it actually runs a process (nested KVM often hangs instead),
 * then ptrace (works everywhere). The probe runs once per runsc version and is cached.
 */
export async function choosePlatform(
  runsc: string,
  version: string,
  cacheDir = PLATFORM_CACHE_DIR,
): Promise<PlatformChoice> {
  const offered = await offeredPlatforms(runsc);
  if (offered.includes('systrap')) return { platform: 'systrap', why: 'systrap offered by this runsc' };
  const cache = path.join(cacheDir, 'runsc-platform.json');
  const c = await readJsonCache<PlatformChoice & { version: string }>(cache);
  if (c?.version === version) return { platform: c.platform, why: `${c.why} (cached probe)` };
  let choice: PlatformChoice = { platform: 'ptrace', why: 'ptrace: the only platform offered' };
  if (offered.includes('kvm')) {
    const kvm = await kvmWorks(runsc);
    choice = kvm.ok
      ? { platform: 'kvm', why: kvm.why }
      : { platform: 'ptrace', why: `ptrace, because ${kvm.why}` };
  }
  await writeFileAtomic(cache, JSON.stringify({ ...choice, version }));
  return choice;
}
