/**
 * The VMM's confinement, as Firecracker's jailer gives it: each VMM process runs as a uid of
 * its own (claimed per VM, released with it, like the network slots), in a cgroup of its own
 * (memory: the guest plus the VMM's measured overhead; a small pids limit), chrooted into a
 * root that holds /usr, a few devices and its own files only, with no capabilities,
 * no_new_privs, an empty environment and a file size limit (a guest cannot grow its disk past
 * the job's limit). QEMU's own seccomp sandbox (`-sandbox on`) still applies inside. The same
 * jail confines debugfs reading what a guest left on its workspace disk (workspace-return.ts).
 */

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errnoCode, ifExists, ifExistsSync } from '../../lib/errors.js';
import { createLimitedCgroup, removeCgroupOfKilled } from '../shared/cgroups.js';

/** Claims of VMM uids, host-wide (every Boxcar on the host shares the uid range). */
const CLAIMS = '/run/boxcar/vmm-users';
/** An empty directory each VMM's jail mounts its root onto, in its own mount namespace. */
const STAGE = '/run/boxcar/vmm-stage';
/** uids (and gids) 1,700,000,000 and up: far from login users and from subuid ranges. */
export const VMM_UID_BASE = 1_700_000_000;
const VMM_UIDS = 65_536;

export interface VmmJail {
  uid: number;
  /** The VMM's cgroup (`linux.cgroupsPath` style). */
  cgroup: string;
}

/** A claimed jail, with the files its process joins its cgroup through. */
export interface ClaimedJail extends VmmJail {
  procsFiles: string[];
}

export interface JailLimits {
  memoryBytes: number;
  pids: number;
  /** The largest file the VMM may write (RLIMIT_FSIZE): its disk overlay, its logs. */
  fileBytes?: number;
}

export interface JailFiles {
  /** The VM's directory: group-writable for the VMM, sticky, so root's files in it stay root's. */
  dir: string;
  /** Files made its own: its disk overlay, the job's log (which may be outside `dir`). */
  owned: string[];
  /** Files it only reads (guest kernel, initramfs, the image's disk). */
  readable: string[];
}

const cgroupOf = (uid: number) => `/boxcar/vmm-${uid}`;
const recordFile = (dir: string) => path.join(dir, 'vmm-user');

/**
 * Claims a uid for the VM in `dir`. The record (root's, in the VM's directory) is written before
 * the claim, so a crash in between still leaves something for `releaseJail` to find.
 */
export async function claimJail(dir: string, limits: JailLimits): Promise<ClaimedJail> {
  await mkdir(CLAIMS, { recursive: true, mode: 0o700 });
  await mkdir(STAGE, { recursive: true, mode: 0o700 });
  const start = createHash('sha256').update(dir).digest().readUInt32BE(0) % VMM_UIDS;
  for (let i = 0; i < VMM_UIDS; i++) {
    const uid = VMM_UID_BASE + ((start + i) % VMM_UIDS);
    await writeFile(recordFile(dir), String(uid), { mode: 0o644 });
    try {
      await mkdir(path.join(CLAIMS, String(uid)));
    } catch (err) {
      if (errnoCode(err) === 'EEXIST') continue;
      throw err;
    }
    await writeFile(path.join(CLAIMS, String(uid), 'owner'), dir);
    const cgroup = cgroupOf(uid);
    return { uid, cgroup, procsFiles: await createLimitedCgroup(cgroup, limits) };
  }
  throw new Error(`all ${VMM_UIDS} VMM uids are in use`);
}

/** The jail recorded in a VM's directory, if it has one. */
export function recordedJail(dir: string): VmmJail | undefined {
  const text = ifExistsSync(() => readFileSync(recordFile(dir), 'utf8'));
  const uid = Number(text?.trim());
  return Number.isInteger(uid) && uid >= VMM_UID_BASE ? { uid, cgroup: cgroupOf(uid) } : undefined;
}

/** After the VMM is gone: its cgroup, then its uid back to the pool. Idempotent. */
export async function releaseJail(dir: string): Promise<void> {
  const jail = recordedJail(dir);
  if (!jail) return;
  await removeCgroupOfKilled(jail.cgroup);
  const claim = path.join(CLAIMS, String(jail.uid));
  // Only our own claim: the uid may already be another VM's if this one was released before.
  if ((await ifExists(readFile(path.join(claim, 'owner'), 'utf8'))) === dir)
    await rm(claim, { recursive: true });
  await rm(recordFile(dir), { force: true });
}

/** Moves a claim with its VM's directory (a pooled VM becoming a job's sandbox). */
export async function moveJail(jail: VmmJail, to: string): Promise<void> {
  await writeFile(path.join(CLAIMS, String(jail.uid), 'owner'), to);
}

/** Hands the VM's files to its uid: the directory group-writable and sticky, the rest owned. */
export async function grantFiles(jail: VmmJail, files: JailFiles): Promise<void> {
  await chown(files.dir, 0, jail.uid);
  await chmod(files.dir, 0o1770);
  for (const f of files.owned) await chown(f, jail.uid, jail.uid);
}

/** VM directories claimed by VMMs of a Boxcar whose state is under `root` (tests' leftovers). */
export async function claimsUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const uid of (await ifExists(readdir(CLAIMS))) ?? []) {
    const owner = await ifExists(readFile(path.join(CLAIMS, uid, 'owner'), 'utf8'));
    if (owner?.startsWith(`${root}/`)) out.push(`VMM uid ${uid} of ${owner}`);
  }
  return out;
}

/** The jailer's source, built once per source digest (vmm-jail.c says what it does). */
export const JAILER_SOURCE = fileURLToPath(
  new URL('../../../../src/runtimes/microvm/vmm-jail.c', import.meta.url),
);

/**
 * The command that runs `binary args` jailed by vmm-jail.c, one process throughout (the pid the
 * caller sees is the VMM's): in its cgroup, in the job's network namespace when it has one, in a
 * private mount namespace, chrooted into a tmpfs root holding /usr read-only, a few device
 * nodes, a /proc showing only its own processes, and its own files at their own paths (the guest
 * and the image read-only); with its file size limit, as its uid, with no capabilities,
 * no_new_privs, and PATH alone in its environment.
 */
export function jailedCommand(
  jailer: string,
  jail: ClaimedJail,
  opts: {
    files: JailFiles;
    limits: JailLimits;
    /** The job's network namespace; absent: the host's, unless `noNetwork`. */
    netnsPath?: string;
    /** A network namespace of its own, holding nothing: for a program that needs no network. */
    noNetwork?: boolean;
    kvmGid?: number;
  },
  binary: string,
  args: string[],
): [string, string[]] {
  const { dir, owned, readable } = opts.files;
  const binds = [
    ...[dir, ...owned.filter((f) => !f.startsWith(`${dir}/`))].map((p) => `rw:${p}`),
    ...readable.map((p) => `ro:${p}`),
  ];
  return [
    jailer,
    [
      String(jail.uid),
      opts.kvmGid === undefined ? '-' : String(opts.kvmGid),
      String(opts.limits.fileBytes ?? 0),
      STAGE,
      opts.noNetwork ? 'new' : (opts.netnsPath ?? '-'),
      '--',
      ...jail.procsFiles,
      '--',
      ...binds,
      '--',
      binary,
      ...args,
    ],
  ];
}
