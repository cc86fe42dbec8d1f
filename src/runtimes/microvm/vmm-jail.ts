/**
 * The VMM's confinement, as Firecracker's jailer gives it: each VMM process runs as a uid of
 * its own (claimed per VM, released with it, like the network slots), in a cgroup of its own
 * (memory: the guest plus the VMM's measured overhead; a small pids limit), chrooted into a
 * root that holds /usr, a few devices and its own files only, with no capabilities,
 * no_new_privs, an empty environment and a file size limit (a guest cannot grow its disk past
 * the job's limit). QEMU's own seccomp sandbox (`-sandbox on`) still applies inside.
 */

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode, ifExists, ifExistsSync } from '../../lib/errors.js';
import { createLimitedCgroup, removeCgroupOfKilled } from '../shared/cgroups.js';

/** Claims of VMM uids, host-wide (every Boxcar on the host shares the uid range). */
const CLAIMS = '/run/boxcar/vmm-users';
/** An empty directory each VMM's launcher mounts its root onto, in its own mount namespace. */
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

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The device nodes a VMM opens; /dev/kvm is added under KVM. */
const DEVICES = ['null', 'zero', 'urandom', 'random', 'net/tun'];

/**
 * The command that runs `binary args` jailed, one process throughout (the pid the caller sees
 * is the VMM's): in the job's network namespace when it has one, it enters a private mount
 * namespace, joins its cgroup, and builds a root of its own on a tmpfs: /usr read-only (the
 * VMM and its libraries), a few device nodes, a /proc that shows only its own processes, and
 * its files at their own paths (the guest and image read-only). It then takes its file size
 * limit, chroots there, and drops to its uid with no capabilities and no_new_privs before it
 * execs the VMM.
 */
export function jailedCommand(
  jail: ClaimedJail,
  opts: {
    files: JailFiles;
    limits: JailLimits;
    netnsPath?: string;
    kvmGid?: number;
  },
  binary: string,
  args: string[],
): [string, string[]] {
  const { dir, owned } = opts.files;
  const root = STAGE;
  const lines = ['set -e'];
  for (const f of jail.procsFiles) lines.push(`echo $$ > ${q(f)}`);
  lines.push(
    `mount -t tmpfs -o size=1m,mode=0755,nosuid,nodev boxcar-vmm ${root}`,
    `cd ${root}`,
    'mkdir usr dev proc',
    'for l in bin sbin lib lib32 lib64; do [ ! -e /$l ] || ln -s usr/$l $l; done',
    'mount --bind /usr usr',
    'mount -o remount,bind,ro,nosuid,nodev usr',
    'mount -t proc -o hidepid=invisible,subset=pid,nosuid,nodev,noexec proc proc',
  );
  const bind = (p: string, ro: boolean) => {
    const at = `${root}${p}`;
    lines.push(
      `mkdir -p ${q(path.dirname(at))}`,
      `if [ -d ${q(p)} ]; then mkdir -p ${q(at)}; else : > ${q(at)}; fi`,
      `mount --bind ${q(p)} ${q(at)}`,
    );
    if (ro) lines.push(`mount -o remount,bind,ro,nosuid,nodev ${q(at)}`);
  };
  for (const d of [...DEVICES, ...(opts.kvmGid === undefined ? [] : ['kvm'])]) bind(`/dev/${d}`, false);
  for (const p of [dir, ...owned.filter((f) => !f.startsWith(`${dir}/`))]) bind(p, false);
  for (const p of opts.files.readable) bind(p, true);
  lines.push('ulimit -c 0'); // a core of the VMM would hold the guest's memory
  // dash counts RLIMIT_FSIZE in 512-byte blocks.
  if (opts.limits.fileBytes) lines.push(`ulimit -f ${Math.ceil(opts.limits.fileBytes / 512)}`);
  // Under KVM the VMM needs /dev/kvm's group, and no other.
  const groups = opts.kvmGid === undefined ? '--clear-groups' : `--groups ${opts.kvmGid}`;
  lines.push(
    // Nothing of the shell's or Boxcar's environment: a PATH inside the new root, and no more.
    `exec env -i PATH=/usr/sbin:/usr/bin chroot ${root} setpriv --reuid ${jail.uid} --regid ${jail.uid} ${groups} --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"`,
  );
  const inner = [
    'unshare',
    '--mount',
    '--propagation',
    'private',
    '--',
    '/bin/sh',
    '-c',
    lines.join('\n'),
    'vmm-jail',
    binary,
    ...args,
  ];
  return opts.netnsPath
    ? ['nsenter', [`--net=${opts.netnsPath}`, ...inner]]
    : [inner[0] as string, inner.slice(1)];
}
